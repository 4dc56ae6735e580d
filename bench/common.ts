// Shared pieces of the end-to-end benchmarks: the data file, random offsets, timing.
import { closeSync, openSync, writeSync, constants as fsc } from 'node:fs';

/** Creates (or reuses) a data file of `size` bytes with written (not sparse) data. */
export function prepareFile(path: string, size: number): void {
  const fd = openSync(path, fsc.O_CREAT | fsc.O_WRONLY, 0o644);
  try {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    for (let off = 0; off < size; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
  } finally { closeSync(fd); }
}

/** xorshift32 stream of block indexes. */
export function blockStream(seed: number, blocks: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s % blocks; };
}
