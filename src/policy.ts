// Does this file need the XFS post-EOF zero-write workaround? (The RFC's open question.)
// Linux before 5.5 let fallocate() past EOF race with AIO+O_DIRECT writes past EOF on XFS:
// fallocate computed the new size, waited for in-flight DIO, then set the size, truncating
// away what a racing write had appended. Fixed by 249bd9087a52 (v5.5), backported to 5.4.y.
import { statfsSync } from 'node:fs';
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
const LOCAL_SAFE = new Set(['ext4', 'btrfs', 'tmpfs', 'ramfs', 'f2fs', 'zfs', 'vfat', 'ntfs', 'jfs', 'reiserfs', 'overlayfs', 'squashfs']);

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
}

export function fsNameOf(magic: number): string {
  return FS_MAGIC[magic >>> 0] ?? 'unknown';
}

export function statfsName(path: string): { fs: string; magic: number } {
  const s = statfsSync(path);
  const magic = Number(s.type) >>> 0;
  return { fs: fsNameOf(magic), magic };
}

/** The decision for one file, with the rule that fired, for file.info(). */
export function decideWorkaround(policy: WorkaroundPolicy, magic: number, kernel: string, emulated: boolean): WorkaroundDecision {
  const fs = fsNameOf(magic);
  const base = { policy, fs, magic: '0x' + (magic >>> 0).toString(16), kernel, emulated };
  if (policy === 'always') return { ...base, enabled: true, rule: 'policy "always"' };
  if (policy === 'never') return { ...base, enabled: false, rule: 'policy "never"' };
  if (policy === 'probe' && !emulated) {
    // Without a probe result (see decideFromProbe), 'probe' decides like 'auto'.
    const auto = decideWorkaround('auto', magic, kernel, emulated);
    return { ...auto, policy, rule: `probe not run: ${auto.rule}` };
  }
  if (emulated) return { ...base, enabled: true, rule: 'auto: the buggy XFS semantics are emulated, so the file is treated as on an unfixed kernel' };
  if (fs === 'xfs') {
    const k = kernelHasXfsFix(kernel);
    return { ...base, enabled: !k.fixed, rule: `auto: xfs, ${k.why}` };
  }
  if (REMOTE.has(fs)) return { ...base, enabled: true, rule: `auto: ${fs} is a network or FUSE filesystem: the kernel that serves it is unknown (QEMU's reasoning)` };
  if (LOCAL_SAFE.has(fs)) return { ...base, enabled: false, rule: `auto: ${fs} is a local filesystem without the XFS fallocate/AIO+DIO race` };
  return { ...base, enabled: true, rule: `auto: unrecognised filesystem (magic ${base.magic}): assuming it may have the bug` };
}

/** The decision for policy 'probe' from the dynamic check's result (src/probe/cache.ts). */
export function decideFromProbe(magic: number, kernel: string, emulated: boolean,
  probe: { enabled: boolean; rule: string; cached: boolean; verdict: string | null }): WorkaroundDecision {
  if (emulated) return decideWorkaround('auto', magic, kernel, true);
  return {
    enabled: probe.enabled, policy: 'probe', fs: fsNameOf(magic), magic: '0x' + (magic >>> 0).toString(16), kernel, emulated,
    rule: probe.rule, probe: { cached: probe.cached, verdict: probe.verdict },
  };
}
