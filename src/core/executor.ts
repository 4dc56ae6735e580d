// The executor: what an I/O context does with requests once they reach its thread, in either
// mode (docs/ARCHITECTURE.md). It holds each request in a local slot, registers it in its
// file's tracked-request table and admits it or parks it, runs padded (read-modify-write)
// unaligned writes step by step, re-checks the XFS workaround's EOF decision at admission,
// and hands admitted requests to the native context in batches: one pump() per batch.
//
// Two drivers use it:
//   - workers/worker.ts: an offload worker that pulls requests from a shared submission
//     ring and posts completions to a shared completion ring (worker mode);
//   - src/core/inline.ts: the engine's own thread, which hands requests over by a direct call
//     and gets completions back the same way (inline mode).
// A driver supplies deliver() (where a completion goes) and selfWake() (what to do when a table
// release may let one of its own parked requests go).
//
// Tables are process-wide (native/registry.h): every context that opens a file identity joins
// its one table with a participant bit of its own, whatever engine or thread it belongs to. A
// release that finds waiters rings the other participants' eventfds through the registry.
import { fstatSync } from 'node:fs';
import {
  COMPL_WORDS, ENTRY_WORDS, E_AUX, E_BUF, E_FILE, E_LEN, E_OFF_HI, E_OFF_LO, E_OP, E_TAG, IOV_MAX, MAX_FILES, Op, OpFlag,
} from '../protocol.js';
import {
  FSTAT_WORDS, FS_EMULATED, FS_FULL, FS_SERIALISING, FS_TRACKED, FS_WAITS, FS_WAIT_MAX_NS, FS_WAIT_NS, WS_BATCHES, WS_BYTES,
  WS_ERRORS, WS_INFLIGHT, WS_OPS, poolRangeLive,
} from '../shm.js';
import { ADMITTED, AtomicWords, FULL, ReqType, TrackedTable } from '../table.js';
import type { NativeContext, ControlOpen, TableJoined } from '../types.js';
import type { FaultPlan } from '../faults.js';
import { join64, split, split64 } from './int64.js';
import { PH_ADMIT, Rmw } from './rmw.js';

const INT64_MAX_ALIGNED_HI = 0x7fffffff;


// Local slot states.
export const S_FREE = 0, S_READY = 1, S_PARKED = 2, S_FULLWAIT = 3, S_INFLIGHT = 4;

export interface FileEntry {
  fd: number;
  path: string;
  /** The identity's process-wide table, joined by this context (null: not tracked). */
  table: TrackedTable | null;
  /** The table's id in the registry, and this context's participant bit in it. */
  tableId: number;
  part: number;
  /** Serialise post-EOF zero-writes (the XFS workaround) for this file. */
  workaround: boolean;
  /** Run FALLOCATE with the emulated pre-5.5 XFS semantics. */
  emulate: boolean;
  /** O_DIRECT offset alignment, used to round serialising overlap ranges. */
  align: number;
  stats: Float64Array;
}

/** A table this context joined: its files of that identity, and how many want the workaround. */
interface Join { joined: TableJoined; table: TrackedTable; files: number; wanting: number }

export interface ExecutorInit {
  /** This context's index in its engine (a worker index; 0 for the inline context): its statistics row. */
  index: number;
  depth: number;
  pool: SharedArrayBuffer;
  pageGen: SharedArrayBuffer;
  /** This context's row of the statistics block. */
  wstats: Float64Array;
  faults: FaultPlan | null;
}

export abstract class Executor {
  protected readonly index: number;
  protected ctx!: NativeContext;
  protected readonly depth: number;
  /** The pool's page-generation map (src/shm.ts poolRangeLive), written by the allocator. */
  protected readonly pageGen: Int32Array;
  /** The pool as uint32 words, for reading iovec tables. */
  protected readonly poolWords: Uint32Array;
  protected readonly poolBytes: Uint8Array;
  protected readonly files: (FileEntry | undefined)[] = new Array(MAX_FILES);
  /** Tables this context joined, by identity ("dev:ino"), with the files open on each. */
  protected readonly joins = new Map<string, Join>();
  /** The same joins as an array (tableRung() walks it without allocating). */
  protected joinList: Join[] = [];
  protected readonly wstats: Float64Array;
  protected readonly faults: FaultPlan | null;

  // Local slots: a copy of each request's entry plus bookkeeping, preallocated.
  protected readonly cap: number;
  protected readonly slotEntry: Int32Array;
  protected readonly slotState: Uint8Array;
  protected readonly slotHandle: Int32Array;
  protected readonly slotParkedAt: Float64Array;
  /** Padded unaligned writes: their read-modify-write state per slot (src/core/rmw.ts). */
  protected readonly rmw: Rmw;
  /** Read-modify-write phase of a slot (0 = a plain request): rmw.phase. */
  protected readonly slotPhase: Uint8Array;
  protected readonly slotInf: Uint8Array;
  /** The slot holds an open() barrier (OpFlag.BARRIER). */
  protected readonly slotBarrier: Uint8Array;
  /** SQ_GEN of the request: the pool allocation its memory must still belong to. */
  protected readonly slotGen: Int32Array;
  /** Some part of the request was handed to the kernel (a corrupt completion ring lets only these finish). */
  protected readonly slotStarted: Uint8Array;
  protected readonly slotFile: (FileEntry | undefined)[];
  /** The caller's buffer of an OpFlag.EXT request (inline mode). */
  protected readonly slotExt: (Uint8Array | undefined)[];
  /** pump()'s third argument: batchExt[i] for batch entry i. */
  protected readonly batchExt: (Uint8Array | undefined)[];
  protected readonly freeSlots: Int32Array;
  protected nFree: number;
  /** Requests accepted and not yet delivered. */
  protected held = 0;
  /** FIFO of local slots admitted but not yet given to the kernel (native capacity). */
  protected readonly readyQ: Int32Array;
  protected readyHead = 0;
  protected readonly readyCap: number;
  protected readyLen = 0;
  /** Slots waiting on the table (parked or full): re-evaluated on a table wake. */
  protected readonly waitList: Int32Array;
  protected nWaiting = 0;
  protected nativeInflight = 0;
  /** The batch being filled has OpFlag.EXT entries (batchExt). */
  protected batchHasExt = false;
  /**
   * Replies sent at completion time (inline mode, native/reply.h): the request's reply handle
   * + 1 by slot (0: none), and pump()'s arm word per batch entry (null: the context has none).
   */
  protected readonly slotReply: Int32Array;
  protected replyArm: Int32Array | null = null;
  protected batchHasReply = false;

  protected readonly batch: Int32Array;
  protected readonly compl: Int32Array;

  constructor(init: ExecutorInit) {
    this.index = init.index;
    this.depth = init.depth;
    this.pageGen = new Int32Array(init.pageGen);
    this.poolWords = new Uint32Array(init.pool, 0, Math.floor(init.pool.byteLength / 4));
    this.poolBytes = new Uint8Array(init.pool);
    this.wstats = init.wstats;
    this.faults = init.faults;
    this.cap = init.depth * 2 + 16;
    this.slotEntry = new Int32Array(this.cap * ENTRY_WORDS);
    this.slotState = new Uint8Array(this.cap);
    this.slotHandle = new Int32Array(this.cap).fill(-1);
    this.readyCap = this.cap * 4;
    this.slotParkedAt = new Float64Array(this.cap);
    this.rmw = new Rmw(this.cap, {
      slotEntry: this.slotEntry, poolBytes: this.poolBytes,
      ready: (slot, sub) => this.makeReady(slot, sub), complete: (slot, res) => this.complete(slot, res),
    });
    this.slotPhase = this.rmw.phase;
    this.slotInf = new Uint8Array(this.cap);
    this.slotBarrier = new Uint8Array(this.cap);
    this.slotGen = new Int32Array(this.cap);
    this.slotStarted = new Uint8Array(this.cap);
    this.slotFile = new Array(this.cap).fill(undefined);
    this.slotExt = new Array(this.cap).fill(undefined);
    this.batchExt = new Array(init.depth).fill(undefined);
    this.slotReply = new Int32Array(this.cap);
    this.freeSlots = new Int32Array(this.cap);
    for (let i = 0; i < this.cap; i++) this.freeSlots[i] = this.cap - 1 - i;
    this.nFree = this.cap;
    this.readyQ = new Int32Array(this.cap * 4);
    this.waitList = new Int32Array(this.cap);
    this.batch = new Int32Array(init.depth * ENTRY_WORDS);
    this.compl = new Int32Array((init.depth * 2 + 16) * COMPL_WORDS);
  }

  /** Where a request's completion goes (tag: the entry's E_TAG word). */
  protected abstract deliver(tag: number, res: number): void;
  /** A table release may let one of this context's own parked requests go: re-evaluate them. */
  protected abstract selfWake(): void;
  /** Completions delivered but not yet handed on (a reap is still worth a pump while any are). */
  protected undelivered(): number { return 0; }
  /** After a pump's completions were handled: hand them on; true if that did anything. */
  protected abstract afterReap(): boolean;

  /** A free local slot exists (accept() may be called). */
  hasRoom(): boolean { return this.nFree > 0; }

  /**
   * Takes one request: copies its ENTRY_WORDS words from `words` at `at`, with `gen` the pool
   * allocation generation its memory must belong to, then registers and admits or parks it.
   * The caller checked hasRoom(). `ext`: the caller's buffer of an OpFlag.EXT entry (inline
   * mode), handed to the native context next to the batch. `reply`: a reply handle + 1 to send
   * from at completion (inline mode, a plain WRITE; 0: none).
   */
  accept(words: Int32Array, at: number, gen: number, ext?: Uint8Array, reply = 0): void {
    const slot = this.freeSlots[--this.nFree];
    const dst = slot * ENTRY_WORDS;
    for (let i = 0; i < ENTRY_WORDS; i++) this.slotEntry[dst + i] = words[at + i];
    this.slotGen[slot] = gen;
    this.slotExt[slot] = ext;
    this.slotReply[slot] = reply;
    this.held++;
    if (this.faults !== null) this.faults.onRequest();
    this.route(slot);
  }

  /**
   * A file is announced: join its identity's table (once per identity in this context) and
   * register its fd with the native context. Throws what tableJoin throws (the participant
   * limit, O_DIRECT and buffered handles mixed across engines).
   */
  openFile(m: ControlOpen): void {
    // Announced twice (a replacement worker re-opening files)? Forget the first one.
    if (this.files[m.fileId] !== undefined) this.closeFile(m.fileId);
    let table: TrackedTable | null = null, tableId = -1, part = -1;
    const key = `${m.dev}:${m.ino}`;
    if (m.tracked) {
      let j = this.joins.get(key);
      if (j === undefined) {
        const joined = this.ctx.tableJoin(m.dev, m.ino, m.tableCapacity, m.direct, m.workaround);
        try {
          j = { joined, table: new TrackedTable(new AtomicWords(new Int32Array(joined.memory)), joined.capacity), files: 0, wanting: 0 };
        } catch (err) {
          this.ctx.tableLeave(joined.id);
          throw err;
        }
        this.joins.set(key, j);
        this.joinList = [...this.joins.values()];
      }
      j.files++;
      // The registry counts contexts that want the workaround (the combined rule): this one
      // does while any of its files of the identity does.
      if (m.workaround && j.wanting++ === 0 && j.files > 1) this.ctx.tableWorkaround(j.joined.id, true);
      table = j.table; tableId = j.joined.id; part = j.joined.bit;
    }
    this.files[m.fileId] = {
      fd: m.fd, path: m.path, table, tableId, part, workaround: m.workaround, emulate: m.emulate, align: m.align,
      stats: new Float64Array(m.stats, this.index * FSTAT_WORDS * 8, FSTAT_WORDS),
    };
    this.fileKeys[m.fileId] = key;
    this.ctx.setFile(m.fileId, m.fd);
  }

  /** Every request of the file has settled (the engine's close waited for them). */
  closeFile(fileId: number): void {
    this.ctx.clearFile(fileId);
    const f = this.files[fileId];
    this.files[fileId] = undefined;
    if (f === undefined || f.table === null) return;
    const key = this.fileKeys[fileId]!, j = this.joins.get(key);
    if (j === undefined) return;
    if (--j.files === 0) {
      this.joins.delete(key);
      this.joinList = [...this.joins.values()];
      this.ctx.tableLeave(j.joined.id);
    } else if (f.workaround && --j.wanting === 0) this.ctx.tableWorkaround(j.joined.id, false);
  }

  /** The identity of each open file ("dev:ino"). */
  private readonly fileKeys: (string | undefined)[] = new Array(MAX_FILES);

  /**
   * Rings the participants in `mask` (from a release or registration in f's table): this
   * context's own bit re-evaluates its parked requests, every other bit goes to its
   * participant's eventfd through the registry (another worker, or another thread's engine).
   */
  protected wake(f: FileEntry, mask: number): void {
    if (mask === 0) return;
    const own = 1 << f.part;
    if ((mask & own) !== 0) { this.selfWake(); mask &= ~own; }
    if (mask !== 0) { f.table!.markRang(mask); this.ctx.tableRing(f.tableId, mask); }
  }

  /**
   * Another participant rang this context on one of its tables since the last call (its
   * H_RANG word, cleared here): the caller re-evaluates the parked requests. One load per
   * joined table, so a busy worker can ask on every iteration.
   */
  protected tableRung(): boolean {
    let rung = false;
    const list = this.joinList;
    for (let i = 0; i < list.length; i++) if (list[i].table.takeRang(list[i].joined.bit)) rung = true;
    return rung;
  }

  /** The XFS workaround applies to f's zero-writes: this engine wants it, or another engine on the file does. */
  protected workaround(f: FileEntry): boolean {
    return f.workaround || (f.table !== null && f.table.workaroundWanted());
  }

  /** A request that will not run (corrupt ring): gives up its table entry; no completion. */
  protected abandon(slot: number): void {
    const h = this.slotHandle[slot], f = this.slotFile[slot];
    if (h >= 0 && f !== undefined && f.table !== null) this.wake(f, f.table.release(h));
    this.slotHandle[slot] = -1;
    this.slotState[slot] = S_FREE;
  }

  /** Registers a freshly pulled request with its file's table, then admits or parks it. */
  protected route(slot: number): void {
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
      if (op !== Op.WRITE || (this.slotEntry[e + E_OP] & ~0xff) !== OpFlag.RMW || !this.rmw.valid(slot)) return this.finish(slot, -22 /* EINVAL */);
      this.slotPhase[slot] = PH_ADMIT;
    }
    if (op === Op.FALLOCATE && f.emulate) {
      this.slotEntry[e + E_OP] |= OpFlag.EMULATE_XFS_BUG;
      f.stats[FS_EMULATED]++;
    }
    // A barrier (OpFlag.BARRIER, open()): a NOP tracked as serialising over [0, infinity).
    // The flag never reaches the addon.
    const barrier = op === Op.NOP && (this.slotEntry[e + E_OP] & ~0xff) === OpFlag.BARRIER && f.table !== null;
    this.slotBarrier[slot] = barrier ? 1 : 0;
    if (barrier) this.slotEntry[e + E_OP] = Op.NOP;
    const tracked = barrier || (f.table !== null && op !== Op.FSYNC && op !== Op.NOP && op >= 1 && op <= Op.NOP);
    // The entry came through shared memory: its range must make sense before it may occupy
    // the table (the addon validates everything again before the kernel sees it).
    if (tracked && !barrier && !this.rangeValid(slot, op)) return this.finish(slot, -22 /* EINVAL */);
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
  protected poolLive(slot: number, op: number): boolean {
    const e = slot * ENTRY_WORDS, E = this.slotEntry, G = this.pageGen, gen = this.slotGen[slot];
    // The caller's own buffer (inline mode): no pool memory; the addon checks its bounds.
    if (E[e + E_OP] & OpFlag.EXT) return true;
    const buf = E[e + E_BUF] >>> 0, len = E[e + E_LEN];
    if (op === Op.READ || op === Op.WRITE) {
      if (this.slotPhase[slot] !== 0) {
        // A padded write (rmw.valid() checked its layout): [padded range][scratch: 2 * alignment].
        const p = this.rmw.range(slot);
        return poolRangeLive(G, gen, p.buf, p.a1 - p.a0 + 2 * p.align);
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
  protected rangeValid(slot: number, op: number): boolean {
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
    // (end = offset + len must stay <= 2^63-1: the kernel refuses pos + count that overflows loff_t)
    return len > 0 && !(hi === 0x7fffffff && lo + len > 0xffffffff);
  }

  protected register(slot: number, f: FileEntry): number {
    const e = slot * ENTRY_WORDS, E = this.slotEntry, table = f.table!;
    const op = E[e + E_OP] & 0xff;
    let offLo = E[e + E_OFF_LO], offHi = E[e + E_OFF_HI];
    let type: ReqType, serialising = false, eof = 0n;
    let endLo: number, endHi: number;
    if (this.slotBarrier[slot] === 1) {
      type = ReqType.ZERO;
      serialising = true;
      offHi = 0; offLo = 0;
      endHi = INT64_MAX_ALIGNED_HI; endLo = -f.align | 0;
    } else if (op === Op.TRUNCATE || op === Op.FALLOCATE) {
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
      } else if (this.workaround(f) && (end > (eof = this.sizeOf(f)) || this.slotInf[slot] === 1)) {
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
      const { a0, a1 } = this.rmw.range(slot);
      [offHi, offLo] = split(a0);
      if (this.slotInf[slot] === 1 || a1 > Number(this.sizeOf(f))) { this.slotInf[slot] = 1; endHi = INT64_MAX_ALIGNED_HI; endLo = -f.align | 0; }
      else [endHi, endLo] = split(a1);
    } else {
      type = op === Op.READ || op === Op.READV ? ReqType.READ : ReqType.WRITE;
      const lo = (offLo >>> 0) + (E[e + E_LEN] >>> 0);
      endLo = lo | 0;
      endHi = offHi + (lo > 0xffffffff ? 1 : 0);
    }
    const h = table.register(f.part, type, serialising, offHi, offLo, endHi, endLo);
    if (h !== FULL) {
      // Scanners that saw this entry before its ticket was published parked on it.
      this.wake(f, table.takeWakeups());
      f.stats[FS_TRACKED]++;
      if (serialising) f.stats[FS_SERIALISING]++;
    }
    return h;
  }

  /** The file's size now (0 if fstat fails: the request then fails in the kernel anyway). */
  protected sizeOf(f: FileEntry): bigint {
    try { return fstatSync(f.fd, { bigint: true }).size; } catch { return 0n; }
  }

  protected admitOrPark(slot: number, f: FileEntry, h: number): void {
    if (f.table!.tryAdmit(f.part, h) === ADMITTED) {
      if (this.slotState[slot] === S_PARKED || this.slotState[slot] === S_FULLWAIT) this.countWait(slot, f);
      this.admitted(slot, f);
      return;
    }
    if (this.slotState[slot] !== S_PARKED && this.slotState[slot] !== S_FULLWAIT) this.slotParkedAt[slot] = performance.now();
    this.slotState[slot] = S_PARKED;
    this.waitList[this.nWaiting++] = slot;
  }

  protected countWait(slot: number, f: FileEntry): void {
    const ns = (performance.now() - this.slotParkedAt[slot]) * 1e6;
    f.stats[FS_WAITS]++;
    f.stats[FS_WAIT_NS] += ns;
    if (ns > f.stats[FS_WAIT_MAX_NS]) f.stats[FS_WAIT_MAX_NS] = ns;
  }

  /** Re-evaluates every waiting request after a table wake (spurious wakes are harmless). */
  protected retryWaiting(): void {
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
  protected makeReady(slot: number, sub = 0): void {
    this.slotState[slot] = S_READY;
    this.readyQ[(this.readyHead + this.readyLen) % this.readyCap] = (slot << 3) | sub;
    this.readyLen++;
  }

  /** The table admitted the request: hand it to the kernel, or start its padding RMW. */
  protected admitted(slot: number, f: FileEntry): void {
    if (this.slotPhase[slot] === 0) {
      if ((this.slotEntry[slot * ENTRY_WORDS + E_OP] & 0xff) === Op.FALLOCATE && this.slotInf[slot] === 0 &&
          this.slotHandle[slot] >= 0 && this.workaround(f) && this.zeroEndsPastEof(slot, f)) {
        // A zero-write that ended before EOF when it registered (so it is not serialising), and
        // EOF has since moved below its end: it parked behind a shrinking truncate, or a padded
        // write that trimmed the size back. Run as it is, it would set the size while writes past
        // it may be in flight (the XFS race). Re-register it serialising, as at registration: it
        // then waits for the older writes past EOF, and newer ones wait for it.
        return this.reregister(slot, f);
      }
      return this.makeReady(slot);
    }
    // A padded write: EOF may have moved below the padded end since registration (an older
    // truncate completed). Then it is re-registered with the range extended to infinity before
    // it may trim the size back later; otherwise its read-modify-write starts.
    if (!this.rmw.start(slot, Number(this.sizeOf(f)), this.slotInf[slot] === 1 || this.slotHandle[slot] < 0)) this.reregister(slot, f);
  }

  /** Releases the request's table entry and registers it again serialising to "infinity" (slotInf). */
  protected reregister(slot: number, f: FileEntry): void {
    this.wake(f, f.table!.release(this.slotHandle[slot]));
    this.slotHandle[slot] = -1;
    this.slotInf[slot] = 1;
    const h = this.register(slot, f);
    if (h === FULL) { this.slotState[slot] = S_FULLWAIT; this.waitList[this.nWaiting++] = slot; return; }
    this.slotHandle[slot] = h;
    this.admitOrPark(slot, f, h);
  }

  /** Does this FALLOCATE end past EOF now? (Exact 64-bit arithmetic, like register().) */
  protected zeroEndsPastEof(slot: number, f: FileEntry): boolean {
    const e = slot * ENTRY_WORDS, E = this.slotEntry;
    return join64(E[e + E_OFF_HI], E[e + E_OFF_LO]) + join64(E[e + E_BUF], E[e + E_LEN]) > this.sizeOf(f);
  }

  /** Writes the batch entry for sub-operation `sub` of `slot` at batch index `n`. */
  protected fillBatch(n: number, slot: number, sub: number): void {
    const src = slot * ENTRY_WORDS, dst = n * ENTRY_WORDS, B = this.batch, E = this.slotEntry;
    // The arm word is written for every entry, zero included: a word left by a batch whose
    // pump() threw must not attach a reply to another request.
    if (this.replyArm !== null) this.replyArm[n] = 0;
    if (sub === 0) {
      for (let i = 0; i < ENTRY_WORDS; i++) B[dst + i] = E[src + i];
      B[dst + E_TAG] = slot << 3;
      const x = this.slotExt[slot];
      if (x !== undefined) { this.batchExt[n] = x; this.batchHasExt = true; }
      const r = this.slotReply[slot];
      if (r !== 0 && this.replyArm !== null) { this.replyArm[n] = r; this.batchHasReply = true; }
      return;
    }
    this.rmw.fill(B, dst, slot, sub);
  }

  /** One native call: submit what fits, reap what completed. Returns whether anything happened. */
  protected submitAndReap(waitMs: number): boolean {
    let n = 0;
    const room = this.depth - this.nativeInflight;
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
    if (n === 0 && waitMs === 0 && this.nativeInflight === 0 && this.undelivered() === 0) return false;
    this.nativeInflight += n;
    let got = 0;
    if (this.batchHasReply) {
      // (The context clears the arm words it read.)
      got = this.ctx.pump(n, waitMs, this.batchHasExt ? this.batchExt : undefined, true);
      this.batchHasReply = false;
      if (this.batchHasExt) { this.batchHasExt = false; this.batchExt.fill(undefined, 0, n); }
    } else if (this.batchHasExt) {
      got = this.ctx.pump(n, waitMs, this.batchExt);
      this.batchHasExt = false;
      this.batchExt.fill(undefined, 0, n); // the engine holds the buffers until they settle
    } else if (this.nativeInflight > 0 || n > 0 || waitMs > 0) got = this.ctx.pump(n, waitMs);
    if (n > 0) this.wstats[WS_BATCHES]++;
    const C = this.compl;
    for (let i = 0; i < got; i++) {
      const tag = C[i * COMPL_WORDS];
      const res = C[i * COMPL_WORDS + 1];
      const slot = tag >> 3, sub = tag & 7;
      if (slot < 0 || slot >= this.cap || this.slotState[slot] !== S_INFLIGHT) continue; // not ours: ignore
      this.nativeInflight--;
      if (sub !== 0) this.rmw.step(slot, sub, res);
      else this.complete(slot, res);
    }
    this.wstats[WS_INFLIGHT] = this.nativeInflight;
    const flushed = this.afterReap();
    return n > 0 || got > 0 || flushed;
  }

  /** A request finished in the kernel: release its table entry and post its completion. */
  protected complete(slot: number, res: number): void {
    const h = this.slotHandle[slot];
    if (h >= 0) {
      // The file entry the request was registered through (kept per slot: the handle must be
      // released in that table even if the file table changed meanwhile).
      const f = this.slotFile[slot];
      if (f !== undefined && f.table !== null) this.wake(f, f.table.release(h));
      this.slotHandle[slot] = -1;
    }
    this.wstats[WS_OPS]++;
    if (res > 0) this.wstats[WS_BYTES] += res;
    else if (res < 0) this.wstats[WS_ERRORS]++;
    this.finish(slot, res);
  }

  /** Frees the local slot and hands the completion to the driver. */
  protected finish(slot: number, res: number): void {
    const tag = this.slotEntry[slot * ENTRY_WORDS + E_TAG];
    this.slotState[slot] = S_FREE;
    this.slotHandle[slot] = -1;
    this.slotFile[slot] = undefined;
    this.slotExt[slot] = undefined;
    this.slotReply[slot] = 0;
    this.freeSlots[this.nFree++] = slot;
    this.held--;
    this.deliver(tag, res);
  }
}
