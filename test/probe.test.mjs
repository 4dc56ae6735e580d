// `ringfence probe`: static facts (root fs, loop XFS, tmpfs), the dynamic race with and without
// the emulated XFS bug, the verdict cache, and the CLI's exit codes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeXfsVolume } from '../dist/src/volume.js';
import { runProbe } from '../dist/src/probe/probe.js';
import { parseMountinfo, mountFor } from '../dist/src/probe/static.js';
import { probeVerdict, probeCounters, resolveProbePolicy, clearProbeMemo } from '../dist/src/probe/cache.js';
import { loadAddon } from '../dist/src/addon.js';
import { scratchDir, isRoot } from './helpers/env.mjs';

/** A test that needs root (loop devices, mounts): reported as skipped, not passed, without it. */
const rootTest = isRoot ? test : test.skip;

const MAIN = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const KERNEL = loadAddon().probe().kernel || release();
const scratch = scratchDir('rf-probe-');
test.after(() => scratch.cleanup());

/** The probe must leave the directory exactly as it found it. */
function assertUntouched(dir, before) {
  const after = readdirSync(dir).sort();
  assert.equal(after, before, `probe left files behind in ${dir}: ${after.filter((f) => !before.includes(f))}`);
}

test('mountinfo parsing: escapes, optional fields, longest prefix, stacked mounts', () => {
  const mi = [
    '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw',
    '42 27 7:0 / /mnt/my\\040disk rw,relatime shared:1 - xfs /dev/loop0 rw,inode64',
    '43 27 0:50 / /mnt/my\\040disk rw,relatime - tmpfs none rw',
    '44 27 0:51 / /mnt/myd rw - tmpfs none rw',
  ].join('\n');
  const e = parseMountinfo(mi);
  assert.is(e.length, 4);
  assert.is(e[1].point, '/mnt/my disk');
  assert.is(e[1].fstype, 'xfs');
  assert.is(e[1].source, '/dev/loop0');
  assert.is(mountFor('/mnt/my disk/a/b', e).mountId, 43, 'the topmost of stacked mounts');
  assert.is(mountFor('/mnt/mydisk', e).mountId, 27, 'a prefix must end at a path component');
  assert.is(mountFor('/mnt/myd/x', e).mountId, 44);
  assert.is(mountFor('/usr', e).mountId, 27);
});

test('static facts on the root filesystem', async () => {
  const before = readdirSync(scratch.dir).sort();
  const r = await runProbe(scratch.dir);
  const s = r.static;
  console.log(`  root fs: ${s.fs.name} on ${s.mount?.point} (${s.mount?.source}), key ${s.fsId}, O_DIRECT ${s.directIo.offset} via ${s.directIo.source}`);
  assert.is(r.exitCode, 0);
  assert.is(r.race, null);
  assert.is(s.fs.magic, '0x' + (Number(statfsSync(scratch.dir).type) >>> 0).toString(16));
  assert.ok(s.mount, 'mount found');
  assert.ok(scratch.dir.startsWith(s.mount.point));
  if (s.fs.name === 'ext4') assert.is(s.mount.fstype, 'ext4');
  assert.match(s.fsId, /^(uuid:[0-9a-f-]+|dev:\d+:\d+)$/);
  assert.is(s.kernel.release, KERNEL);
  assert.is(s.kernel.fixed, true, 'this machine kind runs 6.18');
  assert.is(s.backends.sync.ok, true);
  assert.type(s.backends.ioUring.ok, 'boolean');
  assert.is(s.backends.ioUringDisabled, Number(readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim()));
  assert.ok(s.auto.rule.startsWith('auto:'));
  if (s.fs.name === 'ext4') assert.is(s.auto.enabled, false);
  assert.ok(s.directIo.offset > 0 && s.directIo.offset % 512 === 0);
  assertUntouched(scratch.dir, before);
});

rootTest('static facts on a loop-mounted XFS volume (root: a loop-mounted volume)', async () => {
  const vol = makeXfsVolume(512 * 1024 * 1024);
  try {
    const r = await runProbe(vol.dir);
    const s = r.static;
    console.log(`  xfs: ${s.mount.source} on ${s.mount.point}, UUID ${s.uuid.value} (${s.uuid.source}), O_DIRECT ${s.directIo.offset} via ${s.directIo.source}; auto: ${s.auto.rule}`);
    assert.is(s.fs.name, 'xfs');
    assert.is(s.fs.magic, '0x58465342');
    assert.is(s.mount.fstype, 'xfs');
    assert.is(s.mount.point, vol.dir);
    assert.match(s.mount.source, /^\/dev\/loop\d+$/);
    assert.is(s.mount.devMatches, true);
    assert.match(s.uuid.value ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'blkid/xfs_admin give the UUID as root');
    assert.is(s.fsId, `uuid:${s.uuid.value}`);
    assert.is(s.directIo.supported, true);
    assert.is(s.directIo.source, 'statx STATX_DIOALIGN on a scratch file opened O_DIRECT');
    assert.is(s.auto.enabled, false);
    assert.match(s.auto.rule, /auto: xfs, kernel .* >= 5\.5/);
    assert.equal(readdirSync(vol.dir), [], 'no scratch left on the volume');
  } finally {
    vol.cleanup();
  }
});

rootTest('static facts on tmpfs; the race is not applicable there (no FALLOC_FL_ZERO_RANGE) (root: mounts a tmpfs)', async () => {
  const dir = mkdtempSync(join(scratch.dir, 'tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'none', dir]);
  try {
    const r = await runProbe(dir, { race: true, iterations: 20 });
    const s = r.static;
    console.log(`  tmpfs: O_DIRECT ${s.directIo.supported} (${s.directIo.source}); key ${s.fsId}; race: ${r.race.summary}`);
    assert.is(s.fs.name, 'tmpfs');
    assert.is(s.mount.fstype, 'tmpfs');
    assert.is(s.mount.point, dir);
    assert.is(s.uuid.value, null);
    assert.match(s.fsId, /^dev:0:\d+$/);
    // Before Linux 6.6 tmpfs refused O_DIRECT (EINVAL); since then it opens, without STATX_DIOALIGN.
    assert.not.equal(s.directIo.source, 'statx STATX_DIOALIGN on a scratch file opened O_DIRECT');
    assert.is(s.auto.enabled, false);
    assert.is(r.race.verdict, 'not-applicable');
    assert.match(r.race.summary, /ZERO_RANGE/);
    assert.is(r.exitCode, 0);
    assert.equal(readdirSync(dir), []);
  } finally {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('dynamic check under emulation reports buggy (short budget)', async () => {
  const before = readdirSync(scratch.dir).sort();
  const r = await runProbe(scratch.dir, { race: true, emulate: true, budgetMs: 500 });
  console.log(`  emulated: ${r.race.summary}; ${r.race.check.examples[0]}`);
  assert.is(r.race.verdict, 'buggy');
  assert.match(r.race.summary, /^buggy: lost writes observed \(\d+ of \d+\)$/);
  assert.ok(r.race.check.lost > 0 && r.race.check.kinds['generic/586'].lost > 0 && r.race.check.kinds.qcow2.lost > 0, 'both race kinds lose writes');
  assert.is(r.exitCode, 1);
  assert.is(r.race.calibration, null);
  assertUntouched(scratch.dir, before);
});

test('dynamic check without emulation: no lost writes on the fixed kernel, calibration detects', async () => {
  const before = readdirSync(scratch.dir).sort();
  const r = await runProbe(scratch.dir, { race: true, budgetMs: 1500 });
  const c = r.race.check, cal = r.race.calibration;
  console.log(`  kernel: ${r.race.summary}; calibration ${cal.lost}/${cal.trials}; miss probability ${r.race.missProbability}`);
  assert.is(c.emulated, false);
  assert.is(c.lost, 0);
  assert.ok(c.trials > 100, `enough trials (${c.trials})`);
  assert.is(r.race.verdict, 'clean');
  assert.is(r.race.summary, `no lost writes in ${c.trials} trials`);
  assert.ok(cal.emulated && cal.lost > 0, 'the emulated bug is detected by the same harness');
  assert.is(r.race.conclusive, true);
  assert.is(r.exitCode, 0);
  assertUntouched(scratch.dir, before);
});

rootTest('XFS volume: emulation detected, real kernel clean (root: a loop-mounted volume)', async () => {
  const vol = makeXfsVolume(512 * 1024 * 1024);
  try {
    const emu = await runProbe(vol.dir, { race: true, emulate: true, iterations: 100 });
    const real = await runProbe(vol.dir, { race: true, iterations: 1000 });
    console.log(`  xfs emulated: ${emu.race.summary}; kernel: ${real.race.summary} (calibration ${real.race.calibration.lost}/${real.race.calibration.trials})`);
    assert.is(emu.race.verdict, 'buggy');
    assert.is(emu.exitCode, 1);
    assert.is(real.race.verdict, 'clean');
    assert.is(real.race.check.trials, 1000);
    assert.is(real.race.calibration.trials, 250);
    assert.is(real.exitCode, 0);
    assert.equal(readdirSync(vol.dir), []);
  } finally {
    vol.cleanup();
  }
});

test('cache: the second call reuses the verdict; another kernel release invalidates it', async () => {
  const cacheDir = mkdtempSync(join(scratch.dir, 'cache-'));
  const work = mkdtempSync(join(scratch.dir, 'work-'));
  const opts = { kernelRelease: KERNEL, cacheDir, budgetMs: 400 };
  const races0 = probeCounters.races;
  const a = await probeVerdict(work, opts);
  assert.is(a.cached, false);
  assert.is(probeCounters.races, races0 + 1);
  assert.is(a.entry.kernelRelease, KERNEL);
  assert.is(a.entry.verdict, 'clean');
  const t = performance.now();
  const b = await probeVerdict(work, opts);
  const ms = performance.now() - t;
  assert.is(b.cached, true);
  assert.is(probeCounters.races, races0 + 1, 'no race on a cache hit');
  assert.ok(ms < 300, `a cache hit is quick (${ms.toFixed(0)} ms)`);
  assert.equal(b.entry, a.entry);
  const file = JSON.parse(readFileSync(join(cacheDir, 'probe.json'), 'utf8'));
  assert.is(file.version, 1);
  assert.equal(Object.keys(file.entries), [a.entry.fsId]);

  const c = await probeVerdict(work, { ...opts, kernelRelease: '4.19.0-fake' });
  assert.is(c.cached, false);
  assert.is(probeCounters.races, races0 + 2);
  assert.match(c.invalidated, /measured under kernel .*, not 4\.19\.0-fake/);
  const file2 = JSON.parse(readFileSync(join(cacheDir, 'probe.json'), 'utf8'));
  assert.is(file2.entries[a.entry.fsId].kernelRelease, '4.19.0-fake', 'the entry was replaced');
  const d = await probeVerdict(work, { ...opts, kernelRelease: '4.19.0-fake' });
  assert.is(d.cached, true);
  assert.is(probeCounters.races, races0 + 2);

  // The policy helper: cached verdict -> workaround off, the rule says it came from the probe's cache.
  clearProbeMemo();
  const p = await resolveProbePolicy(join(work, 'disk.img'), '4.19.0-fake', { cacheDir });
  console.log(`  policy: enabled ${p.enabled}, cached ${p.cached}: ${p.rule}`);
  assert.is(p.enabled, false);
  assert.is(p.cached, true);
  assert.is(p.verdict, 'clean');
  assert.match(p.rule, /^probe: no lost writes in \d+ trials; the emulated bug was detected in \d+ of \d+ calibration trials .*\(cached /);
  assert.is(probeCounters.races, races0 + 2);
  // A fresh release runs the check (fresh), the next open of the same fs reuses it in-process.
  const q = await resolveProbePolicy(join(work, 'disk.img'), '5.4.1-fake', { cacheDir, budgetMs: 400 });
  assert.is(q.cached, false);
  assert.match(q.rule, /\(fresh run, cached in .*replaced the cached verdict was measured under kernel 4\.19\.0-fake/);
  const q2 = await resolveProbePolicy(join(work, 'other.img'), '5.4.1-fake', { cacheDir });
  assert.is(q2.cached, true);
  assert.is(probeCounters.races, races0 + 3);
  assert.equal(readdirSync(work), [], 'no scratch left behind');
});

test('CLI: exit codes 0 / 1 / 2 and --json', () => {
  const run = (...args) => spawnSync(process.execPath, [MAIN, 'probe', ...args], { encoding: 'utf8', timeout: 60000 });
  const ok = run(scratch.dir);
  assert.is(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /'auto' decides/);
  const bug = run(scratch.dir, '--emulate-xfs-bug', '--budget', '0.3', '--json');
  assert.is(bug.status, 1, bug.stderr);
  const j = JSON.parse(bug.stdout);
  assert.is(j.race.verdict, 'buggy');
  assert.is(j.exitCode, 1);
  const missing = run(join(scratch.dir, 'does-not-exist'));
  assert.is(missing.status, 2);
  assert.match(missing.stderr, /does not exist: give an existing directory/);
  const both = run(scratch.dir, '--budget', '1', '--iterations', '5', '--json');
  assert.is(both.status, 2);
  assert.match(JSON.parse(both.stdout).error, /mutually exclusive/);
  const unknown = run(scratch.dir, '--no-such-option');
  assert.is(unknown.status, 2);
});

test.run();
