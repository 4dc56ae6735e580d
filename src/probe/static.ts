// Static facts about the filesystem behind a directory: what it is, where it is mounted, its
// identity, the kernel, O_DIRECT alignment, the usable I/O backends, and what the 'auto'
// workaround policy would decide there. Nothing here races anything; the only write is one
// empty scratch file (for the O_DIRECT alignment), inside the probe's scratch directory.
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsc, existsSync, openSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { release as osRelease } from 'node:os';
import { join } from 'node:path';
import { loadAddon } from '../addon.js';
import { decideWorkaround, kernelHasXfsFix, mountOf, parseMountinfo, statfsName, type FsResolution, type MountEntry, type WorkaroundDecision } from '../policy.js';
export { parseMountinfo };
import { haveCommand } from '../volume.js';
import type { ProbeResult } from '../types.js';
import type { Scratch } from './scratch.js';

export type { MountEntry } from '../policy.js';

export interface StaticFacts {
  /** The directory probed (PATH, or its parent directory when PATH is a file). */
  dir: string;
  realpath: string;
  fs: { name: string; magic: string };
  /** The mount holding the directory: the longest mount point that is a prefix of the realpath. */
  mount: (MountEntry & { devMatches: boolean }) | null;
  /** st_dev of the directory as major:minor. */
  device: string;
  uuid: { value: string | null; source: string };
  /** What the probe cache is keyed by: "uuid:..." or "dev:MAJ:MIN". */
  fsId: string;
  kernel: { release: string; fixed: boolean; why: string };
  directIo: { supported: boolean | null; offset: number | null; mem: number | null; source: string };
  backends: {
    ioUringDisabled: number;
    ioUringDisabledMeaning: string;
    ioUring: ProbeResult['ioUring'];
    libaio: ProbeResult['libaio'];
    sync: { ok: true; reason: string };
  };
  /** What xfsWorkaround: 'auto' would decide for a file here, and the rule that fired. */
  auto: WorkaroundDecision;
}

/** The mount of `real` (a resolved path): src/policy.ts mountOf, which the workaround decision uses too. */
export const mountFor = mountOf;

export function devOf(dev: bigint): { major: number; minor: number; text: string } {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor, text: `${major}:${minor}` };
}

function tryRun(cmd: string, args: string[]): string | null {
  if (!haveCommand(cmd)) return null;
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 }).trim();
  } catch {
    return null;
  }
}

/** The filesystem UUID of a block device, and where it came from. */
export function fsUuid(source: string, fstype: string): { value: string | null; source: string } {
  if (!source.startsWith('/dev/')) return { value: null, source: `none: the mount source "${source}" is not a block device` };
  const tried: string[] = [];
  for (const args of [['-s', 'UUID', '-o', 'value', source], ['-p', '-s', 'UUID', '-o', 'value', source]]) {
    const v = tryRun('blkid', args);
    if (v) return { value: v, source: `blkid ${args.join(' ')}` };
    tried.push(`blkid ${args[0] === '-p' ? '-p ' : ''}`.trim());
  }
  try {
    const real = realpathSync(source);
    const byUuid = '/dev/disk/by-uuid';
    if (existsSync(byUuid)) {
      for (const name of readdirSync(byUuid)) {
        try { if (realpathSync(join(byUuid, name)) === real) return { value: name, source: `${byUuid}/${name}` }; } catch { /* dangling */ }
      }
    }
    tried.push(byUuid);
  } catch { /* source vanished */ }
  if (fstype === 'xfs') {
    const v = tryRun('xfs_admin', ['-u', source]);
    const m = v ? /UUID\s*=\s*([0-9a-f-]{36})/i.exec(v) : null;
    if (m) return { value: m[1], source: `xfs_admin -u ${source}` };
    tried.push('xfs_admin -u');
  }
  return { value: null, source: `none found (tried ${tried.join(', ')}; blkid usually needs root)` };
}

/** Logical block size of the device behind st_dev from sysfs (a partition's is its disk's). */
export function logicalBlockSize(majorMinor: string): number | null {
  for (const p of [`/sys/dev/block/${majorMinor}/queue/logical_block_size`, `/sys/dev/block/${majorMinor}/../queue/logical_block_size`]) {
    try { const n = Number(readFileSync(p, 'utf8').trim()); if (n > 0) return n; } catch { /* try next */ }
  }
  return null;
}

const IO_URING_DISABLED = ['0: io_uring is available to all processes', '1: io_uring is restricted to the io_uring_group (and CAP_SYS_ADMIN)', '2: io_uring is disabled for everyone'];

export interface Identity {
  realpath: string;
  fs: string;
  magic: number;
  /** The layers under a stacking filesystem, for decideWorkaround(). */
  resolution: FsResolution;
  mount: StaticFacts['mount'];
  device: string;
  uuid: StaticFacts['uuid'];
  fsId: string;
}

/** Which filesystem `dir` is on: statfs, mountinfo, st_dev and the UUID (the probe cache key). */
export function identify(dir: string): Identity {
  const real = realpathSync(dir);
  const { fs, magic, resolution } = statfsName(real);
  const dev = devOf(statSync(real, { bigint: true }).dev);
  let mount: StaticFacts['mount'] = null;
  try {
    const m = mountFor(real, parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')));
    if (m) mount = { ...m, devMatches: m.majorMinor === dev.text };
  } catch { /* no /proc */ }
  const uuid = mount ? fsUuid(mount.source, mount.fstype) : { value: null, source: 'none: /proc/self/mountinfo unavailable' };
  const fsId = uuid.value ? `uuid:${uuid.value}` : `dev:${dev.text}`;
  return { realpath: real, fs, magic, resolution, mount, device: dev.text, uuid, fsId };
}

/**
 * Gathers the static facts for `dir` (an existing directory). With a scratch directory, the
 * O_DIRECT alignment comes from statx STATX_DIOALIGN on a scratch file opened O_DIRECT;
 * without one (read-only directory) from the device's logical block size.
 */
export function staticFacts(dir: string, scratch: Scratch | null, kernelRelease?: string): StaticFacts {
  const addon = loadAddon();
  const probe = addon.probe();
  const release = kernelRelease ?? (probe.kernel || osRelease());
  const id = identify(dir);
  const { fs, magic, resolution, mount, uuid, fsId } = id;
  const real = id.realpath;
  const dev = { text: id.device };
  const k = kernelHasXfsFix(release);

  let directIo: StaticFacts['directIo'];
  const lbs = logicalBlockSize(dev.text);
  const lbsFallback = (why: string): StaticFacts['directIo'] => lbs !== null
    ? { supported: null, offset: lbs, mem: lbs, source: `logical block size of ${dev.text} from sysfs (${why})` }
    : { supported: null, offset: null, mem: null, source: `unknown (${why}, and ${dev.text} is not a block device in sysfs)` };
  if (scratch === null) {
    directIo = lbsFallback('no scratch file: the directory is not writable');
  } else {
    let fd = -1;
    try {
      fd = openSync(scratch.file('dio-align'), fsc.O_RDWR | fsc.O_CREAT | fsc.O_DIRECT, 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      directIo = code === 'EINVAL'
        ? { supported: false, offset: null, mem: null, source: 'open(O_DIRECT) failed with EINVAL: this filesystem has no O_DIRECT' }
        : lbsFallback(`open(O_DIRECT) of a scratch file failed with ${code}`);
    }
    if (fd >= 0) {
      try {
        const a = addon.dioAlign(fd);
        if (a !== null) directIo = { supported: true, offset: a.offset, mem: a.mem, source: 'statx STATX_DIOALIGN on a scratch file opened O_DIRECT' };
        else {
          directIo = lbsFallback('statx reports no STATX_DIOALIGN here');
          directIo.supported = true;
          if (lbs === null) { directIo.offset = directIo.mem = 512; directIo.source = `512 assumed: O_DIRECT opens, statx reports no STATX_DIOALIGN and ${dev.text} has no block device in sysfs`; }
        }
      } finally { closeSync(fd); }
    }
  }

  return {
    dir, realpath: real,
    fs: { name: fs, magic: '0x' + magic.toString(16) },
    mount, device: dev.text, uuid, fsId,
    kernel: { release, fixed: k.fixed, why: k.why },
    directIo: directIo!,
    backends: {
      ioUringDisabled: probe.ioUringDisabled,
      ioUringDisabledMeaning: IO_URING_DISABLED[probe.ioUringDisabled] ?? `${probe.ioUringDisabled}: unknown value`,
      ioUring: probe.ioUring,
      libaio: probe.libaio,
      sync: { ok: true, reason: 'pread/pwrite on the worker threads: always available' },
    },
    auto: decideWorkaround('auto', magic, release, false, resolution),
  };
}
