// The probe's scratch subdirectory: the only place it ever writes. Created with mkdtemp inside
// the target directory, removed in a finally block, and also from an 'exit' or signal handler
// so that Ctrl-C during a race does not leave files behind.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { atExit } from '../cleanup.js';

export interface Scratch {
  dir: string;
  /** A path inside the scratch directory (never outside it). */
  file(name: string): string;
  /** Removes the directory and everything in it. Idempotent, synchronous. */
  remove(): void;
}

/** Makes `${dir}/.ringfence-probe-XXXXXX`. Throws what mkdtemp throws (EACCES, EROFS, ENOSPC...). */
export function makeScratch(dir: string): Scratch {
  const path = mkdtempSync(join(dir, '.ringfence-probe-'));
  let removed = false;
  const s: Scratch = {
    dir: path,
    file(name: string): string {
      if (!/^[A-Za-z0-9._-]+$/.test(name) || name === '.' || name === '..') throw new Error(`bad scratch file name ${name}`);
      return join(path, name);
    },
    remove(): void {
      if (removed) return;
      removed = true;
      unregister();
      try { rmSync(path, { recursive: true, force: true }); } catch { /* reported by the caller's checks */ }
    },
  };
  const unregister = atExit(() => s.remove());
  return s;
}
