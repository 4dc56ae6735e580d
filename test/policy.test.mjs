// The per-file decision whether the XFS post-EOF workaround is needed, and file.info().
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { decideWorkaround, kernelHasXfsFix, Engine } from '../dist/src/index.js';
import { makeXfsVolume } from '../dist/src/volume.js';
import { parseMountinfo, parseSuperOptions, mountOf, unescapeMountField, writableBranches, resolveFs, statfsName, describeStack } from '../dist/src/policy.js';
import { scratchDir, isRoot, skipUnless, xfsVolumeUnavailable, engineOptions } from './helpers/env.mjs';

const XFS = 0x58465342, EXT4 = 0xef53, NFS = 0x6969, FUSE = 0x65735546, TMPFS = 0x01021994, BTRFS = 0x9123683e, CIFS = 0xff534d42;
const OVERLAY = 0x794c7630, ECRYPTFS = 0xf15f, SHIFTFS = 0x6a656a62, AUFS = 0x61756673, UNIONFS = 0xf15f083d, SDCARDFS = 0x5dca2df5;

test('kernel releases: mainline >= 5.5 and 5.4.2+ carry the fix', () => {
  for (const [rel, fixed] of [['5.5.0', true], ['6.18.44-fc-v657', true], ['5.4.2', true], ['5.4.250-generic', true], ['5.4.1', false],
    ['5.4.0-42-generic', false], ['4.19.0-21-amd64', false], ['3.10.0-1160.el7.x86_64', false], ['garbage', false]]) {
    assert.is(kernelHasXfsFix(rel).fixed, fixed, rel);
  }
});

test("'auto' decides from the filesystem and the kernel, and names the rule", () => {
  const cases = [
    [XFS, '4.19.0', true, /xfs, kernel 4.19.0 predates the fix/],
    [XFS, '5.4.1', true, /predates/],
    [XFS, '5.4.2', false, /stable backport/],
    [XFS, '6.18.44', false, />= 5.5/],
    [NFS, '6.18.44', true, /network or FUSE/],
    [FUSE, '6.18.44', true, /network or FUSE/],
    [CIFS, '6.18.44', true, /network or FUSE/],
    [EXT4, '4.19.0', false, /ext4 is a local filesystem/],
    [BTRFS, '5.0.0', false, /btrfs/],
    [TMPFS, '5.0.0', false, /tmpfs/],
    // A stacking filesystem without what is under it (a bare magic) is never judged safe.
    [OVERLAY, '6.18.44', true, /overlayfs is a stacking filesystem and the filesystem under it was not determined/],
    [ECRYPTFS, '6.18.44', true, /ecryptfs is a stacking filesystem/],
    [SHIFTFS, '6.18.44', true, /shiftfs is a stacking filesystem/],
    [AUFS, '6.18.44', true, /aufs is a stacking filesystem/],
    [UNIONFS, '6.18.44', true, /unionfs is a stacking filesystem/],
    [SDCARDFS, '6.18.44', true, /sdcardfs is a stacking filesystem/],
    [0x12345678, '6.18.44', true, /unrecognised filesystem \(magic 0x12345678\)/],
  ];
  for (const [magic, kernel, enabled, rule] of cases) {
    const d = decideWorkaround('auto', magic, kernel, false);
    assert.is(d.enabled, enabled, `${magic.toString(16)} ${kernel}`);
    assert.match(d.rule, rule);
    assert.is(d.kernel, kernel);
    assert.is(d.magic, '0x' + magic.toString(16));
  }
  assert.is(decideWorkaround('auto', EXT4, '6.1', true).enabled, true, 'emulated bug counts as buggy');
  assert.is(decideWorkaround('always', EXT4, '6.1', false).enabled, true);
  assert.is(decideWorkaround('never', XFS, '4.19', false).enabled, false);
});

test('file.info() explains the decision on a real file; per-file override in open()', async () => {
  const s = scratchDir('rf-pol-');
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  try {
    const f = await engine.open(join(s.dir, 'a'), { create: true });
    const info = f.info();
    assert.is(info.xfsWorkaround.policy, 'auto');
    assert.type(info.xfsWorkaround.rule, 'string');
    assert.ok(info.xfsWorkaround.fs.length > 0);
    assert.ok(info.alignment >= 512, `direct alignment ${info.alignment} (${info.alignmentSource})`);
    const g = await engine.open(join(s.dir, 'a'), { xfsWorkaround: 'always' });
    assert.is(g.info().xfsWorkaround.enabled, true);
    assert.match(g.info().xfsWorkaround.rule, /always/);
    await f.close(); await g.close();
  } finally { await engine.close(); s.cleanup(); }
});

skipUnless(test, xfsVolumeUnavailable())('on a loop-mounted XFS volume with this (fixed) kernel, auto turns the workaround off', async () => {
  const vol = makeXfsVolume(512 * 2 ** 20);
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  try {
    const f = await engine.open(join(vol.dir, 'x'), { create: true });
    const d = f.info().xfsWorkaround;
    assert.is(d.fs, 'xfs');
    assert.is(d.enabled, !kernelHasXfsFix(engine.info().kernel).fixed);
    assert.match(d.rule, /^auto: xfs, kernel /);
    await f.close();
  } finally { await engine.close(); vol.cleanup(); }
});

test("xfsWorkaround 'probe': the dynamic check decides once per filesystem and kernel, then the cache does", async () => {
  const s = scratchDir('rf-probe-pol-');
  const saved = process.env.XDG_CACHE_HOME;
  process.env.XDG_CACHE_HOME = join(s.dir, 'cache');
  const { clearProbeMemo } = await import('../dist/src/probe/cache.js');
  try {
    for (const round of [0, 1]) {
      clearProbeMemo(); // a new process would have no in-memory memo: only the cache file is left
      const engine = await Engine.start(engineOptions({ workers: 2, xfsWorkaround: 'probe' }));
      try {
        const f = await engine.open(join(s.dir, `p${round}`), { create: true });
        const d = f.info().xfsWorkaround;
        assert.is(d.policy, 'probe');
        assert.ok(d.probe, 'the decision carries the probe result');
        assert.is(d.probe.cached, round === 1, `round ${round}: cached`);
        assert.is(d.probe.verdict, 'clean', 'this kernel has the fix: no lost writes');
        assert.match(d.rule, /^probe: no lost writes in \d+ trials/);
        assert.is(d.enabled, false);
        await f.close();
      } finally { await engine.close(); }
    }
  } finally {
    if (saved === undefined) delete process.env.XDG_CACHE_HOME; else process.env.XDG_CACHE_HOME = saved;
    s.cleanup();
  }
});

// ---- Stacking filesystems: judged by the filesystem that holds the data. ----

test('mountinfo parsing: optional fields, octal escapes (\\040 space, \\011 tab, \\134 backslash, \\012 newline), malformed lines', () => {
  const text = [
    '26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard',
    '', // blank
    '41 26 0:38 / /mnt/my\\040data rw,relatime shared:5 master:3 propagate_from:2 unbindable - overlay overlay rw,lowerdir=/lo\\040w,upperdir=/srv/up\\054per\\040dir,workdir=/srv/work',
    '42 26 0:39 /sub\\011dir /mnt/back\\134slash\\012nl rw - tmpfs my\\040tmpfs rw,size=4k',
    'garbage without a separator',
    '43 26 0:40 / /short rw -', // too few fields after "-"
  ].join('\n');
  const m = parseMountinfo(text);
  assert.is(m.length, 3);
  assert.equal(m[0], { mountId: 26, parentId: 1, majorMinor: '254:0', root: '/', point: '/', options: 'rw,relatime', fstype: 'ext4', source: '/dev/vda', superOptions: 'rw,discard' });
  assert.is(m[1].point, '/mnt/my data');
  assert.is(m[1].fstype, 'overlay');
  assert.is(m[1].superOptions, 'rw,lowerdir=/lo\\040w,upperdir=/srv/up\\054per\\040dir,workdir=/srv/work', 'super options are split and unescaped per option');
  assert.is(m[2].root, '/sub\tdir');
  assert.is(m[2].point, '/mnt/back\\slash\nnl');
  assert.is(m[2].source, 'my tmpfs');
  assert.is(unescapeMountField('a\\040b\\054c\\134\\134d'), 'a b,c\\\\d');
  assert.is(unescapeMountField('no\\escape\\9'), 'no\\escape\\9', 'only three octal digits are an escape');
});

test('super options: escaped commas stay inside a value; flags; repeated keys', () => {
  assert.equal(parseSuperOptions('rw,lowerdir=/a:/b,upperdir=/srv/up\\054per\\040dir,workdir=/w,index=off,lowerdir+=/c,lowerdir+=/d,xino=on,ro'), [
    ['rw', null], ['lowerdir', '/a:/b'], ['upperdir', '/srv/up,per dir'], ['workdir', '/w'], ['index', 'off'],
    ['lowerdir+', '/c'], ['lowerdir+', '/d'], ['xino', 'on'], ['ro', null],
  ]);
  assert.equal(parseSuperOptions(''), []);
  assert.equal(parseSuperOptions('opt=a=b'), [['opt', 'a=b']], 'split at the first "="');
  assert.equal(writableBranches('/rw1=rw:/ro1=ro:/rw2=rw+nolwh:/ro2=rr+wh:/x'), ['/rw1', '/rw2']);
});

test('mountOf: the longest mount point that is a path prefix; of mounts on one point, the last', () => {
  const m = parseMountinfo([
    '1 0 8:1 / / rw - ext4 /dev/sda1 rw',
    '2 1 8:2 / /mnt/a rw - xfs /dev/sda2 rw',
    '3 1 8:3 / /mnt/ab rw - btrfs /dev/sda3 rw',
    '4 2 0:50 / /mnt/a/b rw - tmpfs tmpfs rw',
    '5 2 0:51 / /mnt/a/b rw - overlay overlay rw,upperdir=/u,workdir=/w',
  ].join('\n'));
  assert.is(mountOf('/mnt/ab/x', m).fstype, 'btrfs');
  assert.is(mountOf('/mnt/a', m).fstype, 'xfs');
  assert.is(mountOf('/mnt/a/x', m).fstype, 'xfs');
  assert.is(mountOf('/mnt/abc', m).fstype, 'ext4', '/mnt/ab is not a prefix of /mnt/abc');
  assert.is(mountOf('/mnt/a/b/c', m).fstype, 'overlay', 'the topmost of two mounts on /mnt/a/b');
  assert.is(mountOf('/etc', m).fstype, 'ext4');
  assert.is(mountOf('/x', []), null);
});

/**
 * A fake machine for resolveFs: `fs` maps paths to statfs results (the longest path prefix
 * wins; null means ENOENT), `mounts` is its /proc/self/mountinfo, `files` its other files.
 */
function fake({ mounts, fs, files = {}, mountinfoError = null }) {
  const enoent = (p) => Object.assign(new Error(`ENOENT: no such file or directory, '${p}'`), { code: 'ENOENT' });
  return {
    statfs(path) {
      let best = null;
      for (const p of Object.keys(fs)) {
        if ((path === p || p === '/' || path.startsWith(p + '/')) && (best === null || p.length > best.length)) best = p;
      }
      if (best === null || fs[best] === null) throw enoent(path);
      return { bsize: 4096, blocks: 1000, files: 500, ...fs[best] };
    },
    mountinfo() {
      if (mountinfoError) throw Object.assign(new Error(mountinfoError), { code: mountinfoError });
      return mounts.join('\n');
    },
    realpath: (p) => p,
    readFile(p) { if (p in files) return files[p]; throw enoent(p); },
  };
}

const ROOT = '26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw';
const DOCKER_XFS = '40 26 259:1 / /var/lib/docker rw,relatime shared:30 - xfs /dev/nvme0n1p1 rw,attr2,inode64,prjquota';
const MERGED = '/var/lib/docker/overlay2/abc123/merged';
const DOCKER_OVL = `1234 40 0:123 / ${MERGED} rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/abc123/diff,workdir=/var/lib/docker/overlay2/abc123/work,index=off`;
const dockerFs = { '/': { type: EXT4, blocks: 5 }, '/var/lib/docker': { type: XFS, blocks: 777 }, [MERGED]: { type: OVERLAY, blocks: 777 } };

test('Docker overlay2 on XFS: judged by XFS and the kernel, the rule names the upperdir', () => {
  const r = resolveFs(`${MERGED}/data/disk.img`, fake({ mounts: [ROOT, DOCKER_XFS, DOCKER_OVL], fs: dockerFs }));
  assert.is(r.fs, 'overlayfs');
  assert.is(r.stack.unknown, null);
  assert.equal(r.stack.lower.map((l) => [l.role, l.path, l.fs.fs]), [['upperdir', '/var/lib/docker/overlay2/abc123/diff', 'xfs']]);
  assert.is(describeStack(r), 'overlay over xfs (upperdir /var/lib/docker/overlay2/abc123/diff)');
  const old = decideWorkaround('auto', OVERLAY, '4.19.0-21-amd64', false, r);
  assert.is(old.enabled, true, 'overlay on XFS with a pre-5.5 kernel has the race');
  assert.is(old.rule, 'auto: overlay over xfs (upperdir /var/lib/docker/overlay2/abc123/diff): xfs, kernel 4.19.0-21-amd64 predates the fix (mainline 5.5, 5.4.2 backport)');
  assert.is(old.fs, 'overlayfs');
  assert.is(old.magic, '0x794c7630');
  assert.equal(old.stack, { description: 'overlay over xfs (upperdir /var/lib/docker/overlay2/abc123/diff)', lowerFs: 'xfs', unknown: null });
  const fixed = decideWorkaround('auto', OVERLAY, '6.18.44', false, r);
  assert.is(fixed.enabled, false);
  assert.match(fixed.rule, /^auto: overlay over xfs \(upperdir \/var\/lib\/docker\/overlay2\/abc123\/diff\): xfs, kernel 6\.18\.44 >= 5\.5/);
  assert.is(decideWorkaround('always', OVERLAY, '6.18.44', false, r).enabled, true);
  assert.is(decideWorkaround('never', OVERLAY, '4.19.0', false, r).enabled, false);
  assert.match(decideWorkaround('probe', OVERLAY, '4.19.0', false, r).rule, /^probe not run: auto: overlay over xfs/);
  assert.is(decideWorkaround('auto', OVERLAY, '6.18.44', true, r).enabled, true, 'emulated: treated as unfixed');
});

test('overlay over ext4, tmpfs, btrfs: safe; over nfs or FUSE: unknown, so on', () => {
  for (const [type, name, enabled] of [[EXT4, 'ext4', false], [TMPFS, 'tmpfs', false], [BTRFS, 'btrfs', false], [NFS, 'nfs', true], [FUSE, 'fuse', true], [0x12345678, 'unknown', true]]) {
    const mounts = [ROOT, '50 26 0:60 / /up rw - whatever dev rw', '51 26 0:61 / /m rw - overlay overlay rw,lowerdir=/lo,upperdir=/up/u,workdir=/up/w'];
    const r = resolveFs('/m/f', fake({ mounts, fs: { '/': { type: EXT4 }, '/up': { type }, '/m': { type: OVERLAY } } }));
    const d = decideWorkaround('auto', OVERLAY, '4.19.0', false, r);
    assert.is(d.enabled, enabled, `overlay over ${name}: ${d.rule}`);
    assert.ok(d.rule.startsWith(`auto: overlay over ${name} (upperdir /up/u): `), d.rule);
  }
});

test('overlay whose upperdir cannot be read is unknown and never judged safe', () => {
  const base = { mounts: [ROOT, DOCKER_XFS, DOCKER_OVL], fs: dockerFs };
  const cases = [
    // Seen from inside the container: the host's /var/lib/docker does not exist.
    ['upperdir missing', fake({ ...base, fs: { ...dockerFs, '/var/lib/docker': null } }), /upperdir \/var\/lib\/docker\/overlay2\/abc123\/diff could not be read \(ENOENT\)/],
    // A path of that name exists here, but it is not the overlay's layer.
    ['upperdir is some other directory', fake({ ...base, fs: { ...dockerFs, '/var/lib/docker': { type: EXT4, blocks: 5 } } }), /is not the layer under this overlay: their statfs sizes differ/],
    ['mountinfo unreadable', fake({ ...base, mountinfoError: 'EACCES' }), /\/proc\/self\/mountinfo could not be read \(EACCES\)/],
    ['no mount holds it', fake({ ...base, mounts: [] }), /no mount in \/proc\/self\/mountinfo holds/],
    ['the mount is not an overlay', fake({ ...base, mounts: [ROOT, DOCKER_XFS] }), /statfs says overlayfs but the mount holding .* is xfs/],
    ['no upperdir (read-only overlay)', fake({ ...base, mounts: [ROOT, DOCKER_XFS, DOCKER_OVL.replace(/,upperdir=[^,]*,workdir=[^,]*/, '')] }), /no upperdir/],
    ['relative upperdir', fake({ ...base, mounts: [ROOT, DOCKER_XFS, DOCKER_OVL.replace('upperdir=/var', 'upperdir=var')] }), /is not an absolute path/],
  ];
  for (const [what, deps, why] of cases) {
    const r = resolveFs(`${MERGED}/f`, deps);
    assert.is(r.stack.lower.length, 0, what);
    assert.match(r.stack.unknown, why, what);
    for (const kernel of ['6.18.44', '4.19.0']) {
      const d = decideWorkaround('auto', OVERLAY, kernel, false, r);
      assert.is(d.enabled, true, `${what}, ${kernel}: ${d.rule}`);
      // Named by its mount type (overlay), or by statfs (overlayfs) when the mount was not found.
      assert.match(d.rule, /^auto: overlay(fs)? over an unknown filesystem \(.*\): the filesystem that holds the data is unknown: assuming it may have the bug$/, what);
      assert.is(d.stack.lowerFs, null);
      assert.match(d.stack.unknown, why, what);
    }
  }
});

test('nested overlays are followed to the bottom; an unknown layer anywhere makes it unknown', () => {
  const mounts = [ROOT, '50 26 8:5 / /data rw - xfs /dev/sdb rw',
    '51 26 0:61 / /inner rw - overlay overlay rw,lowerdir=/lo,upperdir=/data/u,workdir=/data/w',
    '52 26 0:62 / /outer rw - overlay overlay rw,lowerdir=/lo2,upperdir=/inner/u2,workdir=/inner/w2'];
  const fs = { '/': { type: EXT4 }, '/data': { type: XFS }, '/inner': { type: OVERLAY }, '/outer': { type: OVERLAY } };
  const r = resolveFs('/outer/f', fake({ mounts, fs }));
  assert.is(describeStack(r), 'overlay over overlay over xfs (upperdir /inner/u2; upperdir /data/u)');
  assert.is(decideWorkaround('auto', OVERLAY, '4.19.0', false, r).enabled, true);
  assert.is(decideWorkaround('auto', OVERLAY, '6.1.0', false, r).enabled, false);
  const broken = resolveFs('/outer/f', fake({ mounts, fs: { ...fs, '/data': null } }));
  const d = decideWorkaround('auto', OVERLAY, '6.1.0', false, broken);
  assert.is(d.enabled, true, d.rule);
  assert.match(d.rule, /overlay over overlay over an unknown filesystem \(upperdir \/inner\/u2; upperdir \/data\/u could not be read/);
  // A loop of overlays (impossible on a real kernel) ends at the depth limit, as unknown.
  const loop = resolveFs('/a/f', fake({ mounts: [ROOT, '60 26 0:70 / /a rw - overlay overlay rw,upperdir=/a/u,workdir=/a/w'], fs: { '/': { type: EXT4 }, '/a': { type: OVERLAY } } }));
  assert.is(decideWorkaround('auto', OVERLAY, '6.1.0', false, loop).enabled, true);
  assert.match(JSON.stringify(loop), /stacked more than 8 deep/);
});

test('ecryptfs, shiftfs, sdcardfs: judged by the directory they are mounted from', () => {
  for (const [magic, fstype] of [[ECRYPTFS, 'ecryptfs'], [SHIFTFS, 'shiftfs'], [SDCARDFS, 'sdcardfs']]) {
    const mounts = [ROOT, '50 26 8:5 / /home rw - xfs /dev/sdb rw', `51 26 0:61 / /mnt/priv\\040ate rw - ${fstype} /home/u/.Pri\\040vate rw,opt=1`];
    const fs = { '/': { type: EXT4 }, '/home': { type: XFS }, '/mnt/priv ate': { type: magic } };
    const r = resolveFs('/mnt/priv ate/f', fake({ mounts, fs }));
    const old = decideWorkaround('auto', magic, '5.4.1', false, r);
    assert.is(old.enabled, true, old.rule);
    assert.is(old.rule, `auto: ${fstype} over xfs (source /home/u/.Pri vate): xfs, kernel 5.4.1 predates the fix (mainline 5.5, 5.4.2 backport)`);
    assert.is(decideWorkaround('auto', magic, '5.4.2', false, r).enabled, false);
    const gone = resolveFs('/mnt/priv ate/f', fake({ mounts, fs: { ...fs, '/home': null } }));
    assert.is(decideWorkaround('auto', magic, '6.18.44', false, gone).enabled, true, `${fstype} over an unreadable source`);
  }
});

test('aufs and unionfs: every writable branch counts (the worst decides); branches from the options or aufs sysfs', () => {
  const fs = { '/': { type: EXT4 }, '/x': { type: XFS }, '/e': { type: EXT4 }, '/m': { type: AUFS }, '/n': { type: UNIONFS } };
  // aufs lists its branches in /sys/fs/aufs/si_<id>/brN, not in the mount options.
  const aufs = [ROOT, '50 26 0:61 / /m rw - aufs none rw,relatime,si=8a2f0c7a5e8b8a12'];
  const files = { '/sys/fs/aufs/si_8a2f0c7a5e8b8a12/br0': '/e/top=rw\n', '/sys/fs/aufs/si_8a2f0c7a5e8b8a12/br1': '/x/mid=rw\n', '/sys/fs/aufs/si_8a2f0c7a5e8b8a12/br2': '/ro/base=ro\n' };
  const r = resolveFs('/m/f', fake({ mounts: aufs, fs, files }));
  assert.equal(r.stack.lower.map((l) => l.path), ['/e/top', '/x/mid'], 'the read-only branch cannot receive writes');
  const d = decideWorkaround('auto', AUFS, '4.19.0', false, r);
  assert.is(d.enabled, true, 'one writable branch is on XFS with an unfixed kernel');
  assert.is(d.rule, 'auto: aufs over ext4 and xfs (branch /e/top, branch /x/mid): xfs, kernel 4.19.0 predates the fix (mainline 5.5, 5.4.2 backport)');
  assert.is(decideWorkaround('auto', AUFS, '6.18.44', false, r).enabled, false);
  const noSysfs = resolveFs('/m/f', fake({ mounts: aufs, fs }));
  assert.match(noSysfs.stack.unknown, /branches could not be read from \/sys\/fs\/aufs\/si_8a2f0c7a5e8b8a12 \(ENOENT\)/);
  assert.is(decideWorkaround('auto', AUFS, '6.18.44', false, noSysfs).enabled, true);
  // unionfs (and aufs without sysfs) shows them in the options.
  const uni = resolveFs('/n/f', fake({ mounts: [ROOT, '51 26 0:62 / /n rw - unionfs unionfs rw,dirs=/e/a=rw:/x/b=ro'], fs }));
  assert.is(decideWorkaround('auto', UNIONFS, '4.19.0', false, uni).rule, 'auto: unionfs over ext4 (branch /e/a): ext4 is a local filesystem without the XFS fallocate/AIO+DIO race');
  const ro = resolveFs('/n/f', fake({ mounts: [ROOT, '51 26 0:62 / /n rw - unionfs unionfs rw,dirs=/e/a=ro'], fs }));
  assert.match(ro.stack.unknown, /no writable branch/);
  assert.is(decideWorkaround('auto', UNIONFS, '6.18.44', false, ro).enabled, true);
});

test('FUSE (passthrough or not) and network filesystems stay unknown; the rule names the mount', () => {
  const mounts = [ROOT, '50 26 0:70 / /mnt/ssh rw - fuse.sshfs host:/ rw,user_id=0', '51 26 0:71 / /mnt/nfs rw - nfs4 srv:/x rw,vers=4.2'];
  const fs = { '/': { type: EXT4 }, '/mnt/ssh': { type: FUSE }, '/mnt/nfs': { type: NFS } };
  const f = resolveFs('/mnt/ssh/f', fake({ mounts, fs }));
  assert.equal(f.mount, { fstype: 'fuse.sshfs', point: '/mnt/ssh' });
  assert.is(f.stack, undefined, 'not a stacking filesystem we can see through');
  const d = decideWorkaround('auto', FUSE, '6.18.44', false, f);
  assert.is(d.enabled, true);
  assert.match(d.rule, /^auto: fuse \(fuse\.sshfs at \/mnt\/ssh\) is a network or FUSE filesystem: .*FUSE passthrough/);
  const n = decideWorkaround('auto', NFS, '6.18.44', false, resolveFs('/mnt/nfs/f', fake({ mounts, fs })));
  assert.is(n.enabled, true);
  assert.match(n.rule, /^auto: nfs \(nfs4 at \/mnt\/nfs\) is a network or FUSE filesystem/);
  // Without mountinfo it is still unknown, just less precisely named.
  assert.is(decideWorkaround('auto', FUSE, '6.18.44', false, resolveFs('/mnt/ssh/f', fake({ mounts, fs, mountinfoError: 'EACCES' }))).enabled, true);
});

test('statfsName on an ordinary directory: a plain number and no layers, as before', () => {
  const s = scratchDir('rf-pol-fs-');
  try {
    const r = statfsName(s.dir);
    assert.type(r.magic, 'number');
    assert.type(r.fs, 'string');
    assert.is(r.resolution.stack, undefined);
    assert.is(decideWorkaround('auto', r.magic, '6.18.44', false).stack, undefined);
  } finally { s.cleanup(); }
});

// Real overlay mounts (root, and a kernel and container that allow them).
function overlayUnavailable() {
  if (!isRoot) return 'needs root (mounts overlayfs)';
  let fss = '';
  try { fss = readFileSync('/proc/filesystems', 'utf8'); } catch (e) { return `/proc/filesystems unreadable (${e.code})`; }
  if (!/\toverlay$/m.test(fss)) return 'this kernel has no overlayfs (not in /proc/filesystems)';
  const d = mkdtempSync('/var/tmp/rf-ovl-probe-');
  try {
    for (const x of ['l', 'u', 'w', 'm']) mkdirSync(join(d, x));
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${d}/l,upperdir=${d}/u,workdir=${d}/w`, `${d}/m`], { stdio: 'pipe' });
    execFileSync('umount', [`${d}/m`], { stdio: 'pipe' });
    return null;
  } catch (e) {
    return `mounting overlayfs is not allowed here (${String(e.stderr || e.message).trim()})`;
  } finally { rmSync(d, { recursive: true, force: true }); }
}
const noOverlay = overlayUnavailable();

/** Mounts an overlay with its upper and work directories under `base` (a directory name with a space: mountinfo escapes it). */
function mountOverlay(base) {
  const top = mkdtempSync('/var/tmp/rf-ovl-');
  const upper = join(base, 'up per'), work = join(base, 'work'), lower = join(top, 'lower'), merged = join(top, 'merged');
  for (const d of [upper, work, lower, merged]) mkdirSync(d, { recursive: true });
  writeFileSync(join(lower, 'from-lower'), 'x');
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged], { stdio: 'pipe' });
  let mounted = true;
  return {
    upper, merged,
    cleanup() {
      if (mounted) { mounted = false; try { execFileSync('umount', [merged], { stdio: 'pipe' }); } catch { execFileSync('umount', ['-l', merged], { stdio: 'pipe' }); } }
      rmSync(top, { recursive: true, force: true });
    },
  };
}

/** Opens a file in the overlay through the engine and checks file.info() against what is under it. */
async function checkOverlayFile(ovl, expectFs) {
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  try {
    const kernel = engine.info().kernel;
    const expected = decideWorkaround('auto', expectFs.magic, kernel, false);
    for (const [name, opts] of [['new', { create: true, direct: false }], ['from-lower', { readOnly: true, direct: false }]]) {
      const f = await engine.open(join(ovl.merged, name), opts);
      const d = f.info().xfsWorkaround;
      console.log(`  ${name}: ${d.enabled ? 'on' : 'off'}: ${d.rule}`);
      assert.is(d.fs, 'overlayfs');
      assert.is(d.magic, '0x794c7630');
      assert.ok(d.rule.startsWith(`auto: overlay over ${expectFs.fs} (upperdir ${ovl.upper}): `), d.rule);
      assert.is(d.rule, `auto: overlay over ${expectFs.fs} (upperdir ${ovl.upper}): ${expected.rule.replace(/^auto: /, '')}`);
      assert.is(d.enabled, expected.enabled);
      assert.equal(d.stack, { description: `overlay over ${expectFs.fs} (upperdir ${ovl.upper})`, lowerFs: expectFs.fs, unknown: null });
      await f.close();
    }
  } finally { await engine.close(); }
}

skipUnless(test, noOverlay ?? xfsVolumeUnavailable())('a real overlay with its upperdir on a loop-mounted XFS volume is judged by XFS', async () => {
  const vol = makeXfsVolume(300 * 2 ** 20);
  let ovl;
  try {
    ovl = mountOverlay(vol.dir);
    await checkOverlayFile(ovl, { fs: 'xfs', magic: XFS });
    // The same overlay on an unfixed kernel would have the race: on.
    const d = decideOn(ovl.merged, '4.19.0');
    assert.is(d.enabled, true, d.rule);
    assert.match(d.rule, /^auto: overlay over xfs \(upperdir .*\/up per\): xfs, kernel 4\.19\.0 predates the fix/);
  } finally { ovl?.cleanup(); vol.cleanup(); }
});

/** decideWorkaround('auto') for a path, the way engine.open() calls it. */
function decideOn(path, kernel) {
  const { magic, resolution } = statfsName(path);
  return decideWorkaround('auto', magic, kernel, false, resolution);
}

skipUnless(test, noOverlay)('a real overlay with its upperdir on the root filesystem is judged by that filesystem', async () => {
  const base = mkdtempSync('/var/tmp/rf-ovl-up-');
  let ovl;
  try {
    ovl = mountOverlay(base);
    const under = statfsName(base);
    assert.is(under.resolution.stack, undefined, `the root filesystem here (${under.fs}) is not itself stacked`);
    await checkOverlayFile(ovl, under);
  } finally { ovl?.cleanup(); rmSync(base, { recursive: true, force: true }); }
});

skipUnless(test, noOverlay)('a real overlay with its upperdir on tmpfs is judged by tmpfs; hiding the upperdir makes it unknown', async () => {
  const base = mkdtempSync('/var/tmp/rf-ovl-tmpfs-');
  let ovl, tmpfsMounted = false, shadowed = false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', base], { stdio: 'pipe' });
    tmpfsMounted = true;
    ovl = mountOverlay(base);
    await checkOverlayFile(ovl, { fs: 'tmpfs', magic: TMPFS });
    // Mount an empty tmpfs over the upper layer's parent: the overlay keeps working, but its
    // upperdir path now leads nowhere, as the host's /var/lib/docker does inside a container.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', base], { stdio: 'pipe' });
    shadowed = true;
    let d = decideOn(ovl.merged, '6.18.44');
    assert.is(d.enabled, true, d.rule);
    assert.match(d.rule, /^auto: overlay over an unknown filesystem \(upperdir .*\/up per could not be read \(ENOENT\)\)/);
    // Now a directory of that name exists, on another (smaller) tmpfs: not the overlay's layer.
    mkdirSync(ovl.upper);
    d = decideOn(ovl.merged, '6.18.44');
    assert.is(d.enabled, true, d.rule);
    assert.match(d.rule, /is not the layer under this overlay/);
    console.log(`  hidden upperdir: ${d.rule}`);
  } finally {
    if (shadowed) execFileSync('umount', [base], { stdio: 'pipe' });
    ovl?.cleanup();
    if (tmpfsMounted) execFileSync('umount', [base], { stdio: 'pipe' });
    rmSync(base, { recursive: true, force: true });
  }
});

test.run();
