// The per-file decision whether the XFS post-EOF workaround is needed, and file.info().
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { decideWorkaround, kernelHasXfsFix, Engine } from '../dist/src/index.js';
import { makeXfsVolume } from '../dist/src/volume.js';
import { scratchDir, isRoot } from './helpers/env.mjs';

const XFS = 0x58465342, EXT4 = 0xef53, NFS = 0x6969, FUSE = 0x65735546, TMPFS = 0x01021994, BTRFS = 0x9123683e, CIFS = 0xff534d42;

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
  const engine = await Engine.start({ workers: 1 });
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

test('on a loop-mounted XFS volume with this (fixed) kernel, auto turns the workaround off', async () => {
  if (!isRoot) { console.log('  skip: creating an XFS loop volume needs root'); return; }
  const vol = makeXfsVolume(512 * 2 ** 20);
  const engine = await Engine.start({ workers: 1 });
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
      const engine = await Engine.start({ workers: 2, xfsWorkaround: 'probe' });
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

test.run();
