// fio-style block verification. Every data block ("unit") written by the stress tool starts
// with a 32-byte header and is followed by a payload generated from (seed, offset, seq):
//
//   0  u32  magic 0x52464231 ("1BFR" little-endian)
//   4  u32  crc32c of the whole unit, computed with this field zeroed
//   8  u64  file offset the unit was written to
//  16  u64  write sequence number (its position in the generated operation stream, from 1)
//  24  u32  run seed
//  28  u32  unit length in bytes
//  32  ...  payload: a xorshift32 stream keyed by (seed, offset, seq)
//
// A unit read back is classified against what the model expects there:
//   lost         zeros (or beyond EOF) where a completed write should be
//   stale        a valid unit, but with an older (or otherwise wrong) sequence number or seed,
//                or a valid unit where zeros are expected
//   misdirected  a valid unit whose offset field names another offset
//   torn         the checksum does not match (partial write, garbage)
import { crc32cUpdate } from './crc32c.js';
import { payloadKey } from './rng.js';

export const MAGIC = 0x52464231;
export const HEADER_BYTES = 32;
export const MIN_UNIT = 64;

export type BadClass = 'lost' | 'stale' | 'misdirected' | 'torn';
export const BAD_CLASSES: readonly BadClass[] = ['lost', 'stale', 'misdirected', 'torn'];

export interface BlockHeader {
  magic: number;
  crc: number;
  offset: number;
  seq: number;
  seed: number;
  length: number;
}

function dv(buf: Uint8Array): DataView { return new DataView(buf.buffer, buf.byteOffset, buf.byteLength); }

function setU64(d: DataView, at: number, v: number): void {
  d.setUint32(at, v % 4294967296, true);
  d.setUint32(at + 4, Math.floor(v / 4294967296), true);
}
function getU64(d: DataView, at: number): number {
  return d.getUint32(at + 4, true) * 4294967296 + d.getUint32(at, true);
}

/** Writes a header (crc field as given) at buf[at]. */
export function encodeHeader(buf: Uint8Array, at: number, h: BlockHeader): void {
  const d = dv(buf);
  d.setUint32(at, h.magic >>> 0, true);
  d.setUint32(at + 4, h.crc >>> 0, true);
  setU64(d, at + 8, h.offset);
  setU64(d, at + 16, h.seq);
  d.setUint32(at + 24, h.seed >>> 0, true);
  d.setUint32(at + 28, h.length >>> 0, true);
}

export function decodeHeader(buf: Uint8Array, at = 0): BlockHeader {
  const d = dv(buf);
  return {
    magic: d.getUint32(at, true), crc: d.getUint32(at + 4, true), offset: getU64(d, at + 8),
    seq: getU64(d, at + 16), seed: d.getUint32(at + 24, true), length: d.getUint32(at + 28, true),
  };
}

/** crc32c of the unit at buf[at, at+len) with its crc field taken as zero. */
export function unitCrc(buf: Uint8Array, at: number, len: number): number {
  let c = crc32cUpdate(0, buf, at, at + 4);
  c = crc32cUpdate(c, ZERO4, 0, 4);
  return crc32cUpdate(c, buf, at + 8, at + len);
}
const ZERO4 = new Uint8Array(4);

/** Fills buf[at, at+len) with the unit for (offset, seq, seed), checksum included. */
export function fillUnit(buf: Uint8Array, at: number, len: number, offset: number, seq: number, seed: number): number {
  if (len < MIN_UNIT || len % 4 !== 0) throw new RangeError(`unit length ${len} must be a multiple of 4 and >= ${MIN_UNIT}`);
  encodeHeader(buf, at, { magic: MAGIC, crc: 0, offset, seq, seed, length: len });
  const d = dv(buf);
  let s = payloadKey(seed, offset, seq) || 0x9e3779b9;
  for (let i = at + HEADER_BYTES, end = at + len; i < end; i += 4) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    d.setUint32(i, s >>> 0, true);
  }
  const crc = unitCrc(buf, at, len);
  d.setUint32(at + 4, crc, true);
  return crc;
}

/** The checksum a unit for (offset, seq, seed) carries. */
export function expectedCrc(len: number, offset: number, seq: number, seed: number): number {
  const b = new Uint8Array(len);
  return fillUnit(b, 0, len, offset, seq, seed);
}

function isZero(buf: Uint8Array, at: number, len: number): boolean {
  for (let i = at, end = at + len; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}

/** What was found in a unit (for reports). */
export interface Found {
  zero: boolean;
  /** The unit lies (partly) beyond the end of the file. */
  eof: boolean;
  magicOk: boolean;
  crcOk: boolean;
  offset: number | null;
  seq: number | null;
  seed: number | null;
  crc: number | null;
}

/** What a unit should hold: seq 0 means zeros. */
export interface Expected { offset: number; seq: number; seed: number }

export interface Verdict { cls: BadClass | null; found: Found }

/**
 * Classifies the unit at buf[at, at+len). `avail` is how many of its bytes the read returned
 * (less than len at EOF).
 */
export function classify(buf: Uint8Array, at: number, len: number, avail: number, exp: Expected): Verdict {
  const eof = avail < len;
  const found: Found = { zero: false, eof, magicOk: false, crcOk: false, offset: null, seq: null, seed: null, crc: null };
  const zero = avail <= 0 || isZero(buf, at, Math.max(0, avail));
  found.zero = zero;
  if (zero) return { cls: exp.seq === 0 ? null : 'lost', found };
  if (avail >= HEADER_BYTES) {
    const h = decodeHeader(buf, at);
    found.magicOk = h.magic === MAGIC;
    found.offset = h.offset; found.seq = h.seq; found.seed = h.seed; found.crc = h.crc;
    if (found.magicOk && h.length === len && !eof) found.crcOk = unitCrc(buf, at, len) === h.crc;
  }
  if (!found.crcOk) return { cls: 'torn', found };
  if (found.offset !== exp.offset) return { cls: 'misdirected', found };
  if (exp.seq === 0 || found.seq !== exp.seq || found.seed !== exp.seed) return { cls: 'stale', found };
  return { cls: null, found };
}

/** One bad unit, as reported. */
export interface BadBlock {
  offset: number;
  length: number;
  class: BadClass;
  /** 'run' (read back during the run) or 'final' (the verification at the end). */
  when: 'run' | 'final';
  file: string;
  expected: { seq: number; offset: number; crc: number | null; zero: boolean };
  found: Found;
}

/**
 * Per-file model: the sequence number expected in each unit (0: zeros) and the expected size.
 * Units never written and inside the size read as zeros.
 */
export class UnitModel {
  readonly unit: number;
  seqs: Float64Array;
  size = 0;
  constructor(unit: number, initialUnits = 1024) {
    this.unit = unit;
    this.seqs = new Float64Array(initialUnits);
  }
  private ensure(n: number): void {
    if (n <= this.seqs.length) return;
    let cap = this.seqs.length;
    while (cap < n) cap *= 2;
    const s = new Float64Array(cap); s.set(this.seqs); this.seqs = s;
  }
  seqAt(u: number): number { return u < this.seqs.length ? this.seqs[u] : 0; }
  /** A completed data write of unit u with sequence number seq. */
  write(u: number, seq: number): void {
    this.ensure(u + 1);
    this.seqs[u] = seq;
    this.size = Math.max(this.size, (u + 1) * this.unit);
  }
  /** Zeroes [off, off+len) (unit aligned) and extends the size like FALLOC_FL_ZERO_RANGE. */
  zero(off: number, len: number): void {
    const u0 = off / this.unit, u1 = (off + len) / this.unit;
    this.ensure(u1);
    this.seqs.fill(0, u0, u1);
    this.size = Math.max(this.size, off + len);
  }
  /** Truncates (unit aligned): everything from `size` on becomes zeros. */
  truncate(size: number): void {
    const u = Math.ceil(size / this.unit);
    if (u < this.seqs.length) this.seqs.fill(0, u);
    this.size = size;
  }
  reset(): void { this.seqs.fill(0); this.size = 0; }
}
