// The probe's scratch subdirectory: the only place it ever writes. Created with mkdtemp inside
// the target directory, removed in a finally block, and also from an 'exit' or signal handler
// so that Ctrl-C during a race does not leave files behind.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface Scratch {
  dir: string;
  /** A path inside the scratch directory (never outside it). */
  file(name: string): string;
  /** Removes the directory and everything in it. Idempotent, synchronous. */
  remove(): void;
}

const live = new Set<Scratch>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  const all = (): void => { for (const s of [...live]) s.remove(); };
  process.on('exit', all);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      all();
      // Other handlers (volume.ts) may also be installed and exit; if none is, leave as the
      // default disposition would have.
      if (process.listenerCount(sig) <= 1) process.exit(130);
    });
  }
}

/** Makes `${dir}/.ringfence-probe-XXXXXX`. Throws what mkdtemp throws (EACCES, EROFS, ENOSPC...). */
export function makeScratch(dir: string): Scratch {
  install();
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
      live.delete(s);
      try { rmSync(path, { recursive: true, force: true }); } catch { /* reported by the caller's checks */ }
    },
  };
  live.add(s);
  return s;
}
