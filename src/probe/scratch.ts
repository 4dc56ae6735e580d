// The probe's scratch subdirectory: the only place it ever writes. Created with mkdtemp inside
// the target directory, removed in a finally block, and also from an 'exit' or signal handler
// so that Ctrl-C during a race does not leave files behind. It holds a run record (pid, command:
// src/cleanup.ts), so that after a SIGKILL the next `ringfence probe` in the same directory
// reports it and `ringfence cleanup DIR` removes it.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { STATE_FILE, atExit, newState, removeTree, writeState } from '../cleanup.js';

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
      if (!/^[A-Za-z0-9._-]+$/.test(name) || name === '.' || name === '..' || name === STATE_FILE) throw new Error(`bad scratch file name ${name}`);
      return join(path, name);
    },
    remove(): void {
      if (removed) return;
      removed = true;
      unregister();
      if (removeTree(path) !== null) {
        try { rmSync(path, { recursive: true, force: true }); } catch { /* reported by the caller's checks */ }
      }
    },
  };
  const unregister = atExit(() => s.remove());
  try { writeState(newState(path, 'probe-scratch')); } catch (err) { s.remove(); throw err; }
  return s;
}
