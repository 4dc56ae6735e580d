// Does this file need the XFS post-EOF zero-write workaround? (The RFC's open question.)
// Linux before 5.5 let fallocate() past EOF race with AIO+O_DIRECT writes past EOF on XFS:
// fallocate computed the new size, waited for in-flight DIO, then set the size, truncating
// away what a racing write had appended. Fixed by 249bd9087a52 (v5.5), backported to 5.4.y.
//
// The filesystem that matters is the one that holds the data. A stacking filesystem (overlay,
// ecryptfs, shiftfs, aufs, unionfs, sdcardfs) hands writes, fallocate and O_DIRECT to a file
// on another filesystem: Docker/Podman overlay on XFS with a pre-5.5 kernel has the race.
// So for those, statfsName() finds the mount in /proc/self/mountinfo, reads where the data
// goes (overlay: upperdir=; aufs/unionfs: the writable branches; the others: the mount
// source) and statfs()es that; when it cannot, the lower filesystem is unknown and 'auto'
// treats it like any unknown filesystem: the workaround stays on.
import { readFileSync, realpathSync, statfsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { WorkaroundPolicy } from './types.js';

/** statfs f_type magics (linux/magic.h and filesystems' own headers). */
export const FS_MAGIC: Record<number, string> = {
  0x58465342: 'xfs',
  0xef53: 'ext4',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x858458f6: 'ramfs',
  0x6969: 'nfs',
  0xff534d42: 'cifs',
  0xfe534d42: 'smb2',
  0x517b: 'smb',
  0x00c36400: 'ceph',
  0x65735546: 'fuse',
  0x01021997: 'v9fs',
  0x6a656a63: 'virtiofs', // reported by virtiofs as FUSE_SUPER_MAGIC on most kernels; kept for completeness
  0x2fc12fc1: 'zfs',
  0xf2f52010: 'f2fs',
  0x4d44: 'vfat',
  0x5346544e: 'ntfs',
  0x3153464a: 'jfs',
  0x52654973: 'reiserfs',
  0x794c7630: 'overlayfs',
  0xf15f: 'ecryptfs',
  0x6a656a62: 'shiftfs', // Ubuntu's out-of-tree shiftfs
  0x61756673: 'aufs',
  0xf15f083d: 'unionfs',
  0x5dca2df5: 'sdcardfs', // Android
  0x73717368: 'squashfs',
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x47504653: 'gpfs',
  0x0bd00bd0: 'lustre',
  0xbacbacbc: 'vxfs',
  0x7461636f: 'ocfs2',
  0x01161970: 'gfs2',
};

/** Filesystems whose data lives on another machine (or behind FUSE): the kernel that matters is unknown. */
const REMOTE = new Set(['nfs', 'cifs', 'smb2', 'smb', 'ceph', 'fuse', 'v9fs', 'virtiofs', 'gpfs', 'lustre', 'ocfs2', 'gfs2']);
/** Local filesystems without the bug (it was XFS's iomap DIO + fallocate locking). */
const LOCAL_SAFE = new Set(['ext4', 'btrfs', 'tmpfs', 'ramfs', 'f2fs', 'zfs', 'vfat', 'ntfs', 'jfs', 'reiserfs', 'squashfs']);
/**
 * Stacking filesystems: the data, fallocate and O_DIRECT go to a file on a lower filesystem,
 * which decides. Never safe by themselves. (FUSE, passthrough included, is in REMOTE: the
 * daemon decides where the data goes and nothing tells us which filesystem that is.)
 */
const STACKING = new Set(['overlayfs', 'ecryptfs', 'shiftfs', 'aufs', 'unionfs', 'sdcardfs']);
/** mountinfo fstype -> statfs name, for the stacking filesystems. */
const STACKING_FSTYPE: Record<string, string> = {
  overlay: 'overlayfs', overlayfs: 'overlayfs', ecryptfs: 'ecryptfs', shiftfs: 'shiftfs', aufs: 'aufs', unionfs: 'unionfs', sdcardfs: 'sdcardfs',
};
/** How deep stacking filesystems are followed (overlay on overlay on ...). */
const MAX_STACK_DEPTH = 8;

export interface KernelVersion { major: number; minor: number; patch: number }

export function parseKernelRelease(release: string): KernelVersion | null {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release);
  return m ? { major: +m[1], minor: +m[2], patch: m[3] ? +m[3] : 0 } : null;
}

/** Fixed in mainline 5.5 (249bd9087a52), and in the 5.4.y stable series from its backport (36f11775da75, 5.4.2). */
export function kernelHasXfsFix(release: string): { fixed: boolean; why: string } {
  const v = parseKernelRelease(release);
  if (v === null) return { fixed: false, why: `kernel release "${release}" not understood: assuming the fix is missing` };
  if (v.major > 5 || (v.major === 5 && v.minor >= 5)) return { fixed: true, why: `kernel ${release} >= 5.5 contains 249bd9087a52` };
  if (v.major === 5 && v.minor === 4 && v.patch >= 2) return { fixed: true, why: `kernel ${release} is 5.4.y with the stable backport (5.4.2+)` };
  return { fixed: false, why: `kernel ${release} predates the fix (mainline 5.5, 5.4.2 backport)` };
}

export interface WorkaroundDecision {
  enabled: boolean;
  policy: WorkaroundPolicy;
  fs: string;
  magic: string;
  kernel: string;
  emulated: boolean;
  rule: string;
  /** With policy 'probe': the dynamic check's verdict and whether it came from the cache. */
  probe?: { cached: boolean; verdict: string | null };
  /** For a stacking filesystem: what holds the data, as found (see resolveFs). */
  stack?: StackSummary;
}

/** file.info().xfsWorkaround.stack: a stacking filesystem and what was found under it. */
export interface StackSummary {
  /** e.g. "overlay over xfs (upperdir /var/lib/docker/overlay2/abc/diff)". */
  description: string;
  /** The filesystem(s) under it, comma-separated (nested stacking followed), or null if unknown. */
  lowerFs: string | null;
  /** Why the lower filesystem is unknown, if it is. */
  unknown: string | null;
}

/** One line of /proc/self/mountinfo (proc(5)), with the octal escapes undone. */
export interface MountEntry {
  mountId: number;
  parentId: number;
  majorMinor: string;
  root: string;
  point: string;
  options: string;
  fstype: string;
  source: string;
  superOptions: string;
}

/** What holds a path's data: its statfs filesystem and, for a stacking one, the layers below. */
export interface FsResolution {
  fs: string;
  magic: number;
  /** For a stacking, network or FUSE filesystem: its mount, when found in /proc/self/mountinfo. */
  mount?: { fstype: string; point: string };
  /** Set for a stacking filesystem. */
  stack?: StackInfo;
}

export interface StackInfo {
  /** Where the data goes, each resolved in turn (it may be stacked too). Empty when unknown. */
  lower: { role: string; path: string; fs: FsResolution }[];
  /** Why the filesystem under it is unknown; null when every lower directory was resolved. */
  unknown: string | null;
}

/** What resolveFs() reads; replaceable for tests. */
export interface ResolveDeps {
  statfs(path: string): { type: number; bsize: number; blocks: number; files: number };
  mountinfo(): string;
  realpath(path: string): string;
  readFile(path: string): string;
}

const realDeps: ResolveDeps = {
  statfs: (path) => {
    const s = statfsSync(path);
    return { type: Number(s.type), bsize: Number(s.bsize), blocks: Number(s.blocks), files: Number(s.files) };
  },
  mountinfo: () => readFileSync('/proc/self/mountinfo', 'utf8'),
  realpath: (path) => realpathSync(path),
  readFile: (path) => readFileSync(path, 'utf8'),
};

/** Undoes the kernel's octal escapes in mountinfo fields and options (\040 space, \011 tab, \012 newline, \134 backslash, \054 comma). */
export function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses /proc/self/mountinfo. Fields are space-separated (spaces inside are \040). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const f = line.split(' ');
    // Optional fields (shared:N master:N ...) between the mount options and the "-".
    const dash = f.indexOf('-', 6);
    if (dash < 0 || f.length < dash + 3) continue;
    out.push({
      mountId: Number(f[0]), parentId: Number(f[1]), majorMinor: f[2], root: unescapeMountField(f[3]), point: unescapeMountField(f[4]),
      options: f[5], fstype: unescapeMountField(f[dash + 1]), source: unescapeMountField(f[dash + 2]), superOptions: f[dash + 3] ?? '',
    });
  }
  return out;
}

/**
 * Splits super options ("rw,lowerdir=/a,upperdir=/b\054c") at the commas, then undoes the
 * escapes: the kernel escapes commas, spaces, tabs, newlines and backslashes in option values
 * (seq_show_option), so a raw comma always separates options. Keys may repeat (lowerdir+).
 */
export function parseSuperOptions(text: string): [string, string | null][] {
  const out: [string, string | null][] = [];
  for (const opt of text.split(',')) {
    if (opt === '') continue;
    const eq = opt.indexOf('=');
    out.push(eq < 0 ? [unescapeMountField(opt), null] : [unescapeMountField(opt.slice(0, eq)), unescapeMountField(opt.slice(eq + 1))]);
  }
  return out;
}

/** The mount whose mount point is the longest prefix of `real` (a resolved path); of mounts stacked on one point, the last (topmost). */
export function mountOf(real: string, entries: MountEntry[]): MountEntry | null {
  let best: MountEntry | null = null;
  for (const m of entries) {
    const p = m.point;
    const under = p === '/' || real === p || real.startsWith(p.endsWith('/') ? p : p + '/');
    if (under && (best === null || p.length >= best.point.length)) best = m;
  }
  return best;
}

/** aufs/unionfs branch lists: "/a=rw:/b=ro+wh" -> the writable branch paths, top first. */
export function writableBranches(list: string): string[] {
  const out: string[] = [];
  for (const br of list.split(':')) {
    const eq = br.lastIndexOf('=');
    const path = eq < 0 ? br : br.slice(0, eq), perm = eq < 0 ? 'ro' : br.slice(eq + 1);
    if (path !== '' && /^rw/.test(perm)) out.push(path);
  }
  return out;
}

function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? e?.message ?? String(err);
}

/**
 * What holds the data of `path`: statfs, and for a stacking filesystem the layer that
 * receives writes, found through /proc/self/mountinfo and resolved in turn. Throws only if
 * statfs(path) itself fails; anything else it cannot read makes the lower filesystem unknown.
 */
export function resolveFs(path: string, deps: ResolveDeps = realDeps, depth = 0): FsResolution {
  const st = deps.statfs(path);
  const magic = st.type >>> 0;
  const fs = fsNameOf(magic);
  if (!STACKING.has(fs) && !REMOTE.has(fs)) return { fs, magic };
  const res: FsResolution = { fs, magic };
  // Network and FUSE filesystems stay unknown whatever is found: the mount only names them.
  const stack: StackInfo = { lower: [], unknown: null };
  if (STACKING.has(fs)) res.stack = stack;
  const unknown = (why: string): FsResolution => { stack.lower = []; stack.unknown = why; return res; };
  let entries: MountEntry[];
  try { entries = parseMountinfo(deps.mountinfo()); } catch (err) {
    return unknown(`/proc/self/mountinfo could not be read (${errText(err)})`);
  }
  let real: string;
  try { real = deps.realpath(path); } catch { real = resolve(path); }
  const m = mountOf(real, entries);
  if (m === null) return unknown(`no mount in /proc/self/mountinfo holds ${real}`);
  if (res.stack && STACKING_FSTYPE[m.fstype] !== fs) return unknown(`statfs says ${fs} but the mount holding ${real} is ${m.fstype} at ${m.point}`);
  res.mount = { fstype: m.fstype, point: m.point };
  if (!res.stack) return res;
  if (depth >= MAX_STACK_DEPTH) return unknown(`stacked more than ${MAX_STACK_DEPTH} deep`);

  const opts = parseSuperOptions(m.superOptions);
  const opt = (key: string): string | null => { for (const [k, v] of opts) if (k === key) return v; return null; };
  let dirs: { role: string; path: string }[];
  if (fs === 'overlayfs') {
    const upper = opt('upperdir');
    if (upper === null) return unknown('no upperdir: a read-only overlay, its lower layers are not judged');
    dirs = [{ role: 'upperdir', path: upper }];
  } else if (fs === 'aufs' || fs === 'unionfs') {
    // Branches in the options (br:/br=/dirs=), or, for aufs, in /sys/fs/aufs/si_<id>/brN.
    let list: string | null = null;
    for (const raw of m.superOptions.split(',')) {
      const o = unescapeMountField(raw);
      const mm = /^(?:br[:=]|dirs=)(.*)$/.exec(o);
      if (mm) list = mm[1];
    }
    const si = opt('si');
    if (list === null && si !== null) {
      const brs: string[] = [];
      try {
        for (let i = 0; ; i++) {
          let line: string;
          try { line = deps.readFile(`/sys/fs/aufs/si_${si}/br${i}`).trim(); } catch (err) { if (i === 0) throw err; break; }
          brs.push(line);
        }
      } catch (err) {
        return unknown(`its branches could not be read from /sys/fs/aufs/si_${si} (${errText(err)})`);
      }
      list = brs.join(':');
    }
    if (list === null) return unknown('its branches are not in the mount options');
    const rw = writableBranches(list);
    if (rw.length === 0) return unknown('no writable branch');
    dirs = rw.map((p) => ({ role: 'branch', path: p }));
  } else {
    // ecryptfs, shiftfs, sdcardfs: mounted from the lower directory.
    dirs = [{ role: 'source', path: m.source }];
  }
  for (const d of dirs) {
    if (!isAbsolute(d.path)) return unknown(`${d.role} ${d.path} is not an absolute path`);
    let lower: FsResolution;
    try {
      if (fs === 'overlayfs') {
        // The overlay reports its upper layer's statfs with only the type changed: if these
        // differ, the path in the options is not that layer (seen from another mount
        // namespace, say), and its filesystem says nothing about this one.
        const ls = deps.statfs(d.path);
        if (ls.bsize !== st.bsize || ls.blocks !== st.blocks || ls.files !== st.files) {
          return unknown(`${d.role} ${d.path} is not the layer under this overlay: their statfs sizes differ (another mount namespace?)`);
        }
      }
      lower = resolveFs(d.path, deps, depth + 1);
    } catch (err) {
      return unknown(`${d.role} ${d.path} could not be read (${errText(err)})`);
    }
    stack.lower.push({ ...d, fs: lower });
  }
  return res;
}

/** The filesystem(s) that finally hold the data, or null if some layer is unknown. */
function bottom(r: FsResolution): string[] | null {
  if (!r.stack) return [r.fs];
  if (r.stack.unknown !== null || r.stack.lower.length === 0) return null;
  const out: string[] = [];
  for (const l of r.stack.lower) {
    const b = bottom(l.fs);
    if (b === null) return null;
    for (const x of b) if (!out.includes(x)) out.push(x);
  }
  return out;
}

function stackName(r: FsResolution): string {
  return r.mount?.fstype ?? r.fs;
}

/**
 * "overlay over xfs (upperdir /u)"; nested: "overlay over overlay over xfs (upperdir /a;
 * upperdir /b)"; unknown: "overlay over an unknown filesystem (upperdir /u could not be read (ENOENT))".
 */
export function describeStack(r: FsResolution): string {
  const { chain, where } = chainOf(r);
  return chain + (where.length ? ` (${where.join('; ')})` : '');
}

function chainOf(r: FsResolution): { chain: string; where: string[] } {
  if (!r.stack) return { chain: r.fs, where: [] };
  const name = stackName(r);
  if (r.stack.unknown !== null || r.stack.lower.length === 0) {
    return { chain: `${name} over an unknown filesystem`, where: [r.stack.unknown ?? 'nothing found under it'] };
  }
  const subs = r.stack.lower.map((l) => chainOf(l.fs));
  return {
    chain: `${name} over ${[...new Set(subs.map((x) => x.chain))].join(' and ')}`,
    where: [r.stack.lower.map((l) => `${l.role} ${l.path}`).join(', '), ...subs.flatMap((x) => x.where)],
  };
}

export function fsNameOf(magic: number): string {
  return FS_MAGIC[magic >>> 0] ?? 'unknown';
}

/**
 * statfs, plus the layers under a stacking filesystem (resolveFs): pass `resolution` to
 * decideWorkaround() so that 'auto' judges the filesystem that holds the data.
 */
export function statfsName(path: string): { fs: string; magic: number; resolution: FsResolution } {
  const resolution = resolveFs(path);
  return { fs: resolution.fs, magic: resolution.magic, resolution };
}

/**
 * The 'auto' verdict by the filesystem (no policy, no emulation). `rule` has no "auto: "
 * prefix; `leaf` is the rule of the filesystem that finally holds the data.
 */
function autoFor(magic: number, kernel: string, res: FsResolution | undefined): { enabled: boolean; rule: string; leaf: string } {
  const fs = fsNameOf(magic);
  const plain = (enabled: boolean, rule: string): { enabled: boolean; rule: string; leaf: string } => ({ enabled, rule, leaf: rule });
  if (REMOTE.has(fs)) {
    const what = res?.mount ? `${fs} (${res.mount.fstype} at ${res.mount.point})` : fs;
    return plain(true, `${what} is a network or FUSE filesystem: the kernel that serves it is unknown (QEMU's reasoning)` +
      (fs === 'fuse' ? '; FUSE passthrough hands fallocate and O_DIRECT to a backing filesystem it does not name' : ''));
  }
  if (STACKING.has(fs)) {
    if (!res?.stack) return plain(true, `${fs} is a stacking filesystem and the filesystem under it was not determined: assuming it may have the bug`);
    const desc = describeStack(res);
    if (bottom(res) === null) return { enabled: true, rule: `${desc}: the filesystem that holds the data is unknown: assuming it may have the bug`, leaf: 'unknown' };
    // Every writable layer resolved: the worst of their verdicts (aufs may write to any rw branch).
    const subs = res.stack.lower.map((l) => autoFor(l.fs.magic, kernel, l.fs));
    const pick = subs.find((x) => x.enabled) ?? subs[0];
    return { enabled: pick.enabled, rule: `${desc}: ${pick.leaf}`, leaf: pick.leaf };
  }
  if (fs === 'xfs') {
    const k = kernelHasXfsFix(kernel);
    return plain(!k.fixed, `xfs, ${k.why}`);
  }
  if (LOCAL_SAFE.has(fs)) return plain(false, `${fs} is a local filesystem without the XFS fallocate/AIO+DIO race`);
  return plain(true, `unrecognised filesystem (magic 0x${(magic >>> 0).toString(16)}): assuming it may have the bug`);
}

function stackSummary(res: FsResolution | undefined): StackSummary | undefined {
  if (!res?.stack) return undefined;
  const b = bottom(res);
  return { description: describeStack(res), lowerFs: b === null ? null : b.join(', '), unknown: b === null ? (res.stack.unknown ?? 'a lower layer is unknown') : null };
}

/**
 * The decision for one file, with the rule that fired, for file.info(). `resolution` (from
 * statfsName/resolveFs) lets 'auto' judge a stacking filesystem by the one under it; without
 * it, a stacking filesystem counts as unknown (the workaround stays on).
 */
export function decideWorkaround(policy: WorkaroundPolicy, magic: number, kernel: string, emulated: boolean, resolution?: FsResolution): WorkaroundDecision {
  const res = resolution;
  const fs = fsNameOf(magic);
  const stack = stackSummary(res);
  const base = { policy, fs, magic: '0x' + (magic >>> 0).toString(16), kernel, emulated, ...(stack ? { stack } : {}) };
  if (policy === 'always') return { ...base, enabled: true, rule: 'policy "always"' };
  if (policy === 'never') return { ...base, enabled: false, rule: 'policy "never"' };
  if (policy === 'probe' && !emulated) {
    // Without a probe result (see decideFromProbe), 'probe' decides like 'auto'.
    const auto = decideWorkaround('auto', magic, kernel, emulated, res);
    return { ...auto, policy, rule: `probe not run: ${auto.rule}` };
  }
  if (emulated) return { ...base, enabled: true, rule: 'auto: the buggy XFS semantics are emulated, so the file is treated as on an unfixed kernel' };
  const a = autoFor(magic, kernel, res);
  return { ...base, enabled: a.enabled, rule: `auto: ${a.rule}` };
}

/** What the dynamic check behind policy 'probe' (src/probe/cache.ts resolveProbePolicy) answers. */
export type ProbeResolver = (path: string, kernelRelease: string) => Promise<{ enabled: boolean; rule: string; cached: boolean; verdict: string | null }>;

let probeResolver: ProbeResolver | null = null;

/**
 * Injects the dynamic check (src/probe/register.ts does, for the package entry and the CLI):
 * the probe starts engines of its own, so the library's core (file.ts) must not import it.
 */
export function setProbeResolver(r: ProbeResolver): void { probeResolver = r; }
export function getProbeResolver(): ProbeResolver | null { return probeResolver; }

/** The decision for policy 'probe' from the dynamic check's result (src/probe/cache.ts). */
export function decideFromProbe(magic: number, kernel: string, emulated: boolean,
  probe: { enabled: boolean; rule: string; cached: boolean; verdict: string | null }): WorkaroundDecision {
  if (emulated) return decideWorkaround('auto', magic, kernel, true);
  return {
    enabled: probe.enabled, policy: 'probe', fs: fsNameOf(magic), magic: '0x' + (magic >>> 0).toString(16), kernel, emulated,
    rule: probe.rule, probe: { cached: probe.cached, verdict: probe.verdict },
  };
}
