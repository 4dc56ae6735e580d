// Padded read-modify-write of an unaligned O_DIRECT write (QEMU's padding RMW), as a small state
// machine per executor slot. The engine lays the request out in one bounce block:
//   [padded range: a1 - a0 bytes, the caller's data at (off - a0)][scratch: 2 * align]
// and the executor runs it under a serialising table entry over [a0, a1) (to infinity when it
// may extend the file). Steps, each one kernel op tagged (slot << 3) | sub:
//   READ   the head block (SUB_HEAD) and/or the tail block (SUB_TAIL) into scratch;
//   WRITE  merge: copy the pad bytes around the caller's data, write [a0, a1) (SUB_WRITE);
//   TRUNC  if the padded write extended the file past the caller's end, set the size back (SUB_TRUNC).
// The first failure is the result; a short padded write is EIO.
import { ENTRY_WORDS, E_AUX, E_BUF, E_FILE, E_LEN, E_OFF_HI, E_OFF_LO, E_OP, E_TAG, Op } from '../protocol.js';
import { split } from './int64.js';

export const SUB_HEAD = 1, SUB_TAIL = 2, SUB_WRITE = 3, SUB_TRUNC = 4;
/** Phases (0: not a padded write). */
export const PH_ADMIT = 1, PH_READ = 2, PH_WRITE = 3, PH_TRUNC = 4;

/** The geometry of a padded write, from its entry words (one object per executor, reused). */
export interface Pad {
  /** The caller's offset, end and length. */
  off: number; end: number; len: number;
  /** The alignment and the aligned range [a0, a1). */
  align: number; a0: number; a1: number;
  /** Pool offset of the bounce block, and of its scratch (2 * align after the padded range). */
  buf: number; scratch: number;
}

/** Fills `p` from the entry at `e` (an RMW write that validRmw() accepted: exact doubles). */
export function padOf(E: Int32Array, e: number, p: Pad): Pad {
  const align = E[e + E_AUX], len = E[e + E_LEN] >>> 0;
  const off = E[e + E_OFF_HI] * 4294967296 + (E[e + E_OFF_LO] >>> 0), end = off + len;
  const a0 = off - (off % align), a1 = Math.ceil(end / align) * align;
  p.off = off; p.end = end; p.len = len; p.align = align; p.a0 = a0; p.a1 = a1;
  p.buf = E[e + E_BUF] >>> 0; p.scratch = p.buf + (a1 - a0);
  return p;
}

export function newPad(): Pad { return { off: 0, end: 0, len: 0, align: 0, a0: 0, a1: 0, buf: 0, scratch: 0 }; }

/** What the RMW needs from its executor. */
export interface RmwHost {
  readonly slotEntry: Int32Array;
  readonly poolBytes: Uint8Array;
  /** Queue sub-operation `sub` of `slot` for the kernel. */
  ready(slot: number, sub: number): void;
  /** The request is done: `res` is its result (bytes or -errno). */
  complete(slot: number, res: number): void;
}

export class Rmw {
  readonly phase: Uint8Array;
  private readonly pending: Uint8Array;
  private readonly result: Int32Array;
  /** Size to restore after a padded write that extended the file (-1: none). */
  private readonly trunc: Float64Array;
  private readonly p = newPad();

  constructor(cap: number, private readonly host: RmwHost) {
    this.phase = new Uint8Array(cap);
    this.pending = new Uint8Array(cap);
    this.result = new Int32Array(cap);
    this.trunc = new Float64Array(cap);
  }

  /**
   * The entry's layout is one this state machine can run: a power-of-two alignment in
   * [512, 64 KiB], a positive length, exact double arithmetic (below 2^53, which the API
   * enforces too), and a 512-aligned bounce block that fits the pool. (The entry came through
   * shared memory in worker mode: untrusted.)
   */
  valid(slot: number): boolean {
    const e = slot * ENTRY_WORDS, E = this.host.slotEntry;
    const align = E[e + E_AUX], len = E[e + E_LEN];
    if (align < 512 || align > 65536 || (align & (align - 1)) !== 0 || len <= 0) return false;
    const off = (E[e + E_OFF_HI] >= 0 ? E[e + E_OFF_HI] : -1) * 4294967296 + (E[e + E_OFF_LO] >>> 0);
    if (off < 0 || off + len + 2 * align > Number.MAX_SAFE_INTEGER) return false;
    const p = padOf(E, e, this.p);
    return p.buf % 512 === 0 && p.buf + (p.a1 - p.a0) + 2 * align <= this.host.poolBytes.byteLength;
  }

  /** The aligned range [a0, a1) the table entry covers. */
  range(slot: number): Pad { return padOf(this.host.slotEntry, slot * ENTRY_WORDS, this.p); }

  /**
   * Admitted: start reading the pad blocks (or write at once if none is needed). `size` is the
   * file's size now; returns false without starting when the padded end lies past it but the
   * table entry was not registered to infinity (the caller re-registers first).
   */
  start(slot: number, size: number, toInfinity: boolean): boolean {
    const p = padOf(this.host.slotEntry, slot * ENTRY_WORDS, this.p);
    if (p.a1 > size && !toInfinity) return false;
    this.trunc[slot] = p.a1 > size && p.a1 > p.end ? Math.max(size, p.end) : -1;
    this.result[slot] = 0;
    let pending = 0;
    if (p.off % p.align !== 0) { this.host.ready(slot, SUB_HEAD); pending++; }
    // One block holds both ends when the range is a single block: read it once.
    if (p.end % p.align !== 0 && (p.a1 - p.align !== p.a0 || p.off % p.align === 0)) { this.host.ready(slot, SUB_TAIL); pending++; }
    this.phase[slot] = PH_READ;
    this.pending[slot] = pending;
    if (pending === 0) this.write(slot);
    return true;
  }

  /** Writes the batch entry for sub-operation `sub` of `slot` at B[dst]. */
  fill(B: Int32Array, dst: number, slot: number, sub: number): void {
    const E = this.host.slotEntry, src = slot * ENTRY_WORDS, p = padOf(E, src, this.p);
    let op = Op.READ, at = 0, len = p.align, where = p.scratch;
    if (sub === SUB_HEAD) at = p.a0;
    else if (sub === SUB_TAIL) { at = p.a1 - p.align; where += p.align; }
    else if (sub === SUB_WRITE) { op = Op.WRITE; at = p.a0; len = p.a1 - p.a0; where = p.buf; }
    else { op = Op.TRUNCATE; at = this.trunc[slot]; len = 0; where = 0; }
    const [hi, lo] = split(at);
    B[dst + E_OP] = op; B[dst + E_FILE] = E[src + E_FILE]; B[dst + E_OFF_LO] = lo; B[dst + E_OFF_HI] = hi;
    B[dst + E_LEN] = len; B[dst + E_BUF] = where; B[dst + E_TAG] = (slot << 3) | sub; B[dst + E_AUX] = 0;
  }

  /** Sub-operation `sub` of `slot` completed with `res`. */
  step(slot: number, sub: number, res: number): void {
    const p = padOf(this.host.slotEntry, slot * ENTRY_WORDS, this.p);
    // A pad-block read that came back short (past EOF): the rest of the block reads as zeroes.
    if ((sub === SUB_HEAD || sub === SUB_TAIL) && res >= 0 && res < p.align) {
      const at = p.scratch + (sub === SUB_TAIL ? p.align : 0);
      this.host.poolBytes.fill(0, at + res, at + p.align);
    }
    if (res < 0 && this.result[slot] === 0) this.result[slot] = res;
    if (--this.pending[slot] > 0) return;
    if (this.result[slot] < 0) return this.host.complete(slot, this.result[slot]);
    if (sub === SUB_HEAD || sub === SUB_TAIL) return this.write(slot);
    if (sub === SUB_WRITE) {
      if (res !== p.a1 - p.a0) return this.host.complete(slot, res >= 0 ? -5 /* EIO: short padded write */ : res);
      if (this.trunc[slot] >= 0) { this.phase[slot] = PH_TRUNC; this.pending[slot] = 1; this.host.ready(slot, SUB_TRUNC); return; }
      return this.host.complete(slot, p.len);
    }
    this.host.complete(slot, p.len);
  }

  /** Both pad blocks are in scratch: merge them around the caller's data and write the aligned range. */
  private write(slot: number): void {
    const p = padOf(this.host.slotEntry, slot * ENTRY_WORDS, this.p), P = this.host.poolBytes;
    if (p.off % p.align !== 0) P.copyWithin(p.buf, p.scratch, p.scratch + (p.off - p.a0));
    if (p.end % p.align !== 0) {
      const tailScratch = p.a1 - p.align === p.a0 && p.off % p.align !== 0 ? p.scratch : p.scratch + p.align;
      const from = p.end - (p.a1 - p.align);
      P.copyWithin(p.buf + (p.end - p.a0), tailScratch + from, tailScratch + p.align);
    }
    this.phase[slot] = PH_WRITE;
    this.pending[slot] = 1;
    this.host.ready(slot, SUB_WRITE);
  }
}
