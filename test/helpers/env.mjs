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

/**
 * A test that cannot run here must be COUNTED as skipped, not pass by returning early.
 * Decides at definition time: returns `test` when `reason` is falsy, else a function that
 * prints `skip "<name>": <reason>` once and defines the test with uvu's `test.skip`, which
 * uvu reports in its "Skipped:" line. `test` is the uvu suite (`import { test } from 'uvu'`).
 */
export function skipUnless(test, reason) {
  if (!reason) return test;
  return (name, fn) => {
    console.log(`  skip "${name}": ${reason}`);
    test.skip(name, fn);
  };
}

/** Why a loop-mounted XFS volume (src/volume.ts makeXfsVolume) cannot be made here, or null if it can. */
export function xfsVolumeUnavailable(tools = ['mkfs.xfs']) {
  if (!isRoot) return 'needs root (creates a loop-mounted XFS volume)';
  const missing = tools.filter((c) => !haveTool(c));
  if (missing.length) return `${missing.join(', ')} not installed (apt-get install xfsprogs)`;
  if (!existsSync('/dev/loop-control')) return 'no loop devices (/dev/loop-control is missing)';
  return null;
}

function haveTool(cmd) {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d && existsSync(join(d, cmd)));
}

/**
 * The engine mode the mode-agnostic test files run in: RINGFENCE_TEST_MODE=inline (scripts/test.sh
 * runs those files once in each mode) turns `{ workers: N, ... }` into `{ mode: 'inline', ... }`;
 * unset, the options are used as written (mostly worker mode). Options that only make sense
 * for offload workers (faults, an explicit mode) are left alone. Test files only: the library
 * itself reads no such variable.
 */
export const testMode = process.env.RINGFENCE_TEST_MODE === 'inline' ? 'inline' : 'as-written';

export function engineOptions(o = {}) {
  if (testMode !== 'inline' || o.mode !== undefined || o.faults !== undefined) return o;
  const { workers: _w, watchdogMs: _d, spinUs: _s, ...rest } = o;
  return { ...rest, mode: 'inline' };
}

/** Engine.start() with engineOptions() applied. */
export async function startEngine(o) {
  const { Engine } = await import('../../dist/src/index.js');
  return Engine.start(engineOptions(o));
}
