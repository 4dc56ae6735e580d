// Where a job runs: a temporary loop-mounted XFS volume, an existing directory, or a temp
// directory. Shared by every CLI command. Cleanup is synchronous so that it can run from a
// signal handler, an 'exit' handler or a finally block alike, and it is idempotent.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { statfsName } from './policy.js';
import { RingfenceError } from './errors.js';
import { atExit } from './cleanup.js';

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

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function haveCommand(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    if (existsSync(join(dir, cmd))) return true;
  }
  return false;
}

/** Parses sizes such as 512M, 1G, 2GiB, 4096. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(String(text).trim());
  if (!m) throw new RangeError(`bad size "${text}": use a number with an optional K, M, G or T suffix (e.g. 1G)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * mult);
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface XfsOptions {
  /** Keep the image at this path afterwards. */
  image?: string;
  /** Allow mkfs on an existing image file. */
  force?: boolean;
  log?: (line: string) => void;
}

/** Creates an XFS filesystem on an image file and loop-mounts it on a fresh temp directory. */
export function makeXfsVolume(size: number, opts: XfsOptions = {}): Volume {
  if (!isRoot()) {
    throw new RingfenceError('creating a loop-mounted XFS volume needs root: run as root, or pass --dir DIR to use an existing directory', { code: 'ERR_RINGFENCE_NEEDS_ROOT', op: 'xfs' });
  }
  for (const cmd of ['mkfs.xfs', 'mount', 'umount', 'losetup']) {
    if (!haveCommand(cmd)) throw new RingfenceError(`${cmd} not found: install xfsprogs and mount (scripts/setup.sh does), or pass --dir DIR`, { code: 'ERR_RINGFENCE_MISSING_TOOL', op: 'xfs' });
  }
  if (size < 300 * 1024 * 1024) throw new RangeError(`XFS needs at least 300M; got ${size} bytes`);
  const work = mkdtempSync(join(tmpdir(), 'ringfence-'));
  const keep = opts.image !== undefined;
  const image = keep ? resolve(opts.image!) : join(work, 'xfs.img');
  const mnt = join(work, 'mnt');
  let mounted = false;
  let cleaned = false;
  const vol: Volume = {
    dir: mnt, fs: 'xfs', kind: 'xfs-loop', image,
    note: `a temporary ${Math.round(size / 2 ** 20)} MiB XFS volume on a loop device (image ${image}${keep ? ', kept afterwards' : ''}), removed afterwards`,
    cleanup(): void {
      if (cleaned) return;
      cleaned = true;
      unregister();
      if (mounted) {
        // mount -o loop sets the loop device to autoclear: unmounting detaches it.
        try { run('umount', [mnt]); } catch { try { run('umount', ['-l', mnt]); } catch { /* reported below */ } }
        if (vol.loopDevice) { try { run('losetup', ['-d', vol.loopDevice]); } catch { /* already detached */ } }
      }
      if (!keep) rmSync(work, { recursive: true, force: true });
      else rmSync(mnt, { recursive: true, force: true });
    },
  };
  const unregister = atExit(() => vol.cleanup());
  try {
    if (keep && existsSync(image)) {
      const st = statSync(image);
      if (st.isBlockDevice()) throw new RingfenceError(`${image} is a block device: ringfence never runs mkfs on a block device; give an image file path`, { code: 'ERR_RINGFENCE_REFUSED', op: 'xfs', path: image });
      if (!opts.force) throw new RingfenceError(`${image} exists: pass --force to overwrite it with a new XFS filesystem`, { code: 'ERR_RINGFENCE_REFUSED', op: 'xfs', path: image });
      rmSync(image);
    }
    mkdirSync(mnt);
    writeFileSync(image, '');
    truncateSync(image, size);
    opts.log?.(`mkfs.xfs ${image} (${Math.round(size / 2 ** 20)} MiB)`);
    run('mkfs.xfs', ['-q', '-f', image]);
    run('mount', ['-o', 'loop', image, mnt]);
    mounted = true;
    vol.loopDevice = loopFor(mnt);
    return vol;
  } catch (err) {
    vol.cleanup();
    if (err instanceof RingfenceError) throw err;
    const e = err as { stderr?: string; message: string };
    throw new RingfenceError(`could not create the XFS volume: ${(e.stderr || e.message).trim()}; pass --dir DIR to use an existing directory instead`, { code: 'ERR_RINGFENCE_SETUP', op: 'xfs', cause: err });
  }
}

function loopFor(mnt: string): string | undefined {
  try {
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [src, dst] = line.split(' ');
      if (dst === mnt && src.startsWith('/dev/loop')) return src;
    }
  } catch { /* no /proc */ }
  return undefined;
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

/** A temp directory on the current filesystem. */
export function tempVolume(why: string): Volume {
  const base = existsSync('/var/tmp') ? '/var/tmp' : tmpdir();
  const dir = mkdtempSync(join(base, 'ringfence-'));
  const { fs } = statfsName(dir);
  let cleaned = false;
  const vol: Volume = {
    dir, fs, kind: 'tempdir',
    note: `a temporary directory ${dir} on ${fs}: NOT an XFS volume, because ${why}`,
    cleanup(): void { if (!cleaned) { cleaned = true; unregister(); rmSync(dir, { recursive: true, force: true }); } },
  };
  const unregister = atExit(() => vol.cleanup());
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
