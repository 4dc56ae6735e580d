// Shared pieces of the end-to-end benchmarks: the data file, random offsets, timing.
import { closeSync, fsyncSync, openSync, writeSync, constants as fsc } from 'node:fs';
import { execFileSync } from 'node:child_process';

/** Creates (or reuses) a data file of `size` bytes with written (not sparse) data. */
export function prepareFile(path: string, size: number): void {
  const fd = openSync(path, fsc.O_CREAT | fsc.O_WRONLY, 0o644);
  try {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    for (let off = 0; off < size; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
    // Written and clean: O_DIRECT writes over dirty page cache would measure writeback.
    fsyncSync(fd);
  } finally { closeSync(fd); }
  try { execFileSync('sh', ['-c', 'echo 1 > /proc/sys/vm/drop_caches'], { stdio: 'ignore' }); } catch { /* not root */ }
}

/** xorshift32 stream of block indexes. */
export function blockStream(seed: number, blocks: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s % blocks; };
}
