// The benchmark's data file: written (not sparse, not unwritten extents), synced, and out of
// the page cache, so that reads hit the device and O_DIRECT writes do not measure writeback.
import { closeSync, fsyncSync, openSync, writeSync, constants as fsc } from 'node:fs';
import { execFileSync } from 'node:child_process';

export function prepareDataFile(path: string, size: number): void {
  const fd = openSync(path, fsc.O_CREAT | fsc.O_WRONLY, 0o644);
  try {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    for (let off = 0; off < size; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
    fsyncSync(fd);
  } finally { closeSync(fd); }
  // Dropping clean caches needs root; without it reads may be served from the cache at first.
  try { execFileSync('sh', ['-c', 'echo 1 > /proc/sys/vm/drop_caches'], { stdio: 'ignore' }); } catch { /* not root */ }
}
