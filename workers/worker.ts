// The worker: owns one kernel I/O context (io_uring, libaio or sync) and serves one
// submission ring. It runs as one long-lived piscina task; see docs/ARCHITECTURE.md.
//
// Loop, per iteration: pull requests from the submission ring into local slots; register
// each in its file's tracked-request table and either admit it (into the native batch) or
// park it; make ONE native call that submits the batch and reaps completions; release the
// completed requests' table entries (waking workers parked behind them) and publish their
// completions; then sleep if there is nothing to do: in the kernel while I/O is in flight,
// in Atomics.waitAsync when idle (so the event loop stays free for control messages).
import { fstatSync } from 'node:fs';
import { threadId, type MessagePort } from 'node:worker_threads';
import {
  COMPL_WORDS, ENTRY_WORDS, E_AUX, E_BUF, E_FILE, E_LEN, E_OFF_HI, E_OFF_LO, E_OP, E_TAG, IOV_MAX, MAX_FILES, Op, OpFlag,
} from '../src/protocol.js';
import {
  CQ_ENTRY, CQ_ID, CQ_RES, CQ_SEQ, CQ_SUM, CTRL_STRIDE, FSTAT_WORDS, FS_EMULATED, FS_FULL, FS_SERIALISING, FS_TRACKED, FS_WAITS,
  FS_WAIT_MAX_NS, FS_WAIT_NS, MAIN_AWAKE, MAIN_SLEEPING, MAIN_STATE, RING_HDR_WORDS, RING_HEAD, RING_TAIL, SQ_ENTRY, SQ_GEN, SQ_SEQ,
  SQ_SUM, STATE_RUNNING, STATE_SLEEP_FUTEX, STATE_SLEEP_KERNEL, WAKE_CONTROL, WAKE_TABLE, WSTAT_WORDS, WS_BATCHES, WS_BYTES,
  WS_ERRORS, WS_INFLIGHT, WS_OPS, WS_WAKEUPS, W_BUSY, W_CTRL_SEQ, W_HEARTBEAT, W_KINFLIGHT, W_STALL, W_STATE, W_WAKE, entrySum,
  poolRangeLive, wakeWorker,
} from '../src/shm.js';
import { ADMITTED, AtomicWords, FULL, ReqType, TrackedTable } from '../src/table.js';
import type { BackendName, NativeAddon, NativeContext, WorkerInit, WorkerReady, ControlMessage } from '../src/types.js';
import { loadAddon } from '../src/addon.js';
import { parseFaults, type FaultPlan } from '../src/faults.js';

const INT64_MAX_ALIGNED_HI = 0x7fffffff;

// Sub-operations of a padded (read-modify-write) unaligned write, in the low 3 bits of a tag.
const SUB_HEAD = 1, SUB_TAIL = 2, SUB_WRITE = 3, SUB_TRUNC = 4;
const PH_ADMIT = 1, PH_READ = 2, PH_WRITE = 3, PH_TRUNC = 4;

// Local slot states.
const S_FREE = 0, S_READY = 1, S_PARKED = 2, S_FULLWAIT = 3, S_INFLIGHT = 4;

interface FileEntry {
  fd: number;
  path: string;
  table: TrackedTable | null;
  /** Serialise post-EOF zero-writes (the XFS workaround) for this file. */
  workaround: boolean;
  /** Run FALLOCATE with the emulated pre-5.5 XFS semantics. */
  emulate: boolean;
  /** O_DIRECT offset alignment, used to round serialising overlap ranges. */
  align: number;
  stats: Float64Array;
}

export default async function serve(init: WorkerInit): Promise<{ index: number; reason: string }> {
  const w = new Worker(init);
  return w.run();
}

class Worker {
  private readonly index: number;
  private readonly addon: NativeAddon;
  private ctx!: NativeContext;
  private readonly sq: Int32Array;
  private readonly sqMask: number;
  private readonly sqCap: number;
  /** Our own copy of the submission head (the shared word is only published to: untrusted). */
  private sqHead = 0;
  private readonly cq: Int32Array;
  private readonly cqMask: number;
  private readonly cqCap: number;
  /** Our own copy of the completion tail, likewise. */
  private cqTail = 0;
  /** The pool's page-generation map (src/shm.ts poolRangeLive), written by the main thread. */
  private readonly pageGen: Int32Array;
  /** The pool as uint32 words, for reading iovec tables. */
  private readonly poolWords: Uint32Array;
  /** An entry copied out of the submission ring, checked before anything uses it. */
  private readonly pulledEntry = new Int32Array(SQ_ENTRY);
  /**
   * Set when the ring memory was found corrupt or stale: what was wrong. The worker then never
   * reads its submission ring again, finishes what it already pulled (see ringCorrupt()), and
   * ends its task with this reason (the main thread fails what it still held with
   * ERR_RINGFENCE_RING_CORRUPT and starts a replacement on fresh rings).
   */
  private corrupt: string | null = null;
  /** The completion ring's head was found corrupt: completions can no longer be posted. */
  private cqBroken = false;
  private readonly ctrl: Int32Array;
  private readonly base: number;
  private readonly doorbells: number[];
  private readonly port: MessagePort;
  private readonly depth: number;
  private readonly spinUs: number;
  private readonly files: (FileEntry | undefined)[] = new Array(MAX_FILES);
  private readonly wstats: Float64Array;
  private readonly faults: FaultPlan | null;

  // Local slots: a copy of each request's entry plus bookkeeping, preallocated.
  private readonly cap: number;
  private readonly slotEntry: Int32Array;
  private readonly slotState: Uint8Array;
  private readonly slotHandle: Int32Array;
  private readonly slotParkedAt: Float64Array;
  /** Read-modify-write state of a padded unaligned write (0 = a plain request). */
  private readonly slotPhase: Uint8Array;
  private readonly slotPending: Uint8Array;
  private readonly slotResult: Int32Array;
  /** Size to restore after a padded write that extended the file (-1: none). */
  private readonly slotTrunc: Float64Array;
  private readonly slotInf: Uint8Array;
  /** SQ_GEN of the request: the pool allocation its memory must still belong to. */
  private readonly slotGen: Int32Array;
  /** Some part of the request was handed to the kernel (a corrupt completion ring lets only these finish). */
  private readonly slotStarted: Uint8Array;
  private readonly poolBytes: Uint8Array;
  private readonly slotFile: (FileEntry | undefined)[];
  private readonly freeSlots: Int32Array;
  private nFree: number;
  /** FIFO of local slots admitted but not yet given to the kernel (native capacity). */
  private readonly readyQ: Int32Array;
  private readyHead = 0;
  private readonly readyCap: number;
  private readyLen = 0;
  /** Slots waiting on the table (parked or full): re-evaluated on a table wake. */
  private readonly waitList: Int32Array;
  private nWaiting = 0;
  /** Completions that did not fit into the completion ring. */
  private readonly doneQ: Int32Array;
  private doneHead = 0;
  private doneLen = 0;
  private nativeInflight = 0;
  private popped = 0;

  private readonly batch: Int32Array;
  private readonly compl: Int32Array;
  private stopping = false;
  /** Control messages handled so far (compared with the main thread's W_CTRL_SEQ). */
  private ctrlHandled = 0;
  private controlQueue: ControlMessage[] = [];

  constructor(init: WorkerInit) {
    this.index = init.index;
    this.addon = loadAddon();
    this.sq = new Int32Array(init.sq);
    this.sqMask = init.sqCapacity - 1;
    this.sqCap = init.sqCapacity;
    // Fresh rings start at 0 (the engine gives every worker generation new ones).
    this.sqHead = Atomics.load(this.sq, RING_HEAD);
    this.cq = new Int32Array(init.cq);
    this.cqTail = Atomics.load(this.cq, RING_TAIL);
    this.pageGen = new Int32Array(init.pageGen);
    this.poolWords = new Uint32Array(init.pool, 0, Math.floor(init.pool.byteLength / 4));
    this.cqMask = init.cqCapacity - 1;
    this.cqCap = init.cqCapacity;
    this.ctrl = new Int32Array(init.ctrl);
    this.base = init.index * CTRL_STRIDE;
    this.doorbells = init.doorbells;
    this.port = init.port;
    this.depth = init.depth;
    this.spinUs = init.spinUs;
    this.wstats = new Float64Array(init.workerStats, init.index * WSTAT_WORDS * 8, WSTAT_WORDS);
    this.faults = parseFaults(init.faults, init.index);
    this.cap = init.depth * 2 + 16;
    this.slotEntry = new Int32Array(this.cap * ENTRY_WORDS);
    this.slotState = new Uint8Array(this.cap);
    this.slotHandle = new Int32Array(this.cap).fill(-1);
    this.readyCap = this.cap * 4;
    this.slotParkedAt = new Float64Array(this.cap);
    this.slotPhase = new Uint8Array(this.cap);
    this.slotPending = new Uint8Array(this.cap);
    this.slotResult = new Int32Array(this.cap);
    this.slotTrunc = new Float64Array(this.cap);
    this.slotInf = new Uint8Array(this.cap);
    this.slotGen = new Int32Array(this.cap);
    this.slotStarted = new Uint8Array(this.cap);
    this.poolBytes = new Uint8Array(init.pool);
    this.slotFile = new Array(this.cap).fill(undefined);
    this.freeSlots = new Int32Array(this.cap);
    for (let i = 0; i < this.cap; i++) this.freeSlots[i] = this.cap - 1 - i;
    this.nFree = this.cap;
    this.readyQ = new Int32Array(this.cap * 4);
    this.waitList = new Int32Array(this.cap);
    this.doneQ = new Int32Array(this.cap * 2);
    this.batch = new Int32Array(init.depth * ENTRY_WORDS);
    this.compl = new Int32Array((init.depth * 2 + 16) * COMPL_WORDS);
    this.ctx = this.startBackend(init);
    this.port.on('message', (m: ControlMessage) => this.onControl(m));
  }

  /** 'auto' tries io_uring, then libaio, then sync, and remembers why each was refused. */
  private startBackend(init: WorkerInit): NativeContext {
    const order: BackendName[] = init.backend === 'auto' ? ['io_uring', 'libaio', 'sync'] : [init.backend];
    const refused: Record<string, string> = {};
    for (const backend of order) {
      try {
        const ctx = this.addon.Context ? new this.addon.Context({
          backend, depth: init.depth, pool: new Uint8Array(init.pool), batch: this.batch, completions: this.compl,
          doorbellFd: init.doorbells[init.index], emulateWindowUs: init.emulateWindowUs,
          // W_STALL, then W_GAVEUP (src/shm.ts): the native context writes both.
          stall: new Int32Array(init.ctrl, (this.base + W_STALL) * 4, 2),
        }) : null;
        if (!ctx) throw new Error('native addon has no Context');
        const ready: WorkerReady = { type: 'ready', index: this.index, backend, refused, info: ctx.info(), threadId };
        this.port.postMessage(ready);
        return ctx;
      } catch (err) {
        refused[backend] = (err as Error).message;
      }
    }
    const msg = Object.entries(refused).map(([b, r]) => `${b}: ${r}`).join('; ');
    throw new Error(`worker ${this.index}: no I/O backend could start (${msg})`);
  }

  private onControl(m: ControlMessage): void {
    this.controlQueue.push(m);
    // The message can arrive after run() consumed WAKE_CONTROL and went back to sleep in
    // Atomics.waitAsync: wake it, or it would sleep until the timeout.
    const st = this.base + W_STATE;
    if (Atomics.compareExchange(this.ctrl, st, STATE_SLEEP_FUTEX, STATE_RUNNING) === STATE_SLEEP_FUTEX) Atomics.notify(this.ctrl, st);
  }

  private handleControl(): void {
    const q = this.controlQueue;
    this.controlQueue = [];
    this.ctrlHandled = (this.ctrlHandled + q.length) | 0;
    for (const m of q) {
      switch (m.type) {
        case 'open': {
          const table = m.table ? new TrackedTable(new AtomicWords(new Int32Array(m.table)), m.tableCapacity) : null;
          this.files[m.fileId] = {
            fd: m.fd, path: m.path, table, workaround: m.workaround, emulate: m.emulate, align: m.align,
            stats: new Float64Array(m.stats, this.index * FSTAT_WORDS * 8, FSTAT_WORDS),
          };
          this.ctx.setFile(m.fileId, m.fd);
          this.port.postMessage({ type: 'ack', seq: m.seq });
          break;
        }
        case 'close':
          this.ctx.clearFile(m.fileId);
          this.files[m.fileId] = undefined;
          this.port.postMessage({ type: 'ack', seq: m.seq });
          break;
        case 'stop':
          this.stopping = true;
          break;
      }
    }
  }

  async run(): Promise<{ index: number; reason: string }> {
    const ctrl = this.ctrl, st = this.base + W_STATE;
    try {
      for (;;) {
        Atomics.add(ctrl, this.base + W_HEARTBEAT, 1);
        const wake = Atomics.exchange(ctrl, this.base + W_WAKE, 0);
        if (wake & WAKE_CONTROL || this.controlQueue.length || Atomics.load(ctrl, this.base + W_CTRL_SEQ) !== this.ctrlHandled) {
          // Let the event loop deliver control messages (open/close/stop). The main thread
          // counts the messages it sent in W_CTRL_SEQ, so a busy worker keeps yielding, one
          // turn per iteration, until every one of them has arrived and been handled.
          await new Promise<void>((r) => setImmediate(r));
          this.handleControl();
        }
        if (wake & WAKE_TABLE) this.retryWaiting();
        // Corrupt ring memory: once what it held has finished and been posted (or, with a
        // corrupt completion ring, once nothing is left in the kernel), end the task.
        if (this.corrupt !== null && this.nativeInflight === 0 && this.readyLen === 0 &&
            (this.cqBroken || (this.popped === 0 && this.doneLen === 0))) break;
        if (this.stopping && this.popped === 0 && this.doneLen === 0 && this.sqEmpty()) break;

        let progress = this.pull();
        progress = this.submitAndReap(0) || progress;
        if (progress) continue;

        // Nothing to do: publish that we sleep, then re-check (the producer stores the tail
        // and then reads our state; we store our state and then read the tail: under
        // sequential consistency at least one of us sees the other).
        if (this.nativeInflight > 0 || this.doneLen > 0) {
          Atomics.store(ctrl, this.base + W_KINFLIGHT, this.nativeInflight);
          Atomics.store(ctrl, st, STATE_SLEEP_KERNEL);
          if (this.sqEmpty() && Atomics.load(ctrl, this.base + W_WAKE) === 0 && this.controlQueue.length === 0) {
            this.wstats[WS_WAKEUPS]++;
            if (!this.submitAndReap(this.doneLen > 0 ? 1 : 100)) this.retryWaiting();
          }
          Atomics.store(ctrl, st, STATE_RUNNING);
        } else {
          // Idle. A request often follows the last completion within microseconds (a caller
          // awaiting one request at a time): poll the ring briefly before paying for a futex
          // sleep and a wake-up through the event loop.
          if (this.spinUs > 0 && this.spin()) continue;
          Atomics.store(ctrl, st, STATE_SLEEP_FUTEX);
          if (this.sqEmpty() && Atomics.load(ctrl, this.base + W_WAKE) === 0 && this.controlQueue.length === 0 && !this.stopping) {
            // (A control message still on its way is delivered by the event loop during this wait.)
            this.wstats[WS_WAKEUPS]++;
            // The event loop runs while we wait: control messages are delivered here.
            const r = Atomics.waitAsync(ctrl, st, STATE_SLEEP_FUTEX, this.nWaiting > 0 ? 100 : 1000);
            // A request parked on the table is re-evaluated on every wake; a sleep that
            // times out re-evaluates them too, as a backstop (the protocol needs no polling).
            if ((r.async ? await r.value : r.value) === 'timed-out') this.retryWaiting();
          }
          Atomics.store(ctrl, st, STATE_RUNNING);
        }
      }
      return { index: this.index, reason: this.corrupt ?? 'stopped' };
    } finally {
      this.ctx.close();
    }
  }

  /** Polls for work for up to spinUs; true when some arrived. */
  private spin(): boolean {
    const until = performance.now() + this.spinUs / 1000;
    const ctrl = this.ctrl, wake = this.base + W_WAKE;
    do {
      if (!this.sqEmpty() || Atomics.load(ctrl, wake) !== 0) return true;
    } while (performance.now() < until);
    return false;
  }

  private sqEmpty(): boolean {
    // A corrupt ring is never read again: it counts as empty.
    return this.corrupt !== null || Atomics.load(this.sq, RING_TAIL) === this.sqHead;
  }

  /**
   * Pulls requests from the submission ring into local slots and routes each one. Ring memory
   * is shared and untrusted: the tail must be at most one ring ahead of our head, and each
   * entry must carry the index it is read at (an entry from an earlier lap is stale) and a
   * matching check value (src/shm.ts). Anything else is corruption: see ringCorrupt().
   */
  private pull(): boolean {
    if (this.corrupt !== null) return false;
    const sq = this.sq, P = this.pulledEntry;
    let head = this.sqHead;
    const tail = Atomics.load(sq, RING_TAIL);
    // Every request pulled must be able to wait in doneQ (capacity: cap) if the completion
    // ring is full, so requests held plus completions not yet delivered stay <= cap.
    if (head === tail || this.nFree === 0 || this.popped + this.doneLen >= this.cap) return false;
    const avail = (tail - head) | 0;
    if (avail < 0 || avail > this.sqCap) {
      this.ringCorrupt(`submission tail ${tail} is ${avail} ahead of head ${head} (capacity ${this.sqCap})`);
      return true;
    }
    while (head !== tail && this.nFree > 0 && this.popped + this.doneLen < this.cap) {
      const src = RING_HDR_WORDS + (head & this.sqMask) * SQ_ENTRY;
      // Check a copy, so that the words used are the words checked.
      for (let i = 0; i <= SQ_SUM; i++) P[i] = sq[src + i];
      if (P[SQ_SEQ] !== head) {
        this.ringCorrupt(`submission entry at index ${head} carries index ${P[SQ_SEQ]} (a stale entry from an earlier lap, or an overwritten one)`);
        break;
      }
      if (P[SQ_SUM] !== entrySum(P, 0, SQ_SUM)) {
        this.ringCorrupt(`submission entry at index ${head} fails its check value (a word of it was overwritten)`);
        break;
      }
      const slot = this.freeSlots[--this.nFree];
      const dst = slot * ENTRY_WORDS;
      for (let i = 0; i < ENTRY_WORDS; i++) this.slotEntry[dst + i] = P[i];
      this.slotGen[slot] = P[SQ_GEN];
      head = (head + 1) | 0;
      this.popped++;
      if (this.faults !== null) this.faults.onRequest();
      this.route(slot);
    }
    this.sqHead = head;
    Atomics.store(sq, RING_HEAD, head);
    Atomics.store(this.ctrl, this.base + W_BUSY, this.popped);
    return true;
  }

  /**
   * The ring memory is corrupt or stale. From now on the submission ring is never read again
   * (sqEmpty() says empty, pull() returns at once). The requests already pulled passed every
   * check, so they finish and post their completions as usual; then run() ends the task with
   * the reason, and the main thread fails whatever the ring still held. If the completion ring
   * is the corrupt one, completions can no longer be posted: requests not yet handed to the
   * kernel do not run (their table entries are released, and the main thread fails them), and
   * only those in the kernel, with the remaining steps of a padded write already started, finish.
   */
  private ringCorrupt(reason: string): void {
    if (this.corrupt === null) this.corrupt = `ring-corrupt: ${reason}`;
    if (this.cqBroken) this.abandonUnstarted();
  }

  private abandonUnstarted(): void {
    for (let i = 0; i < this.nWaiting; i++) this.abandon(this.waitList[i]);
    this.nWaiting = 0;
    let kept = 0;
    for (let i = 0; i < this.readyLen; i++) {
      const v = this.readyQ[(this.readyHead + i) % this.readyCap];
      if (this.slotStarted[v >> 3] === 1) this.readyQ[(this.readyHead + kept++) % this.readyCap] = v;
      else this.abandon(v >> 3);
    }
    this.readyLen = kept;
  }

  /** A request that will not run (corrupt ring): gives up its table entry; no completion. */
  private abandon(slot: number): void {
    const h = this.slotHandle[slot], f = this.slotFile[slot];
    if (h >= 0 && f !== undefined && f.table !== null) this.wake(f.table.release(h));
    this.slotHandle[slot] = -1;
    this.slotState[slot] = S_FREE;
  }

  /** Registers a freshly pulled request with its file's table, then admits or parks it. */
  private route(slot: number): void {
    const e = slot * ENTRY_WORDS;
    const fileId = this.slotEntry[e + E_FILE];
    const f = fileId >= 0 && fileId < MAX_FILES ? this.files[fileId] : undefined;
    if (f === undefined) return this.finish(slot, -9 /* EBADF */);
    this.slotFile[slot] = f;
    const op = this.slotEntry[e + E_OP] & 0xff;
    this.slotPhase[slot] = 0;
    this.slotInf[slot] = 0;
    this.slotStarted[slot] = 0;
    if (this.slotEntry[e + E_OP] & OpFlag.RMW) {
      // The RMW flag never reaches the addon, so its validation is ours: no other flag with it.
      if (op !== Op.WRITE || (this.slotEntry[e + E_OP] & ~0xff) !== OpFlag.RMW || !this.validRmw(slot)) return this.finish(slot, -22 /* EINVAL */);
      this.slotPhase[slot] = PH_ADMIT;
    }
    if (op === Op.FALLOCATE && f.emulate) {
      this.slotEntry[e + E_OP] |= OpFlag.EMULATE_XFS_BUG;
      f.stats[FS_EMULATED]++;
    }
    const tracked = f.table !== null && op !== Op.FSYNC && op !== Op.NOP && op >= 1 && op <= Op.NOP;
    // The entry came through shared memory: its range must make sense before it may occupy
    // the table (the addon validates everything again before the kernel sees it).
    if (tracked && !this.rangeValid(slot, op)) return this.finish(slot, -22 /* EINVAL */);
    // The pool memory it names must still belong to the allocation the entry was made for.
    if (op >= Op.READ && op <= Op.WRITEV && !this.poolLive(slot, op)) return this.finish(slot, -14 /* EFAULT */);
    if (!tracked) return this.admitted(slot, f);
    let h: number;
    try { h = this.register(slot, f); } catch { return this.finish(slot, -22 /* EINVAL */); }
    if (h === FULL) {
      f.stats[FS_FULL]++;
      this.slotState[slot] = S_FULLWAIT;
      this.slotParkedAt[slot] = performance.now();
      this.waitList[this.nWaiting++] = slot;
      return;
    }
    this.slotHandle[slot] = h;
    this.admitOrPark(slot, f, h);
  }

  /**
   * Every byte of pool memory the kernel may touch for this request lies in one live
   * allocation: the one whose generation the entry carries (SQ_GEN; for the buffers an iovec
   * table names, the same allocation at both ends of each). A stale or scribbled entry so
   * cannot make the kernel read or write memory that is free or was reallocated. Entries the
   * addon refuses without touching memory (length < 1, bad iovec count) pass here and get
   * their errno there. The addon still checks every range against the pool's bounds.
   */
  private poolLive(slot: number, op: number): boolean {
    const e = slot * ENTRY_WORDS, E = this.slotEntry, G = this.pageGen, gen = this.slotGen[slot];
    const buf = E[e + E_BUF] >>> 0, len = E[e + E_LEN];
    if (op === Op.READ || op === Op.WRITE) {
      if (this.slotPhase[slot] !== 0) {
        // A padded write (validRmw() checked its layout): [padded range][scratch: 2 * alignment].
        const align = E[e + E_AUX];
        const off = E[e + E_OFF_HI] * 4294967296 + (E[e + E_OFF_LO] >>> 0);
        const a0 = off - (off % align), a1 = Math.ceil((off + len) / align) * align;
        return poolRangeLive(G, gen, buf, a1 - a0 + 2 * align);
      }
      return len < 1 || poolRangeLive(G, gen, buf, len);
    }
    // READV / WRITEV: the iovec table is the entry's allocation; each buffer it names must lie
    // in one live allocation (the first and the last page carry the same, non-zero generation).
    const count = E[e + E_AUX];
    if (len < 1 || count < 1 || count > IOV_MAX) return true;
    if (buf % 8 !== 0 || !poolRangeLive(G, gen, buf, 8 * count)) return false;
    const W = this.poolWords, at = buf >>> 2;
    for (let i = 0; i < count; i++) {
      const o = W[at + 2 * i], l = W[at + 2 * i + 1];
      if (l === 0) continue; // the addon refuses the whole entry (EINVAL)
      const first = Math.floor(o / 4096), last = Math.floor((o + l - 1) / 4096);
      if (last >= G.length || G[first] === 0 || G[first] !== G[last]) return false;
    }
    return true;
  }

  /** Non-negative offset, positive length, end <= 2^63-1 (for the ops the table tracks). */
  private rangeValid(slot: number, op: number): boolean {
    const e = slot * ENTRY_WORDS, E = this.slotEntry;
    const hi = E[e + E_OFF_HI], lo = E[e + E_OFF_LO] >>> 0;
    if (hi < 0) return false;
    if (op === Op.TRUNCATE) return true;
    if (op === Op.FALLOCATE) {
      const lenHi = E[e + E_BUF], lenLo = E[e + E_LEN] >>> 0;
      if (lenHi < 0 || (lenHi === 0 && lenLo === 0)) return false;
      return hi * 4294967296 + lo + lenHi * 4294967296 + lenLo <= 9223372036854775807;
    }
    const len = E[e + E_LEN];
    return len > 0 && !(hi === 0x7fffffff && lo + len > 0x100000000);
  }

  private register(slot: number, f: FileEntry): number {
    const e = slot * ENTRY_WORDS, E = this.slotEntry, table = f.table!;
    const op = E[e + E_OP] & 0xff;
    let offLo = E[e + E_OFF_LO], offHi = E[e + E_OFF_HI];
    let type: ReqType, serialising = false, eof = 0n;
    let endLo: number, endHi: number;
    if (op === Op.TRUNCATE || op === Op.FALLOCATE) {
      // Exact 64-bit arithmetic (offsets may exceed 2^53 on sparse files); these ops are rare.
      const off = join64(offHi, offLo);
      const end = op === Op.TRUNCATE ? off : off + join64(E[e + E_BUF], E[e + E_LEN]);
      const align = BigInt(f.align);
      if (op === Op.TRUNCATE) {
        // A truncate changes EOF for everything beyond the smaller of the old and new sizes:
        // serialise it from there to "infinity", like QEMU's growing truncate.
        type = ReqType.TRUNCATE;
        serialising = true;
        const size = this.sizeOf(f);
        const from = off < size ? off : size;
        [offHi, offLo] = split64(from - (from % align));
        endHi = INT64_MAX_ALIGNED_HI; endLo = -f.align | 0;
      } else if (f.workaround && (end > (eof = this.sizeOf(f)) || this.slotInf[slot] === 1)) {
        // The XFS workaround (QEMU 292d06b925b2): a zero-write that may end beyond EOF is
        // extended to "infinity" and serialised, so no write past it can be in flight while
        // the kernel computes and sets the new size. Unlike QEMU, the range starts at EOF when
        // EOF is below the zero-write: raising the size zeroes [old EOF, new size) (XFS's
        // truncate-up path reads the old size before it waits for direct I/O), so a write
        // in flight in that gap is as exposed as one past the zero-write's end.
        // (slotInf: admitted() found that it now ends past EOF, and re-registers it.)
        type = ReqType.ZERO;
        serialising = true;
        this.slotInf[slot] = 1;
        const from = off < eof ? off : eof;
        [offHi, offLo] = split64(from - (from % align));
        endHi = INT64_MAX_ALIGNED_HI; endLo = -f.align | 0;
      } else {
        type = ReqType.ZERO;
        [endHi, endLo] = split64(end);
      }
    } else if (this.slotPhase[slot] !== 0) {
      // Padded read-modify-write (QEMU's padding RMW): serialising over the aligned range,
      // so two unaligned writes into one block never interleave their read and write. If
      // the padded write may reach past EOF, the range extends to "infinity": the worker
      // trims the size back afterwards, and nothing past it may be in flight meanwhile.
      type = ReqType.WRITE;
      serialising = true;
      const align = E[e + E_AUX];
      const off = offHi * 4294967296 + (offLo >>> 0), end = off + (E[e + E_LEN] >>> 0);
      const a0 = off - (off % align), a1 = Math.ceil(end / align) * align;
      [offHi, offLo] = split(a0);
      if (this.slotInf[slot] === 1 || a1 > Number(this.sizeOf(f))) { this.slotInf[slot] = 1; endHi = INT64_MAX_ALIGNED_HI; endLo = -f.align | 0; }
      else [endHi, endLo] = split(a1);
    } else {
      type = op === Op.READ || op === Op.READV ? ReqType.READ : ReqType.WRITE;
      const lo = (offLo >>> 0) + (E[e + E_LEN] >>> 0);
      endLo = lo | 0;
      endHi = offHi + (lo > 0xffffffff ? 1 : 0);
    }
    const h = table.register(this.index, type, serialising, offHi, offLo, endHi, endLo);
    if (h !== FULL) {
      // Scanners that saw this entry before its ticket was published parked on it.
      this.wake(table.takeWakeups());
      f.stats[FS_TRACKED]++;
      if (serialising) f.stats[FS_SERIALISING]++;
    }
    return h;
  }

  /** The file's size now (0 if fstat fails: the request then fails in the kernel anyway). */
  private sizeOf(f: FileEntry): bigint {
    try { return fstatSync(f.fd, { bigint: true }).size; } catch { return 0n; }
  }

  private admitOrPark(slot: number, f: FileEntry, h: number): void {
    if (f.table!.tryAdmit(this.index, h) === ADMITTED) {
      if (this.slotState[slot] === S_PARKED || this.slotState[slot] === S_FULLWAIT) this.countWait(slot, f);
      this.admitted(slot, f);
      return;
    }
    if (this.slotState[slot] !== S_PARKED && this.slotState[slot] !== S_FULLWAIT) this.slotParkedAt[slot] = performance.now();
    this.slotState[slot] = S_PARKED;
    this.waitList[this.nWaiting++] = slot;
  }

  private countWait(slot: number, f: FileEntry): void {
    const ns = (performance.now() - this.slotParkedAt[slot]) * 1e6;
    f.stats[FS_WAITS]++;
    f.stats[FS_WAIT_NS] += ns;
    if (ns > f.stats[FS_WAIT_MAX_NS]) f.stats[FS_WAIT_MAX_NS] = ns;
  }

  /** Re-evaluates every waiting request after a table wake (spurious wakes are harmless). */
  private retryWaiting(): void {
    const n = this.nWaiting;
    if (n === 0) return;
    const list = this.waitList.slice(0, n);
    this.nWaiting = 0;
    for (let i = 0; i < n; i++) {
      const slot = list[i];
      const f = this.slotFile[slot]!;
      if (this.slotState[slot] === S_FULLWAIT) {
        const h = this.register(slot, f);
        if (h === FULL) { this.waitList[this.nWaiting++] = slot; continue; }
        this.slotHandle[slot] = h;
      }
      this.admitOrPark(slot, f, this.slotHandle[slot]);
    }
  }

  /** Queues sub-operation `sub` of a slot for the kernel (0: the request itself). */
  private makeReady(slot: number, sub = 0): void {
    this.slotState[slot] = S_READY;
    this.readyQ[(this.readyHead + this.readyLen) % this.readyCap] = (slot << 3) | sub;
    this.readyLen++;
  }

  /** The table admitted the request: hand it to the kernel, or start its padding RMW. */
  private admitted(slot: number, f: FileEntry): void {
    if (this.slotPhase[slot] === 0) {
      if (f.workaround && this.slotInf[slot] === 0 && this.slotHandle[slot] >= 0 &&
          (this.slotEntry[slot * ENTRY_WORDS + E_OP] & 0xff) === Op.FALLOCATE && this.zeroEndsPastEof(slot, f)) {
        // A zero-write that ended before EOF when it registered (so it is not serialising), and
        // EOF has since moved below its end: it parked behind a shrinking truncate, or a padded
        // write that trimmed the size back. Run as it is, it would set the size while writes past
        // it may be in flight (the XFS race). Re-register it serialising, as at registration: it
        // then waits for the older writes past EOF, and newer ones wait for it.
        return this.reregister(slot, f);
      }
      return this.makeReady(slot);
    }
    const e = slot * ENTRY_WORDS, E = this.slotEntry;
    const align = E[e + E_AUX];
    const off = E[e + E_OFF_HI] * 4294967296 + (E[e + E_OFF_LO] >>> 0), end = off + (E[e + E_LEN] >>> 0);
    const a1 = Math.ceil(end / align) * align;
    const size = Number(this.sizeOf(f));
    if (a1 > size && this.slotInf[slot] === 0 && this.slotHandle[slot] >= 0) {
      // EOF moved below the padded end since registration (an older truncate completed):
      // re-register with the range extended to infinity before trimming the size later.
      return this.reregister(slot, f);
    }
    this.slotTrunc[slot] = a1 > size && a1 > end ? Math.max(size, end) : -1;
    this.slotResult[slot] = 0;
    let pending = 0;
    if (off % align !== 0) { this.makeReady(slot, SUB_HEAD); pending++; }
    if (end % align !== 0 && (a1 - align !== off - (off % align) || off % align === 0)) { this.makeReady(slot, SUB_TAIL); pending++; }
    this.slotPhase[slot] = PH_READ;
    this.slotPending[slot] = pending;
    if (pending === 0) this.rmwWrite(slot);
  }

  /** Releases the request's table entry and registers it again serialising to "infinity" (slotInf). */
  private reregister(slot: number, f: FileEntry): void {
    this.wake(f.table!.release(this.slotHandle[slot]));
    this.slotHandle[slot] = -1;
    this.slotInf[slot] = 1;
    const h = this.register(slot, f);
    if (h === FULL) { this.slotState[slot] = S_FULLWAIT; this.waitList[this.nWaiting++] = slot; return; }
    this.slotHandle[slot] = h;
    this.admitOrPark(slot, f, h);
  }

  /** Does this FALLOCATE end past EOF now? (Exact 64-bit arithmetic, like register().) */
  private zeroEndsPastEof(slot: number, f: FileEntry): boolean {
    const e = slot * ENTRY_WORDS, E = this.slotEntry;
    return join64(E[e + E_OFF_HI], E[e + E_OFF_LO]) + join64(E[e + E_BUF], E[e + E_LEN]) > this.sizeOf(f);
  }

  private validRmw(slot: number): boolean {
    const e = slot * ENTRY_WORDS, E = this.slotEntry;
    const align = E[e + E_AUX], len = E[e + E_LEN];
    if (align < 512 || align > 65536 || (align & (align - 1)) !== 0 || len <= 0) return false;
    const off = (E[e + E_OFF_HI] >= 0 ? E[e + E_OFF_HI] : -1) * 4294967296 + (E[e + E_OFF_LO] >>> 0);
    // The padding arithmetic is in doubles: exact below 2^53, which the API enforces too.
    if (off < 0 || off + len + 2 * align > Number.MAX_SAFE_INTEGER) return false;
    const a0 = off - (off % align), a1 = Math.ceil((off + len) / align) * align;
    const buf = E[e + E_BUF] >>> 0;
    return buf % 512 === 0 && buf + (a1 - a0) + 2 * align <= this.poolBytes.byteLength;
  }

  /** Both pad blocks are in scratch: merge them around the caller's data and write the aligned range. */
  private rmwWrite(slot: number): void {
    const e = slot * ENTRY_WORDS, E = this.slotEntry;
    const align = E[e + E_AUX], buf = E[e + E_BUF] >>> 0;
    const off = E[e + E_OFF_HI] * 4294967296 + (E[e + E_OFF_LO] >>> 0), end = off + (E[e + E_LEN] >>> 0);
    const a0 = off - (off % align), a1 = Math.ceil(end / align) * align;
    const scratch = buf + (a1 - a0), P = this.poolBytes;
    if (off % align !== 0) P.copyWithin(buf, scratch, scratch + (off - a0));
    if (end % align !== 0) {
      const tailScratch = a1 - align === a0 && off % align !== 0 ? scratch : scratch + align;
      const from = end - (a1 - align);
      P.copyWithin(buf + (end - a0), tailScratch + from, tailScratch + align);
    }
    this.slotPhase[slot] = PH_WRITE;
    this.slotPending[slot] = 1;
    this.makeReady(slot, SUB_WRITE);
  }

  /** Writes the batch entry for sub-operation `sub` of `slot` at batch index `n`. */
  private fillBatch(n: number, slot: number, sub: number): void {
    const src = slot * ENTRY_WORDS, dst = n * ENTRY_WORDS, B = this.batch, E = this.slotEntry;
    if (sub === 0) {
      for (let i = 0; i < ENTRY_WORDS; i++) B[dst + i] = E[src + i];
      B[dst + E_TAG] = slot << 3;
      return;
    }
    const align = E[src + E_AUX], buf = E[src + E_BUF] >>> 0;
    const off = E[src + E_OFF_HI] * 4294967296 + (E[src + E_OFF_LO] >>> 0), end = off + (E[src + E_LEN] >>> 0);
    const a0 = off - (off % align), a1 = Math.ceil(end / align) * align;
    let op = Op.READ, at = 0, len = align, where = buf + (a1 - a0), aux = 0;
    if (sub === SUB_HEAD) at = a0;
    else if (sub === SUB_TAIL) { at = a1 - align; where += align; }
    else if (sub === SUB_WRITE) { op = Op.WRITE; at = a0; len = a1 - a0; where = buf; }
    else { op = Op.TRUNCATE; at = this.slotTrunc[slot]; len = 0; where = 0; }
    const [hi, lo] = split(at);
    B[dst + E_OP] = op; B[dst + E_FILE] = E[src + E_FILE]; B[dst + E_OFF_LO] = lo; B[dst + E_OFF_HI] = hi;
    B[dst + E_LEN] = len; B[dst + E_BUF] = where; B[dst + E_TAG] = (slot << 3) | sub; B[dst + E_AUX] = aux;
  }

  /** A sub-operation of a padded write completed. */
  private rmwStep(slot: number, sub: number, res: number): void {
    const E = this.slotEntry, e = slot * ENTRY_WORDS;
    if (res < 0 && this.slotResult[slot] === 0) this.slotResult[slot] = res;
    if (--this.slotPending[slot] > 0) return;
    if (this.slotResult[slot] < 0) return this.complete(slot, this.slotResult[slot]);
    if (sub === SUB_HEAD || sub === SUB_TAIL) return this.rmwWrite(slot);
    if (sub === SUB_WRITE) {
      const len = E[e + E_LEN];
      if (res !== Math.ceil(((E[e + E_OFF_HI] * 4294967296 + (E[e + E_OFF_LO] >>> 0)) % E[e + E_AUX] + len) / E[e + E_AUX]) * E[e + E_AUX]) {
        return this.complete(slot, res >= 0 ? -5 /* EIO: short padded write */ : res);
      }
      if (this.slotTrunc[slot] >= 0) { this.slotPhase[slot] = PH_TRUNC; this.slotPending[slot] = 1; this.makeReady(slot, SUB_TRUNC); return; }
      return this.complete(slot, len);
    }
    this.complete(slot, E[e + E_LEN]);
  }

  /** One native call: submit what fits, reap what completed. Returns whether anything happened. */
  private submitAndReap(waitMs: number): boolean {
    let n = 0;
    const room = this.depth - this.nativeInflight;
    const B = this.batch, E = this.slotEntry;
    while (n < room && this.readyLen > 0) {
      const v = this.readyQ[this.readyHead];
      this.readyHead = (this.readyHead + 1) % this.readyCap;
      this.readyLen--;
      const slot = v >> 3;
      this.fillBatch(n, slot, v & 7);
      this.slotState[slot] = S_INFLIGHT;
      this.slotStarted[slot] = 1;
      n++;
    }
    void B; void E;
    if (n === 0 && waitMs === 0 && this.nativeInflight === 0 && this.doneLen === 0) return false;
    this.nativeInflight += n;
    const got = this.nativeInflight > 0 || n > 0 || waitMs > 0 ? this.ctx.pump(n, waitMs) : 0;
    if (n > 0) this.wstats[WS_BATCHES]++;
    const C = this.compl;
    for (let i = 0; i < got; i++) {
      const tag = C[i * COMPL_WORDS];
      const res = C[i * COMPL_WORDS + 1];
      const slot = tag >> 3, sub = tag & 7;
      if (slot < 0 || slot >= this.cap || this.slotState[slot] !== S_INFLIGHT) continue; // not ours: ignore
      this.nativeInflight--;
      if (sub !== 0) {
        if (sub === SUB_HEAD || sub === SUB_TAIL) this.zeroTail(slot, sub, res);
        this.rmwStep(slot, sub, res);
      } else this.complete(slot, res);
    }
    this.wstats[WS_INFLIGHT] = this.nativeInflight;
    const flushed = this.flushDone();
    return n > 0 || got > 0 || flushed;
  }

  /** A pad-block read that came back short (past EOF): the rest of the block reads as zeroes. */
  private zeroTail(slot: number, sub: number, res: number): void {
    const E = this.slotEntry, e = slot * ENTRY_WORDS;
    const align = E[e + E_AUX];
    if (res >= align || res < 0) return;
    const buf = E[e + E_BUF] >>> 0;
    const off = E[e + E_OFF_HI] * 4294967296 + (E[e + E_OFF_LO] >>> 0), end = off + (E[e + E_LEN] >>> 0);
    const scratch = buf + (Math.ceil(end / align) * align - (off - (off % align))) + (sub === SUB_TAIL ? align : 0);
    this.poolBytes.fill(0, scratch + res, scratch + align);
  }

  /** A request finished in the kernel: release its table entry and post its completion. */
  private complete(slot: number, res: number): void {
    const h = this.slotHandle[slot];
    if (h >= 0) {
      // The file entry the request was registered through (kept per slot: the handle must be
      // released in that table even if the file table changed meanwhile).
      const f = this.slotFile[slot];
      if (f !== undefined && f.table !== null) this.wake(f.table.release(h));
      this.slotHandle[slot] = -1;
    }
    this.wstats[WS_OPS]++;
    if (res > 0) this.wstats[WS_BYTES] += res;
    else if (res < 0) this.wstats[WS_ERRORS]++;
    this.finish(slot, res);
  }

  /** Queues a completion for the main thread and frees the local slot. */
  private finish(slot: number, res: number): void {
    const tag = this.slotEntry[slot * ENTRY_WORDS + E_TAG];
    const q = (this.doneHead + this.doneLen) % this.cap;
    this.doneQ[q * 2] = tag;
    this.doneQ[q * 2 + 1] = res;
    this.doneLen++;
    this.slotState[slot] = S_FREE;
    this.slotHandle[slot] = -1;
    this.slotFile[slot] = undefined;
    this.freeSlots[this.nFree++] = slot;
    this.popped--;
  }

  /** Moves queued completions into the completion ring; wakes main once per batch if it sleeps. */
  private flushDone(): boolean {
    if (this.doneLen === 0 || this.cqBroken) return false;
    const cq = this.cq;
    // The tail is ours; the head is the main thread's word in shared memory: untrusted.
    let tail = this.cqTail;
    const head = Atomics.load(cq, RING_HEAD), used = (tail - head) | 0;
    if (used < 0 || used > this.cqCap) {
      this.cqBroken = true;
      this.ringCorrupt(`completion head ${head} is ${used} behind tail ${tail} (capacity ${this.cqCap})`);
      return false;
    }
    let room = this.cqCap - used;
    if (room === 0) return false;
    let moved = 0;
    while (this.doneLen > 0 && room > 0) {
      const q = this.doneHead;
      const dst = RING_HDR_WORDS + (tail & this.cqMask) * CQ_ENTRY;
      cq[dst + CQ_ID] = this.doneQ[q * 2];
      cq[dst + CQ_RES] = this.doneQ[q * 2 + 1];
      cq[dst + CQ_SEQ] = tail;
      cq[dst + CQ_SUM] = entrySum(cq, dst, CQ_SUM);
      this.doneHead = (this.doneHead + 1) % this.cap;
      this.doneLen--;
      tail = (tail + 1) | 0;
      room--;
      moved++;
    }
    this.cqTail = tail;
    Atomics.store(cq, RING_TAIL, tail);
    Atomics.store(this.ctrl, this.base + W_BUSY, this.popped);
    if (Atomics.load(this.ctrl, MAIN_STATE) === MAIN_SLEEPING &&
        Atomics.compareExchange(this.ctrl, MAIN_STATE, MAIN_SLEEPING, MAIN_AWAKE) === MAIN_SLEEPING) {
      Atomics.notify(this.ctrl, MAIN_STATE, 1);
    }
    return moved > 0;
  }

  /** Rings the workers in `mask` (from a table release) so they re-evaluate parked requests. */
  private wake(mask: number): void {
    if (mask === 0) return;
    for (let b = 0; mask !== 0; b++, mask >>>= 1) {
      if ((mask & 1) === 0) continue;
      if (b === this.index) { Atomics.or(this.ctrl, this.base + W_WAKE, WAKE_TABLE); continue; }
      wakeWorker(this.ctrl, b, WAKE_TABLE, this.addon.ring, this.doorbells[b]);
    }
  }
}

function join64(hi: number, lo: number): bigint {
  return (BigInt(hi) << 32n) | BigInt(lo >>> 0);
}

function split64(v: bigint): [number, number] {
  return [Number(v >> 32n) | 0, Number(v & 0xffffffffn) | 0];
}

function split(v: number): [number, number] {
  const hi = Math.floor(v / 4294967296);
  return [hi, (v - hi * 4294967296) | 0];
}


