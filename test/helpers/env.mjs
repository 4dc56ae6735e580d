// Test helpers: a scratch directory that supports O_DIRECT, deterministic data, node:fs checks.
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

export function scratchDir(prefix = 'rf-test-') {
  // /tmp may be tmpfs (no O_DIRECT); /var/tmp normally sits on the root filesystem.
  const base = existsSync('/var/tmp') ? '/var/tmp' : tmpdir();
  const dir = mkdtempSync(join(base, prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** xorshift32: deterministic pseudo-random numbers for offsets and contents. */
export function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
}

export function pattern(len, seed) {
  const r = rng(seed);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE(r(), i < len - 3 ? i : len - 4);
  return b;
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * The backends this machine can run (sync always), from the addon's probe; prints why the
 * others are skipped. `probe` is `loadAddon().probe()`.
 */
export function availableBackends(probe) {
  return ['io_uring', 'libaio', 'sync'].filter((b) => {
    const ok = b === 'sync' || (b === 'io_uring' ? probe.ioUring.ok : probe.libaio.ok);
    if (!ok) console.log(`skip backend ${b}: ${b === 'io_uring' ? probe.ioUring.reason : probe.libaio.reason}`);
    return ok;
  });
}
