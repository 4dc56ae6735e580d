// Where a job runs: a temporary loop-mounted XFS volume, an existing directory, or a temp
// directory. Shared by every CLI command. Cleanup is synchronous so that it can run from a
// signal handler, an 'exit' handler or a finally block alike, and it is idempotent.
//
// Every temporary directory made here holds a run record (src/cleanup.ts: pid, image, mount
// point, loop device), written before anything else is created in it, so that what a killed
// run leaves behind is found by the next one and removed by `ringfence cleanup`.
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, statfsSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { statfsName } from './policy.js';
import { RingfenceError } from './errors.js';
import { UsageError, bad, dirArg, exclusive, formatSize, outputFileArg, requires, sizeArg } from './args.js';
import {
  atExit, haveCommand, isRoot, loopDevices, mounts, newState, removeLeftover, removeTree, runTool, writeState, type RunState,
} from './cleanup.js';

export { parseSize } from './args.js';
export { haveCommand, isRoot } from './cleanup.js';

export interface Volume {
  /** Directory to work in. */
  dir: string;
  /** Filesystem name (statfs). */
  fs: string;
  kind: 'xfs-loop' | 'dir' | 'tempdir';
  /** One plain sentence for the user: where this runs and, for a fallback, why. */
  note: string;
  image?: string;
  loopDevice?: string;
  /** Unmounts, detaches and deletes what was created. Safe to call twice. */
  cleanup(): void;
}

/** mkfs.xfs (xfsprogs 5.19 and later) refuses filesystems smaller than 300 MiB. */
export const XFS_MIN_BYTES = 300 * 2 ** 20;
export const XFS_MAX_BYTES = 2 ** 40;

/** About how many bytes a fresh XFS filesystem of `size` bytes has free (measured: 300M -> 219 MiB). */
export function xfsFreeEstimate(size: number): number {
  return Math.max(0, Math.floor(size * 0.9 - 64 * 2 ** 20));
}

const XFS_TOOLS = ['mkfs.xfs', 'mount', 'umount', 'losetup'];

export interface XfsOptions {
  /** Keep the image at this path afterwards. */
  image?: string;
  /** Allow mkfs on an existing image file. */
  force?: boolean;
  log?: (line: string) => void;
}

function warn(line: string): void {
  try { process.stderr.write(line + '\n'); } catch { /* stderr closed */ }
}

/** Removes what a run record describes (this process's own volume); complains on stderr if it cannot. */
function teardown(state: RunState): void {
  // mount -o loop sets the loop device to autoclear: the unmount normally detaches it. A loop
  // device still backed by the image afterwards (a lazy unmount, a mount killed halfway) is
  // detached explicitly.
  const r = removeLeftover({
    dir: state.dir, kind: state.kind, state, owner: 'alive', ownerWhy: 'this process', ageMs: 0, image: null,
    mounts: state.mountPoint && mounts().some((m) => m.target === state.mountPoint) ? [state.mountPoint] : [],
    loops: state.image ? loopDevices().filter((d) => d.backing === state.image) : [],
  }, { tries: 3, delayMs: 100 });
  if (r.errors.length) warn(`ringfence: could not clean up everything: ${r.errors.join('; ')}; run \`ringfence cleanup\` once nothing uses it`);
}

/** Creates an XFS filesystem on an image file and loop-mounts it on a fresh temp directory. */
export function makeXfsVolume(size: number, opts: XfsOptions = {}): Volume {
  if (!isRoot()) {
    throw new RingfenceError('creating a loop-mounted XFS volume needs root: run as root, or pass --dir DIR to use an existing directory', { code: 'ERR_RINGFENCE_NEEDS_ROOT', op: 'xfs' });
  }
  for (const cmd of XFS_TOOLS) {
    if (!haveCommand(cmd)) throw new RingfenceError(`${cmd} not found: install xfsprogs and mount (scripts/setup.sh does), or pass --dir DIR`, { code: 'ERR_RINGFENCE_MISSING_TOOL', op: 'xfs' });
  }
  if (size < XFS_MIN_BYTES) throw new RangeError(`XFS needs at least 300M; got ${size} bytes`);
  const keep = opts.image !== undefined;
  const image0 = keep ? resolve(opts.image!) : '';
  // Refusals first: nothing is created for a run that cannot start.
  if (keep && existsSync(image0)) {
    const st = statSync(image0);
    if (st.isBlockDevice()) throw new RingfenceError(`${image0} is a block device: ringfence never runs mkfs on a block device; give an image file path`, { code: 'ERR_RINGFENCE_REFUSED', op: 'xfs', path: image0 });
    if (!st.isFile()) throw new RingfenceError(`${image0} is not a regular file: give an image file path`, { code: 'ERR_RINGFENCE_REFUSED', op: 'xfs', path: image0 });
    if (!opts.force) throw new RingfenceError(`${image0} exists: pass --force to overwrite it with a new XFS filesystem`, { code: 'ERR_RINGFENCE_REFUSED', op: 'xfs', path: image0 });
  }
  if (keep && !existsSync(dirname(image0))) throw new RingfenceError(`${dirname(image0)} does not exist: create it, or give another image path`, { code: 'ENOENT', op: 'xfs', path: image0 });
  const work = mkdtempSync(join(tmpdir(), 'ringfence-'));
  const image = keep ? image0 : join(work, 'xfs.img');
  const mnt = join(work, 'mnt');
  const state = newState(work, 'xfs-loop', { image, imageKept: keep, imageBytes: size, mountPoint: mnt, loopDevice: null });
  let cleaned = false;
  let createdImage = false;
  const vol: Volume = {
    dir: mnt, fs: 'xfs', kind: 'xfs-loop', image,
    note: `a temporary ${Math.round(size / 2 ** 20)} MiB XFS volume on a loop device (image ${image}${keep ? ', kept afterwards' : ''}), removed afterwards`,
    cleanup(): void {
      if (cleaned) return;
      cleaned = true;
      unregister();
      teardown(state);
    },
  };
  const unregister = atExit(() => vol.cleanup());
  try {
    writeState(state);
    mkdirSync(mnt);
    if (keep) rmSync(image, { force: true });
    writeFileSync(image, '');
    createdImage = true;
    truncateSync(image, size);
    opts.log?.(`mkfs.xfs ${image} (${Math.round(size / 2 ** 20)} MiB)`);
    runTool('mkfs.xfs', ['-q', '-f', image]);
    runTool('mount', ['-o', 'loop', image, mnt]);
    vol.loopDevice = mounts().find((m) => m.target === mnt && m.source.startsWith('/dev/loop'))?.source;
    state.loopDevice = vol.loopDevice ?? null;
    writeState(state);
    return vol;
  } catch (err) {
    vol.cleanup();
    // A kept image that this call created but could not finish is not worth keeping.
    if (keep && createdImage) rmSync(image, { force: true });
    if (err instanceof RingfenceError) throw err;
    const e = err as { stderr?: string; message: string };
    throw new RingfenceError(`could not create the XFS volume: ${(e.stderr || e.message).trim()}; pass --dir DIR to use an existing directory instead`, { code: 'ERR_RINGFENCE_SETUP', op: 'xfs', cause: err });
  }
}

/** An existing directory. */
export function dirVolume(path: string): Volume {
  const dir = resolve(path);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new RingfenceError(`${dir} is not a directory: create it first or pick another --dir`, { code: 'ENOTDIR', op: 'dir', path: dir });
  }
  const { fs } = statfsName(dir);
  return { dir, fs, kind: 'dir', note: `the existing directory ${dir} (${fs})`, cleanup(): void { /* the user's */ } };
}

/** Where tempVolume() puts its directory: /var/tmp (normally on the root filesystem, with O_DIRECT), else TMPDIR. */
export function tempVolumeBase(): string {
  return existsSync('/var/tmp') ? '/var/tmp' : tmpdir();
}

/** A temp directory on the current filesystem. */
export function tempVolume(why: string): Volume {
  const dir = mkdtempSync(join(tempVolumeBase(), 'ringfence-'));
  const state = newState(dir, 'tempdir');
  let cleaned = false;
  const vol: Volume = {
    dir, fs: '', kind: 'tempdir', note: '',
    cleanup(): void {
      if (cleaned) return;
      cleaned = true;
      unregister();
      const err = removeTree(dir);
      if (err) warn(`ringfence: could not remove ${dir}: ${err}; run \`ringfence cleanup\``);
    },
  };
  const unregister = atExit(() => vol.cleanup());
  try {
    writeState(state);
    vol.fs = statfsName(dir).fs;
  } catch (err) { vol.cleanup(); throw err; }
  vol.note = `a temporary directory ${dir} on ${vol.fs}: NOT an XFS volume, because ${why}`;
  return vol;
}

/** The embedded default: a 1 GiB XFS loop volume when root with mkfs.xfs, else a temp directory. */
export function defaultVolume(log?: (line: string) => void, size = 1024 ** 3): Volume {
  if (!isRoot()) return tempVolume('creating a loop-mounted XFS volume needs root (run as root, or pass --dir DIR on an XFS mount)');
  if (!haveCommand('mkfs.xfs')) return tempVolume('mkfs.xfs is not installed (install xfsprogs: scripts/setup.sh does)');
  try {
    return makeXfsVolume(size, { log });
  } catch (err) {
    return tempVolume(`the XFS volume could not be created (${(err as Error).message})`);
  }
}

// ---- the command-line side: --xfs, --dir, --image, --force ------------------------------

export interface VolumeFlags { xfs?: string; dir?: string; image?: string; force?: boolean }

/** A checked choice of volume; nothing exists yet. */
export type VolumeSpec =
  | { kind: 'xfs'; size: number; image?: string; force: boolean }
  | { kind: 'dir'; dir: string }
  | { kind: 'default' };

export interface VolumeCheck {
  /** Whether the command takes --image/--force. */
  image?: boolean;
  /** Bytes the run needs free on the volume, and what needs them ("qcow2-alloc", "--size 512M"). */
  need?: { bytes: number; what: string };
}

/**
 * Checks the volume flags of a command (--xfs SIZE, --dir PATH, and with `image` also --image
 * PATH and --force) and that the run will fit; throws UsageError. Creates nothing.
 */
export function checkVolumeFlags(o: VolumeFlags, c: VolumeCheck = {}): VolumeSpec {
  exclusive({ '--xfs': o.xfs, '--dir': o.dir });
  if (c.image) {
    exclusive({ '--dir': o.dir, '--image': o.image });
    requires('--image', o.image, '--xfs SIZE', o.xfs, 'add --xfs SIZE (the size of the image to create)');
    requires('--force', o.force, '--image PATH', o.image, 'it allows --image to overwrite an existing image file; add --image PATH, or drop --force');
  }
  const need = c.need;
  if (o.xfs !== undefined) {
    const size = sizeArg('--xfs', o.xfs, { min: XFS_MIN_BYTES, max: XFS_MAX_BYTES, multipleOf: 4096, example: '512M', why: 'mkfs.xfs refuses filesystems under 300M' })!;
    if (!isRoot()) bad('--xfs', o.xfs, 'creating a loop-mounted XFS volume needs root', 'run as root, or pass --dir DIR to use an existing directory');
    const missing = XFS_TOOLS.filter((t) => !haveCommand(t));
    if (missing.length) bad('--xfs', o.xfs, `${missing.join(', ')} not found`, 'install xfsprogs and mount (scripts/setup.sh does), or pass --dir DIR');
    const base = tmpdir();
    try { statSync(base); } catch { throw new UsageError(`the temporary directory ${base} (TMPDIR) does not exist: set TMPDIR to an existing directory`); }
    let image: string | undefined;
    if (o.image !== undefined) {
      const p = resolve(String(o.image));
      if (existsSync(p) && statSync(p).isBlockDevice()) bad('--image', o.image, `${p} is a block device`, 'ringfence never runs mkfs on a block device; give an image file path');
      image = outputFileArg('--image', o.image, { allowExisting: o.force === true, replace: true, existingFix: 'pass --force to overwrite it with a new XFS filesystem, or give another path' });
    }
    if (need && need.bytes > xfsFreeEstimate(size)) {
      const want = Math.ceil((need.bytes + 64 * 2 ** 20) / 0.9 / 2 ** 20 / 64) * 64;
      bad('--xfs', o.xfs, `a ${formatSize(size)} XFS volume has about ${mb(xfsFreeEstimate(size))} free, but ${need.what} needs about ${mb(need.bytes)}`, `give --xfs ${want}M or more`);
    }
    return { kind: 'xfs', size, image, force: o.force === true };
  }
  if (o.dir !== undefined) {
    const dir = dirArg('--dir', o.dir, { writable: true })!;
    if (need) {
      const st = statfsSync(dir);
      const free = Number(st.bavail) * Number(st.bsize);
      if (free < need.bytes) bad('--dir', o.dir, `${dir} has ${mb(free)} free, but ${need.what} needs about ${mb(need.bytes)}`, 'free some space, or give another --dir (or --xfs SIZE)');
    }
    return { kind: 'dir', dir };
  }
  return { kind: 'default' };
}

function mb(n: number): string { return `${(n / 2 ** 20).toFixed(0)} MiB`; }

/** Creates the volume a checked spec describes. */
export function openVolume(spec: VolumeSpec, log?: (line: string) => void): Volume {
  switch (spec.kind) {
    case 'xfs': return makeXfsVolume(spec.size, { image: spec.image, force: spec.force, log });
    case 'dir': return dirVolume(spec.dir);
    case 'default': return defaultVolume(log);
  }
}
