// Requests in flight, on the engine's thread: one id each, with its 8 entry words, its promise
// (or its place in a batch), its buffer and its completion hook, in parallel arrays indexed by
// id, so a request costs no object beyond the caller's promise. Every mode's completions end
// in settle(), which turns a result into the caller's value or RingfenceError.
import { ENTRY_WORDS, E_AUX, E_BUF, E_FILE, E_LEN, E_OFF_HI, E_OFF_LO, E_OP, Op, OpFlag } from '../protocol.js';
import { RingfenceError, detachedReadError, errnoError } from '../errors.js';
import type { PoolAllocation } from '../buffers.js';
import { join64 } from './int64.js';

export const K_FREE = 0, K_SINGLE = 1, K_BATCH = 2;

/** What a request needs from the file it belongs to (src/file.ts File). */
export interface RequestFile {
  readonly path: string;
  readonly direct: boolean;
  /** The request settled: the file's reference count drops (close() waits for 0). */
  settled(): void;
}

export interface BatchState {
  results: (number | RingfenceError)[];
  remaining: number;
  firstError: RingfenceError | null;
  resolve: (v: number[]) => void;
  reject: (e: unknown) => void;
}

/** What the requests need from the engine. */
export interface RequestHost {
  /**
   * A write() the kernel completed short: send its rest as the same request (the entry words
   * were advanced already). False when it cannot be sent: it then settles as it is.
   */
  resend(id: number): boolean;
  /** A zero-copy request's pool allocation is no longer in flight. */
  unhold(rec: PoolAllocation): void;
  /** Returns a bounce block to the pool. */
  releasePool(off: number): void;
  /** The pool's bytes (bounced reads are copied out of it). */
  readonly poolBytes: Uint8Array;
  /** Requests (and pool waiters) outstanding changed by delta. */
  holdOpen(delta: number): void;
  /** The engine is tearing down: short writes are not continued. */
  readonly destroying: boolean;
}

export class Requests {
  kind = new Uint8Array(1024);
  entry = new Int32Array(1024 * ENTRY_WORDS);
  resolve: (((n: number) => void) | null)[] = new Array(1024).fill(null);
  reject: (((e: unknown) => void) | null)[] = new Array(1024).fill(null);
  batch: (BatchState | null)[] = new Array(1024).fill(null);
  batchIndex = new Int32Array(1024);
  file: (RequestFile | null)[] = new Array(1024).fill(null);
  /** Completion hook: copies bounce buffers back and frees them (null when zero-copy). */
  done: (((res: number) => number | void) | null)[] = new Array(1024).fill(null);
  /**
   * A zero-copy request's buffer and its pool allocation (null for a caller's own buffer): the
   * reference keeps the memory alive, and the allocation's inflight count keeps the block
   * reserved, until the request settles (the GC and free() both wait for that).
   */
  buf: (Uint8Array | null)[] = new Array(1024).fill(null);
  rec: (PoolAllocation | null)[] = new Array(1024).fill(null);
  /** Bytes a write() already wrote in earlier, short attempts; whether a short write is retried (not for submitRaw). */
  partial = new Float64Array(1024);
  retry = new Uint8Array(1024);
  /** A plain bounced read or write: its pool block (-1: none). A read copies into buf[id]. */
  bounce = new Int32Array(1024).fill(-1);
  /** A reply handle + 1 (Engine.replyOpen) that the context sends from when the write completes whole (0: none; native/reply.h). */
  reply = new Int32Array(1024);
  private freeIds: number[] = [];
  /** Ids below this have been used (the highest live id is below it). */
  nextId = 0;

  constructor(private readonly host: RequestHost) {}

  /** A request id that is in flight now. */
  live(id: number): boolean {
    return id >= 0 && id < this.nextId && this.kind[id] !== K_FREE;
  }

  /** A new request with entry words 0..5 and 7 as given (the tag word is the mode's). */
  create(file: RequestFile, op: number, fileId: number, offLo: number, offHi: number, len: number, buf: number, aux: number,
    done: ((res: number) => number | void) | null, resolve: ((n: number) => void) | null, reject: ((e: unknown) => void) | null,
    batch: BatchState | null, batchIndex: number, view: Uint8Array | null, rec: PoolAllocation | null, bounce = -1, reply = 0): number {
    let id = this.freeIds.pop();
    if (id === undefined) {
      id = this.nextId++;
      if (id >= this.kind.length) this.grow();
    }
    const e = id * ENTRY_WORDS, E = this.entry;
    E[e + E_OP] = op; E[e + E_FILE] = fileId; E[e + E_OFF_LO] = offLo; E[e + E_OFF_HI] = offHi;
    E[e + E_LEN] = len; E[e + E_BUF] = buf; E[e + E_AUX] = aux;
    this.kind[id] = batch === null ? K_SINGLE : K_BATCH;
    this.resolve[id] = resolve; this.reject[id] = reject; this.done[id] = done;
    this.batch[id] = batch; this.batchIndex[id] = batchIndex; this.file[id] = file;
    this.buf[id] = view; this.rec[id] = rec;
    this.partial[id] = 0; this.retry[id] = 1; this.bounce[id] = bounce; this.reply[id] = reply;
    this.host.holdOpen(1);
    return id;
  }

  private grow(): void {
    const n = this.kind.length * 2;
    const k = new Uint8Array(n); k.set(this.kind); this.kind = k;
    const e = new Int32Array(n * ENTRY_WORDS); e.set(this.entry); this.entry = e;
    const bi = new Int32Array(n); bi.set(this.batchIndex); this.batchIndex = bi;
    const pa = new Float64Array(n); pa.set(this.partial); this.partial = pa;
    const rt = new Uint8Array(n); rt.set(this.retry); this.retry = rt;
    const bo = new Int32Array(n).fill(-1); bo.set(this.bounce); this.bounce = bo;
    const rp = new Int32Array(n); rp.set(this.reply); this.reply = rp;
    for (const arr of [this.resolve, this.reject, this.batch, this.file, this.done, this.buf, this.rec] as unknown[][]) {
      arr.length = n;
      arr.fill(null, n / 2);
    }
  }

  /**
   * A write() the kernel completed short (the filesystem filled up part-way): the rest is
   * written as the same request, so write() resolves with its whole length or rejects with the
   * error the rest failed with (ENOSPC), never with a short count. True when it was re-sent.
   */
  private continueShortWrite(id: number, res: number): boolean {
    const e = id * ENTRY_WORDS, E = this.entry;
    if ((E[e + E_OP] & ~OpFlag.EXT) !== Op.WRITE || this.retry[id] === 0 || res <= 0 ||
        res >= (E[e + E_LEN] >>> 0) || this.host.destroying) return false;
    const saved = [E[e + E_OFF_LO], E[e + E_OFF_HI], E[e + E_LEN], E[e + E_BUF]];
    const lo = (E[e + E_OFF_LO] >>> 0) + res;
    E[e + E_OFF_LO] = lo | 0; E[e + E_OFF_HI] += lo > 0xffffffff ? 1 : 0;
    E[e + E_LEN] -= res; E[e + E_BUF] += res;
    if (this.host.resend(id)) { this.partial[id] += res; return true; }
    [E[e + E_OFF_LO], E[e + E_OFF_HI], E[e + E_LEN], E[e + E_BUF]] = saved;
    return false;
  }

  /** Request `id` completed with `res` (bytes or -errno), or failed with `error`. */
  settle(id: number, res: number, error: RingfenceError | null): void {
    if (error === null && this.continueShortWrite(id, res)) return;
    const partial = this.partial[id];
    if (partial > 0 && res >= 0) res += partial;
    const done = this.done[id];
    let hookError: RingfenceError | null = null;
    const bounce = this.bounce[id];
    if (bounce >= 0) {
      // A plain bounced request: copy a read back into the caller's buffer, return the block.
      this.bounce[id] = -1;
      try {
        if ((this.entry[id * ENTRY_WORDS + E_OP] & 0xff) === Op.READ && res > 0) this.buf[id]!.set(this.host.poolBytes.subarray(bounce, bounce + res), 0);
      } catch (e) {
        hookError = detachedReadError(this.file[id]?.path, e);
      } finally { this.host.releasePool(bounce); }
    }
    if (done !== null) {
      // The hook may translate the result (a padded read reports the caller's bytes), or
      // fail this one request (the caller detached its buffer while the read was in flight).
      try {
        const r = done(res);
        if (typeof r === 'number') res = r;
      } catch (e) {
        hookError = e instanceof RingfenceError ? e : new RingfenceError(String((e as Error)?.message ?? e), { code: 'ERR_RINGFENCE_INTERNAL', cause: e });
      }
    }
    const kind = this.kind[id];
    let err: RingfenceError | null = error ?? hookError;
    if (err === null && res === -14 /* EFAULT */ && partial === 0 && (this.entry[id * ENTRY_WORDS + E_OP] & OpFlag.EXT) !== 0 && this.buf[id]?.byteLength === 0) {
      // The caller's own buffer (OpFlag.EXT) was detached before the kernel could use it.
      const op = opName(this.entry[id * ENTRY_WORDS + E_OP] & 0xff), path = this.file[id]?.path ?? 'a file';
      err = new RingfenceError(`${op} on ${path}: the buffer was detached (its ArrayBuffer transferred, or freed) before the request started, so nothing was ${op === 'read' ? 'read' : 'written'}; keep the buffer untouched until the promise settles`,
        { code: 'ERR_RINGFENCE_BUFFER_DETACHED', op, path });
    }
    if (err === null && res < 0) {
      const e = id * ENTRY_WORDS, E = this.entry;
      const op = E[e + E_OP] & 0xff;
      const off = join64(E[e + E_OFF_HI], E[e + E_OFF_LO]);
      const len = op === Op.FALLOCATE ? join64(E[e + E_BUF] >>> 0, E[e + E_LEN]) : BigInt(E[e + E_LEN] >>> 0);
      // A flush has no offset; a truncate's offset word is the new size.
      const file = this.file[id];
      err = errnoError(res, opName(op), file?.path, op === Op.FSYNC ? undefined : off, op === Op.FSYNC || op === Op.TRUNCATE ? undefined : len, file?.direct ?? true);
      if (partial > 0) err.message += ` (this is the rest of a write whose first ${partial} bytes, before offset ${off}, were written; the range from there on is not)`;
    }
    if (kind === K_SINGLE) {
      if (err !== null) this.reject[id]!(err); else this.resolve[id]!(res);
    } else if (kind === K_BATCH) {
      settleBatchOp(this.batch[id]!, this.batchIndex[id], res, err);
    }
    this.kind[id] = K_FREE;
    const rec = this.rec[id];
    this.resolve[id] = null; this.reject[id] = null; this.done[id] = null; this.batch[id] = null;
    this.buf[id] = null; this.rec[id] = null;
    this.freeIds.push(id);
    if (rec !== null) this.host.unhold(rec);
    const file = this.file[id];
    this.file[id] = null;
    file?.settled();
    this.host.holdOpen(-1);
  }

  /**
   * close()'s deadline passed: every request still outstanding rejects with
   * ERR_RINGFENCE_CLOSE_TIMEOUT. The kernel may still read or write their memory, so their
   * bounce blocks and pool buffers are never handed out again (the engine is closing anyway).
   */
  abandonAll(deadlineMs: number): void {
    for (let id = 0; id < this.nextId; id++) {
      if (this.kind[id] === K_FREE) continue;
      const op = opName(this.entry[id * ENTRY_WORDS + E_OP] & 0xff);
      const path = this.file[id]?.path;
      // Not released: no copy-back, no return of memory the kernel may still write.
      this.done[id] = null;
      this.rec[id] = null;
      this.bounce[id] = -1;
      this.settle(id, -1, new RingfenceError(
        `${op}${path ? ` on ${path}` : ''}: close() gave up after its deadline of ${deadlineMs} ms with this request still in the kernel ` +
        '(the device or filesystem is stalled, e.g. frozen or hung); its outcome is unknown: read the range back after the device recovers, and do not reuse its buffer',
        { code: 'ERR_RINGFENCE_CLOSE_TIMEOUT', op, path },
      ));
    }
  }
}

/**
 * One operation of a submit() batch settled (or never started). When the last one settles the
 * batch resolves with every result, or rejects with the first error, whose `results` holds
 * every outcome.
 */
export function settleBatchOp(b: BatchState, index: number, res: number, err: unknown): void {
  b.results[index] = (err ?? res) as number | RingfenceError;
  if (err !== null && err !== undefined && b.firstError === null) b.firstError = err as RingfenceError;
  if (--b.remaining === 0) {
    if (b.firstError !== null) {
      (b.firstError as RingfenceError & { results?: unknown }).results = b.results;
      b.reject(b.firstError);
    } else b.resolve(b.results as number[]);
  }
}

export function opName(op: number): string {
  switch (op) {
    case Op.READ: return 'read';
    case Op.WRITE: return 'write';
    case Op.READV: return 'readv';
    case Op.WRITEV: return 'writev';
    case Op.FALLOCATE: return 'fallocate';
    case Op.FSYNC: return 'flush';
    case Op.TRUNCATE: return 'truncate';
    default: return 'nop';
  }
}
