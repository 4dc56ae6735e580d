// Deterministic randomness for the stress tool: the operation stream comes from one Rng per
// run (keyed by --seed), block payloads from a generator keyed by (seed, offset, seq), and
// the stream digest hashes every generated operation so two runs can be compared.
import { createHash, type Hash } from 'node:crypto';

/** splitmix32-style finaliser: a good 32-bit mix. */
export function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** sfc32: small, fast and statistically sound; state seeded from one 32-bit seed. */
export class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number) {
    this.a = mix32(seed); this.b = mix32(this.a ^ 0x6a09e667); this.c = mix32(this.b ^ 0xbb67ae85); this.d = 1;
    for (let i = 0; i < 12; i++) this.next();
  }
  /** Uniform uint32. */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** Uniform integer in [0, n). */
  below(n: number): number {
    if (n <= 1) return 0;
    return Math.floor((this.next() / 4294967296) * n);
  }
  /** Uniform float in [0, 1). */
  float(): number { return this.next() / 4294967296; }
}

/** The 32-bit key of a block's payload generator. */
export function payloadKey(seed: number, offset: number, seq: number): number {
  const offLo = offset % 4294967296, offHi = Math.floor(offset / 4294967296);
  const seqLo = seq % 4294967296, seqHi = Math.floor(seq / 4294967296);
  return mix32(mix32(mix32(mix32(seed ^ 0x52464231) ^ offLo) ^ offHi) ^ seqLo) ^ mix32(seqHi);
}

/**
 * Hash of the generated operation stream. Each record is (op, offset, length, seq); the
 * digest is over records in generation order, which is fixed by the seed (the order in which
 * the kernel completes them is not part of it).
 */
export class StreamDigest {
  private readonly h: Hash = createHash('sha256');
  private readonly rec = Buffer.alloc(4096);
  private fill = 0;
  count = 0;

  constructor(header: string) { this.h.update(header); }

  add(op: number, offset: number, length: number, seq: number): void {
    if (this.fill + 25 > this.rec.length) this.flush();
    const r = this.rec;
    r[this.fill] = op;
    r.writeDoubleLE(offset, this.fill + 1);
    r.writeDoubleLE(length, this.fill + 9);
    r.writeDoubleLE(seq, this.fill + 17);
    this.fill += 25;
    this.count++;
  }

  private flush(): void {
    if (this.fill > 0) this.h.update(this.rec.subarray(0, this.fill));
    this.fill = 0;
  }

  /** Hex sha256, first 32 hex digits. */
  digest(): string {
    this.flush();
    return this.h.copy().digest('hex').slice(0, 32);
  }
}

/** Operation codes in the digest. */
export const enum DOp { WRITE = 1, ZERO = 2, READ = 3, TRUNCATE = 4, EPOCH = 5 }
