// The benchmark's data file: written (not sparse, no unwritten extents) and synced, then read
// once end to end. The read matters on loop devices, whose backing file is cached by the host:
// without it, whichever engine runs first pays for a cold cache and the comparison is unfair.
import { closeSync, fsyncSync, openSync, readSync, writeSync, constants as fsc } from 'node:fs';

export function prepareDataFile(path: string, size: number, write = true): void {
  const fd = openSync(path, fsc.O_CREAT | fsc.O_RDWR, 0o644);
  try {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    if (write) {
      for (let off = 0; off < size; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
      fsyncSync(fd);
    }
    for (let off = 0; off < size; off += chunk.length) readSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
  } finally { closeSync(fd); }
}
