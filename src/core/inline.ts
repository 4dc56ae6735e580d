// Inline mode: the engine's own thread owns the kernel I/O context (docs/ARCHITECTURE.md,
// "Inline mode"). The engine hands a request over with accept() (a copy of its 8 words into a
// local slot, no shared ring), the executor registers it in the tracked-request table and
// queues it, and one kick() per turn of the event loop submits the batch with a single
// pump(n, 0): one io_uring_enter that submits and flushes completions. The native context
// never waits: completions that arrive later make the thread's libuv loop call onReady()
// (native/inline.h), which kicks again and reaps them. Completions go straight back to the
// engine (settle), which resolves the caller's promise: no other thread is involved.
import { ENTRY_WORDS, E_BUF, E_OP, E_TAG, Op, OpFlag, REPLY_MAX, REPLY_WORDS } from '../protocol.js';
import { WSTAT_WORDS } from '../shm.js';
import type { BackendChoice, BackendName, ControlMessage, NativeAddon, NativeContextInfo } from '../types.js';
import type { ContextReport, Lane, LaneHost } from './lane.js';
import { Executor } from './executor.js';
import { RingfenceError } from '../errors.js';
import { backendOrder } from '../backends.js';

/**
 * TEST HOOK, not an interface: RINGFENCE_TEST_NO_BACKSTOP=1 turns the engine's once-a-second
 * backstop kick into a no-op, so that a lost eventfd wake-up shows as a hang instead of a
 * one-second delay (test/inline.test.mjs, "quiet eventfd"). Read once, at load.
 */
const NO_BACKSTOP = process.env.RINGFENCE_TEST_NO_BACKSTOP === '1';

export interface InlineInit {
  addon: NativeAddon;
  backend: BackendChoice;
  depth: number;
  pool: SharedArrayBuffer;
  pageGen: SharedArrayBuffer;
  workerStats: SharedArrayBuffer;
  emulateWindowUs: number;
  /** Busy-poll the completion queue this long after a kick while requests are in the kernel (0: never). */
  pollUs: number;
  /** A completion for request `id` (its E_TAG word): bytes or -errno. */
  settle: (id: number, res: number) => void;
  /** Called after a batch of completions was settled (room in the slots again). */
  drained: () => void;
}

export class InlineContext extends Executor {
  readonly backend: BackendName;
  readonly refused: Record<string, string>;
  /** The native context's report, fresh (its fixed-buffer chunks change as the pool is used). */
  get info(): NativeContextInfo { return this.ctx.info(); }
  private readonly settle: (id: number, res: number) => void;
  private readonly drained: () => void;
  /** Completions delivered by the executor and not yet settled: (id, res) pairs. */
  private doneQ = new Int32Array(256);
  private doneLen = 0;
  /** A table release rang this context: re-evaluate the parked requests. */
  private tableWake = false;
  private pumping = false;
  private again = false;
  private closed = false;
  private readonly pollUs: number;
  /**
   * The reply records (native/reply.h), null when the native context has none: an io_uring or
   * libaio context takes them; the sync backend's context too (its completions come through
   * the same pump()).
   */
  readonly replies: Int32Array | null;

  constructor(init: InlineInit) {
    super({
      index: 0, depth: init.depth, pool: init.pool, pageGen: init.pageGen,
      wstats: new Float64Array(init.workerStats, 0, WSTAT_WORDS), faults: null,
    });
    this.settle = init.settle;
    this.pollUs = init.pollUs;
    this.drained = init.drained;
    const order = backendOrder(init.backend);
    const refused: Record<string, string> = {};
    let started: BackendName | null = null;
    const replies = new Int32Array(REPLY_MAX * REPLY_WORDS), replyArm = new Int32Array(init.depth);
    for (const backend of order) {
      try {
        if (!init.addon.Context) throw new Error('native addon has no Context');
        this.ctx = new init.addon.Context({
          backend, depth: init.depth, pool: new Uint8Array(init.pool), batch: this.batch, completions: this.compl,
          emulateWindowUs: init.emulateWindowUs, onReady: this.onReady, replies, replyArm, replySlots: this.cap,
        });
        started = backend;
        break;
      } catch (err) {
        refused[backend] = (err as Error).message;
      }
    }
    if (started === null) {
      const msg = Object.entries(refused).map(([b, r]) => `${b}: ${r}`).join('; ');
      throw new Error(`inline context: no I/O backend could start (${msg})`);
    }
    this.backend = started;
    this.refused = refused;
    this.replies = replies;
    this.replyArm = replyArm;
  }

  /** A reply record's handle for socket `fd` (native/reply.h), or -1 when none can be had (closed, table full, EMFILE). */
  replyOpen(fd: number): number {
    if (this.closed) return -1;
    const r = this.ctx.replyOpen(fd);
    return r >= 0 ? r : -1;
  }

  replyClose(handle: number): void { if (!this.closed) this.ctx.replyClose(handle); }

  /**
   * The native side saw completions, a helper finished, or another participant of a table
   * rang this context's eventfd (a release that may let a parked request go): reap, and
   * re-evaluate the parked requests.
   */
  private readonly onReady = (): void => {
    if (this.closed) return;
    if (this.nWaiting > 0) this.tableWake = true;
    this.kick();
  };

  /** The engine's backstop (once a second at most, while requests are outstanding). */
  backstop(): void {
    if (NO_BACKSTOP) return;
    if (this.nWaiting > 0) this.tableWake = true;
    this.kick();
  }

  /**
   * Submits what is ready and settles what completed, until neither makes progress. Never
   * re-entered: a settle() that leads to new requests (a pool waiter, a short write's rest)
   * only queues them, and the loop takes them on its next round.
   */
  kick(): void {
    if (this.closed) return;
    if (this.pumping) { this.again = true; return; }
    this.pumping = true;
    try {
      let progress = this.rounds();
      // Opt-in busy poll (pollUs): with requests in the kernel, reap for a while before going
      // back to the event loop; a completion found so saves the eventfd wake-up.
      if (this.pollUs > 0 && this.nativeInflight > 0) {
        const until = performance.now() + this.pollUs / 1000;
        while (this.nativeInflight > 0 && performance.now() < until) {
          if (this.submitAndReap(0)) { progress = true; this.rounds(); break; }
        }
      }
      void progress;
    } finally {
      this.pumping = false;
    }
  }

  /** Submit and reap until neither makes progress; true if anything happened. */
  private rounds(): boolean {
    let any = false;
    for (let rounds = 0; ; rounds++) {
      this.again = false;
      if (this.tableWake) { this.tableWake = false; this.retryWaiting(); }
      const progress = this.submitAndReap(0);
      any ||= progress;
      // (doneLen: a request fed from the overflow while settling failed at once, e.g. EBADF.)
      if (!this.again && !this.tableWake && this.doneLen === 0 && !(progress && this.readyLen > 0 && this.nativeInflight < this.depth)) break;
      if (rounds > 10000) break; // cannot happen: each round either submits or settles something
    }
    return any;
  }

  protected override deliver(tag: number, res: number): void {
    if (this.doneLen * 2 === this.doneQ.length) {
      const q = new Int32Array(this.doneQ.length * 2);
      q.set(this.doneQ);
      this.doneQ = q;
    }
    this.doneQ[this.doneLen * 2] = tag;
    this.doneQ[this.doneLen * 2 + 1] = res;
    this.doneLen++;
  }

  protected override undelivered(): number { return this.doneLen; }

  /** Settles every queued completion (more may be queued meanwhile: they are taken too). */
  protected override afterReap(): boolean {
    if (this.doneLen === 0) return false;
    for (let i = 0; i < this.doneLen; i++) this.settle(this.doneQ[i * 2], this.doneQ[i * 2 + 1]);
    this.doneLen = 0;
    // Each completion released a table entry: a request waiting for table room (FULL) gets no
    // wake bit for that, so every waiter is re-evaluated after a batch of completions.
    if (this.nWaiting > 0) this.tableWake = true;
    this.drained();
    return true;
  }

  protected override selfWake(): void { this.tableWake = true; }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ctx.close();
  }
}

/**
 * The inline lane: the engine hands each request to this thread's InlineContext directly (a
 * copy of its words into a free local slot) or, when every slot is taken, queues it here in
 * FIFO order until a completion frees one.
 */
export class InlineLane implements Lane {
  queued = 0;
  readonly losses = 0;
  private readonly host: LaneHost;
  private readonly ctx: InlineContext;
  /** Request ids waiting for a free local slot (FIFO). */
  private overflow: number[] = [];
  private overflowHead = 0;
  private seq = 0;

  constructor(host: LaneHost) {
    this.host = host;
    const o = host.options, reqs = host.reqs;
    this.ctx = new InlineContext({
      addon: host.addon, backend: o.backend, depth: o.queueDepth, pool: host.pool.sab, pageGen: host.pool.pageGenSab,
      workerStats: host.workerStats.buffer as SharedArrayBuffer, emulateWindowUs: o.emulateWindowUs, pollUs: o.pollUs,
      settle: (id, res) => { if (reqs.live(id)) reqs.settle(id, res, null); },
      drained: () => this.feed(),
    });
  }

  send(id: number): boolean {
    this.host.reqs.entry[id * ENTRY_WORDS + E_TAG] = id;
    if (this.overflowHead === this.overflow.length && this.ctx.hasRoom()) this.accept(id);
    else { this.overflow.push(id); this.queued++; }
    return true;
  }

  unavailable(): RingfenceError {
    return new RingfenceError('unreachable: the inline context always takes a request', { code: 'ERR_RINGFENCE_INTERNAL' });
  }

  private accept(id: number): void {
    const E = this.host.reqs.entry, e = id * ENTRY_WORDS, op = E[e + E_OP] & 0xff;
    // The caller's own buffer (OpFlag.EXT) goes next to the entry; pool memory is named by
    // offset, with the allocation generation it must still belong to (checked at admission).
    const reply = this.host.reqs.reply[id];
    if (E[e + E_OP] & OpFlag.EXT) { this.ctx.accept(E, e, 0, this.host.reqs.buf[id]!, reply); return; }
    this.ctx.accept(E, e, op >= Op.READ && op <= Op.WRITEV ? this.host.pool.genAt(E[e + E_BUF] >>> 0) : 0, undefined, reply);
  }

  /** Requests that waited for a local slot take the slots completions freed. */
  private feed(): void {
    const q = this.overflow;
    while (this.overflowHead < q.length && this.ctx.hasRoom()) {
      this.queued--;
      this.accept(q[this.overflowHead++]);
    }
    if (this.overflowHead === q.length) { q.length = 0; this.overflowHead = 0; }
    else if (this.overflowHead > 4096) { q.splice(0, this.overflowHead); this.overflowHead = 0; }
  }

  flush(): void { this.ctx.kick(); }

  replyOpen(fd: number): number { return this.ctx.replyOpen(fd); }
  replyClose(handle: number): void { this.ctx.replyClose(handle); }
  replyRecords(): Int32Array | null { return this.ctx.replies; }

  /** This thread's own context is told at once. */
  async broadcast(make: (seq: number) => ControlMessage): Promise<void> {
    if (this.host.destroying) return;
    const m = make(++this.seq);
    if (m.type === 'open') this.ctx.openFile(m); else if (m.type === 'close') this.ctx.closeFile(m.fileId);
  }

  remember(): void { /* no replacement contexts inline: nothing to re-announce */ }

  /** A backstop kick (completions arrive through the event loop; this is one non-blocking enter). */
  watch(): void { if (this.host.outstanding > 0) this.ctx.backstop(); }

  contexts(): ContextReport[] {
    return [{ index: 0, backend: this.ctx.backend, refused: this.ctx.refused, info: this.ctx.info }];
  }

  statRows(): { index: number; ringFullEvents: number }[] { return [{ index: 0, ringFullEvents: 0 }]; }

  /**
   * In-flight kernel I/O is drained by then (close() waited for it). After an abandoned close
   * the kernel may still use the ring: it stays open (and keeps the pool alive) rather than
   * block this thread in a bounded drain.
   */
  async stop(): Promise<void> {
    if (!this.host.fdsPinned) this.ctx.close();
  }
}
