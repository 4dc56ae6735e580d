// The ringfence command line: every command, every flag, each with a bad value (exit 2, a
// message naming the flag, the value and what is allowed, and no side effects: no new temp
// directory, mount or loop device, nothing written in the directories given); then signals
// (SIGTERM 143, SIGINT 130, a double Ctrl-C to the process group) and leftovers (a SIGKILLed
// run is reported by the next one and removed by `ringfence cleanup`).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scratchDir, skipUnless, xfsVolumeUnavailable, isRoot } from './helpers/env.mjs';
import { readState, sideEffects, snapshot, tempDirs, mountLines, loopLines } from './helpers/sidefx.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const { MAX_WORKERS } = await import('../dist/src/shm.js');

const work = scratchDir('rf-clitest-');
const W = work.dir;                          // an existing, writable directory
const F = join(W, 'file.txt');               // a regular file
const IMG = join(W, 'exists.img');           // an existing "image"
const NOPE = '/nonexistent-rf-cli/x';        // under a directory that does not exist
writeFileSync(F, 'x');
writeFileSync(IMG, '');
// Children never touch the real verdict cache, whatever happens.
const ENV = { ...process.env, XDG_CACHE_HOME: join(W, 'xdg-cache') };

function cli(args, { timeout = 30_000 } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout, env: ENV });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, pid: r.pid };
}

const needRoot = xfsVolumeUnavailable(['mkfs.xfs', 'mount', 'umount', 'losetup']);

// ---- the table: [args, flag named, bad value (shown in the message), what is allowed, needs] ----
// needs: 'xfs' for rows whose check comes after a valid --xfs (which needs root and mkfs.xfs).

const rows = [
  // demo
  [['demo', '--blocks', '-5'], '--blocks', '-5', /from 1 to 1048576/],
  [['demo', '--blocks', 'abc'], '--blocks', 'abc', /integer from 1 to 1048576/],
  [['demo', '--blocks', '1.5'], '--blocks', '1.5', /integer from 1 to 1048576/],
  [['demo', '--blocks', '1e12'], '--blocks', '1e12', /integer from 1 to 1048576/],
  [['demo', '--blocks', '0'], '--blocks', '0', /from 1 to/],
  [['demo', '--blocks', '1048577'], '--blocks', '1048577', /from 1 to 1048576/],
  [['demo', '--xfs', '256M'], '--xfs', '256M', /from 300M to 1T/],
  [['demo', '--xfs', 'abc'], '--xfs', 'abc', /K, M, G or T suffix/],
  [['demo', '--xfs', '512M', '--dir', W], '--xfs and --dir', null, /mutually exclusive/],
  [['demo', '--dir', NOPE], '--dir', NOPE, /is not a directory: create it first or pick another --dir/],
  [['demo', '--dir', F], '--dir', F, /not a directory/],
  [['demo', '--image', join(W, 'x.img')], '--image', null, /--xfs SIZE/],
  [['demo', '--force'], '--force', null, /--image PATH/],
  [['demo', '--dir', W, '--image', join(W, 'x.img')], '--dir and --image', null, /mutually exclusive/],
  [['demo', '--xfs', '300M', '--image', IMG], '--image', IMG, /--force/, 'xfs'],
  [['demo', '--xfs', '300M', '--image', join(NOPE, 'x.img')], '--image', join(NOPE, 'x.img'), /does not exist/, 'xfs'],
  [['demo', '--xfs', '300M', '--blocks', '100000'], '--xfs', '300M', /give --xfs \d+M or more/, 'xfs'],
  [['demo', '--force=yes'], '--force=yes', null, /unknown option/],
  [['demo', '--nope'], '--nope', null, /unknown option/],

  // stress
  [['stress', '--workers', '32'], '--workers', '32', new RegExp(`from 1 to ${MAX_WORKERS} \\(the engine's maximum`)],
  [['stress', '--workers', '0'], '--workers', '0', /from 1 to 31/],
  [['stress', '--workers', 'two'], '--workers', 'two', /integer from 1 to 31/],
  [['stress', '--mode', 'threads'], '--mode', 'threads', /Allowed choices are workers, inline/],
  [['stress', '--mode', 'inline', '--workers', '2'], '--workers', null, /applies to --mode workers only/],
  [['stress', '--threads', '0'], '--threads', '0', /from 1 to 16/],
  [['stress', '--threads', '17'], '--threads', '17', /from 1 to 16/],
  [['stress', '--threads', '16', '--workers', '16'], '--threads', null, /31 participants/],
  [['stress', '--qd', '0'], '--qd', '0', /from 1 to 256/],
  [['stress', '--qd', '257'], '--qd', '257', /from 1 to 256/],
  [['stress', '--duration', '0'], '--duration', '0', /seconds above 0/],
  [['stress', '--duration', '-1'], '--duration', '-1', /seconds above 0/],
  [['stress', '--duration', 'abc'], '--duration', 'abc', /seconds above 0/],
  [['stress', '--duration', '604801'], '--duration', '604801', /at most 604800/],
  [['stress', '--ops', '0'], '--ops', '0', /integer from 1/],
  [['stress', '--ops', '1.5'], '--ops', '1.5', /integer from 1/],
  [['stress', '--seed', '-1'], '--seed', '-1', /from 0 to 4294967295/],
  [['stress', '--seed', '4294967296'], '--seed', '4294967296', /from 0 to 4294967295/],
  [['stress', '--seed', 'x'], '--seed', 'x', /from 0 to 4294967295/],
  [['stress', '--window-us', '100'], '--window-us', null, /add --emulate-xfs-bug/],
  [['stress', '--emulate-xfs-bug', '--window-us', '10000001'], '--window-us', '10000001', /from 0 to 10000000/],
  [['stress', '--emulate-xfs-bug', '--window-us', 'x'], '--window-us', 'x', /from 0 to 10000000/],
  [['stress', '--block-size', '3000'], '--block-size', '3000', /power of two from 512 to 1M/],
  [['stress', '--block-size', '256'], '--block-size', '256', /power of two from 512 to 1M/],
  [['stress', '--block-size', '2M'], '--block-size', '2M', /power of two from 512 to 1M/],
  [['stress', '--block-size', 'x'], '--block-size', 'x', /power of two/],
  [['stress', '--cluster-size', '2K'], '--cluster-size', '2K', /from 4K to 64M.*at least --block-size/],
  [['stress', '--cluster-size', '128M'], '--cluster-size', '128M', /to 64M/],
  [['stress', '--cluster-size', '96K'], '--cluster-size', '96K', /power of two/],
  [['stress', '--workload', 'nope'], '--workload', 'nope', /Allowed choices are qcow2-alloc, append-race, eof-extend, mixed/],
  [['stress', '--workaround', 'nope'], '--workaround', 'nope', /auto, always, never, probe/],
  [['stress', '--backend', 'nope'], '--backend', 'nope', /auto, io_uring, libaio, sync/],
  [['stress', '--xfs', '256M'], '--xfs', '256M', /from 300M to 1T.*mkfs\.xfs refuses/],
  [['stress', '--xfs', '1.1G'], '--xfs', '1.1G', /whole number of bytes/],
  [['stress', '--xfs', '512M', '--dir', W], '--xfs and --dir', null, /mutually exclusive/],
  [['stress', '--dir', NOPE], '--dir', NOPE, /is not a directory: create it first or pick another --dir/],
  [['stress', '--dir', F], '--dir', F, /not a directory/],
  [['stress', '--image', join(W, 'x.img')], '--image', null, /--xfs SIZE/],
  [['stress', '--dir', W, '--image', join(W, 'x.img')], '--dir and --image', null, /mutually exclusive/],
  [['stress', '--force'], '--force', null, /--image PATH/],
  [['stress', '--qd', '256', '--cluster-size', '64M'], '--qd', null, /buffer pool.*lower --qd or --cluster-size/],
  [['stress', '--xfs', '300M', '--image', IMG], '--image', IMG, /exists; pass --force/, 'xfs'],
  [['stress', '--xfs', '300M', '--workload', 'eof-extend', '--qd', '256'], '--xfs', '300M', /eof-extend workload needs about .*give --xfs \d+M or more/, 'xfs'],
  [['stress', '--json=yes'], '--json=yes', null, /unknown option/],
  [['stress', '--quiet=yes'], '--quiet=yes', null, /unknown option/],
  [['stress', '--emulate-xfs-bug=yes'], '--emulate-xfs-bug=yes', null, /unknown option/],
  [['stress', 'extra'], 'too many arguments', null, /Expected 0 arguments/],

  // probe
  [['probe', NOPE], 'PATH', NOPE, /does not exist: give an existing directory/],
  [['probe', '/dev/null'], 'PATH', '/dev/null', /neither a directory nor a regular file/],
  [['probe', W, '--budget', '0'], '--budget', '0', /seconds above 0 and at most 86400/],
  [['probe', W, '--budget', 'x'], '--budget', 'x', /seconds above 0/],
  [['probe', W, '--budget', '86401'], '--budget', '86401', /at most 86400/],
  [['probe', W, '--iterations', '0'], '--iterations', '0', /from 1 to 100000000/],
  [['probe', W, '--iterations', '1.5'], '--iterations', '1.5', /from 1 to 100000000/],
  [['probe', W, '--budget', '1', '--iterations', '5'], '--budget and --iterations', null, /mutually exclusive/],
  [['probe', W, '--backend', 'nope'], '--backend', 'nope', /auto, io_uring, libaio, sync/],
  [['probe', W, '--cache', '--cache-dir', F], '--cache-dir', F, /is a file, not a directory; give a directory/],
  [['probe', W, '--cache', '--cache-dir', join(F, 'sub')], '--cache-dir', join(F, 'sub'), /is a file, not a directory/],
  [['probe', W, '--cache-dir', W], '--cache-dir', null, /only applies with --cache/],
  [['probe', W, '--refresh'], '--refresh', null, /only applies with --cache/],
  [['probe', W, '--cache', '--race'], '--cache and --race', null, /drop --race/],
  [['probe', W, '--cache', '--emulate-xfs-bug'], '--cache with --emulate-xfs-bug', null, /never cached/],
  [['probe', W, '--race=yes'], '--race=yes', null, /unknown option/],
  [['probe', W, '--json=yes'], '--json=yes', null, /unknown option/],
  [['probe'], 'path', null, /missing required argument/],

  // bench
  [['bench', '--bs', '0'], '--bs', '0', /from 512 to 16M that is a multiple of 512/],
  [['bench', '--bs', '1G'], '--bs', '1G', /from 512 to 16M/],
  [['bench', '--bs', '1000'], '--bs', '1000', /multiple of 512/],
  [['bench', '--bs', 'x'], '--bs', 'x', /from 512 to 16M/],
  [['bench', '--size', '0'], '--size', '0', /from 1M to 1T/],
  [['bench', '--size', '1K'], '--size', '1K', /from 1M to 1T/],
  [['bench', '--size', 'x'], '--size', 'x', /from 1M to 1T/],
  [['bench', '--size', '2T'], '--size', '2T', /to 1T/],
  [['bench', '--size', '1048577'], '--size', '1048577', /multiple of 512/],
  [['bench', '--bs', '1M', '--size', '8M'], '--size', '8M', /16 blocks of --bs/],
  [['bench', '--engines', 'nope'], '--engines', 'nope', /use ringfence, ringfence-batch, ringfence-workers, node:fs, node:fs-uring, fio-io_uring, fio-io_uring-fixed, fio-libaio, qemu-img/],
  [['bench', '--engines', 'ringfence,ringfence'], '--engines', 'ringfence,ringfence', /at most once/],
  [['bench', '--repeat', '0'], '--repeat', '0', /from 1 to 100/],
  [['bench', '--repeat', '101'], '--repeat', '101', /from 1 to 100/],
  [['bench', '--workers', '0'], '--workers', '0', new RegExp(`from 1 to ${MAX_WORKERS}`)],
  [['bench', '--workers', '99'], '--workers', '99', new RegExp(`from 1 to ${MAX_WORKERS} \\(the engine's maximum`)],
  [['bench', '--chart', '/nonexistent/x.svg'], '--chart', '/nonexistent/x.svg', /directory \/nonexistent does not exist/],
  [['bench', '--chart', W], '--chart', W, /is a directory; give a file path/],
  [['bench', '--rw', 'sideways'], '--rw', 'sideways', /use read, write, randread, randwrite, randrw/],
  [['bench', '--rw', 'read,,write'], '--rw', 'read,,write', /without empty items/],
  [['bench', '--qd', '0'], '--qd', '0', /integers from 1 to 1024/],
  [['bench', '--qd', '1,1025'], '--qd', '1025', /integers from 1 to 1024/],
  [['bench', '--qd', 'x'], '--qd', 'x', /integers from 1 to 1024/],
  [['bench', '--runtime', '0'], '--runtime', '0', /seconds above 0 and at most 3600/],
  [['bench', '--runtime', 'x'], '--runtime', 'x', /seconds above 0/],
  [['bench', '--runtime', '3601'], '--runtime', '3601', /at most 3600/],
  [['bench', '--backend', 'nope'], '--backend', 'nope', /auto, io_uring, libaio, sync/],
  [['bench', '--file', '/dev/null'], '--file', '/dev/null', /is a device/],
  [['bench', '--file', W], '--file', W, /is a directory/],
  [['bench', '--file', join(NOPE, 'data')], '--file', join(NOPE, 'data'), /does not exist/],
  [['bench', '--file', join(W, 'data'), '--dir', W], '--file and --dir', null, /mutually exclusive/],
  [['bench', '--xfs', '256M'], '--xfs', '256M', /from 300M/],
  [['bench', '--dir', NOPE], '--dir', NOPE, /is not a directory: create it first or pick another --dir/],
  [['bench', '--bs', '16M', '--qd', '64'], '--bs', null, /I\/O buffers.*lower --bs or the largest --qd/],
  [['bench', '--xfs', '300M', '--size', '512M'], '--xfs', '300M', /data file \(--size 512M\) needs/, 'xfs'],
  [['bench', '--no-direct=yes'], '--no-direct=yes', null, /unknown option/],
  [['bench', '--json=yes'], '--json=yes', null, /unknown option/],

  // cleanup
  [['cleanup', NOPE], 'DIR', NOPE, /create it first or pick another DIR/],
  [['cleanup', F], 'DIR', F, /not a directory/],
  [['cleanup', '--dry-run=yes'], '--dry-run=yes', null, /unknown option/],
  [['cleanup', '--untracked=yes'], '--untracked=yes', null, /unknown option/],
  [['cleanup', '--json=yes'], '--json=yes', null, /unknown option/],

  [['serve', F, '--poll-us', 'x'], '--poll-us', 'x', /integer/],
  [['serve', F, '--poll-us', '10', '--workers', '1'], '--poll-us', null, /drop --workers/],

  // the program
  [['nope'], 'nope', null, /unknown command/],
];

for (const [args, flag, value, allowed, needs] of rows) {
  const name = `${args.join(' ')}: exit 2, names ${flag}, no side effects`;
  const t = needs === 'xfs' ? skipUnless(test, needRoot) : test;
  t(name, async () => {
    const before = snapshot([W]);
    const r = cli(args);
    assert.is(r.code, 2, `exit code ${r.code} (signal ${r.signal}); stderr: ${r.stderr}`);
    const msg = r.stderr.split('\n').find((l) => l.includes(flag)) ?? '';
    assert.ok(msg, `no line of stderr names ${flag}: ${r.stderr}`);
    if (value !== null) assert.ok(msg.includes(value), `the message does not show the bad value ${value}: ${msg}`);
    assert.match(msg, allowed, `the message does not say what is allowed: ${msg}`);
    assert.equal(await sideEffects(before, { pids: [r.pid] }), [], 'side effects');
  });
}

test('--json: a usage error is one JSON object on stdout (stress, probe, bench)', async () => {
  for (const args of [['stress', '--json', '--workers', '99'], ['probe', W, '--json', '--budget', '0'], ['bench', '--json', '--bs', '0']]) {
    const before = snapshot([W]);
    const r = cli(args);
    assert.is(r.code, 2, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.is(j.ok, false); assert.is(j.exitCode, 2);
    assert.match(j.error, new RegExp(args[args.length - 2]));
    assert.equal(await sideEffects(before, { pids: [r.pid] }), []);
  }
});

test('help texts state the limits and the cleanup command exists', () => {
  const s = cli(['stress', '--help']);
  assert.is(s.code, 0);
  assert.match(s.stdout, new RegExp(`engine worker threads, 1 to ${MAX_WORKERS}`));
  assert.match(s.stdout, /143 stopped by SIGTERM/);
  const c = cli(['cleanup', '--help']);
  assert.is(c.code, 0);
  assert.match(c.stdout, /--dry-run/);
  assert.match(c.stdout, /ringfence-run\.json/);
  assert.match(cli(['--help']).stdout, /cleanup/);
});

// ---- leftovers without root: a temporary directory and a probe scratch directory ---------

const VOLUME = join(ROOT, 'dist', 'src', 'volume.js');
const SCRATCH = join(ROOT, 'dist', 'src', 'probe', 'scratch.js');

/** A child that creates something, prints its path, then is SIGKILLed (or lives until killed). */
async function childThatMakes(code, { die = true } = {}) {
  const src = `${code}\nprocess.stdout.write(made + '\\n');\n${die ? "process.kill(process.pid, 'SIGKILL');" : 'setInterval(() => {}, 1000);'}`;
  const c = spawn(process.execPath, ['--input-type=module', '-e', src], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const closed = new Promise((r) => c.on('close', (code, signal) => r({ code, signal })));
  await new Promise((r) => c.stdout.on('data', (d) => { out += d; if (out.includes('\n')) r(); }).on('end', r));
  return { child: c, path: out.trim(), closed };
}

test('a killed run\'s temporary directory is reported at start and removed by cleanup; a live one is left alone', async () => {
  const before = snapshot();
  const dead = await childThatMakes(`import { tempVolume } from ${JSON.stringify(VOLUME)}; const made = tempVolume('test').dir;`);
  assert.equal((await dead.closed).signal, 'SIGKILL');
  assert.ok(existsSync(dead.path) && readState(dead.path)?.kind === 'tempdir', `${dead.path} with its run record`);
  const live = await childThatMakes(`import { tempVolume } from ${JSON.stringify(VOLUME)}; const made = tempVolume('test').dir;`, { die: false });
  try {
    const d = cli(['demo', '--dir', W, '--blocks', '8']);
    assert.is(d.code, 0, d.stderr + d.stdout);
    assert.match(d.stderr, /leftovers of an earlier run/);
    assert.ok(d.stderr.includes(dead.path), d.stderr);
    assert.not.ok(d.stderr.includes(live.path), 'a live run is not a leftover');
    assert.match(d.stderr, /ringfence cleanup/);
    const dry = cli(['cleanup', '--dry-run', '--json']);
    assert.is(dry.code, 0, dry.stderr);
    const j = JSON.parse(dry.stdout);
    const mine = j.leftovers.find((l) => l.dir === dead.path);
    assert.ok(mine, dry.stdout);
    assert.is(mine.owner, 'dead'); assert.is(mine.pid, dead.child.pid);
    assert.ok(mine.actions.some((a) => /would remove/.test(a)));
    assert.ok(j.skipped.some((s) => s.dir === live.path && /in use/.test(s.why)), dry.stdout);
    assert.ok(existsSync(dead.path), '--dry-run changes nothing');
    const c = cli(['cleanup']);
    assert.is(c.code, 0, c.stderr + c.stdout);
    assert.match(c.stdout, new RegExp(`removed ${dead.path}`));
    assert.match(c.stdout, new RegExp(`left alone: ${live.path}: in use`));
    assert.not.ok(existsSync(dead.path));
    assert.ok(existsSync(live.path));
  } finally {
    live.child.kill('SIGTERM');
    await live.closed;
  }
  assert.not.ok(existsSync(live.path), 'the live one cleaned up after itself on SIGTERM');
  assert.equal(await sideEffects(before, { pids: [dead.child.pid, live.child.pid] }), []);
});

test('a killed probe\'s scratch directory is reported by the next probe there and removed by cleanup DIR', async () => {
  const dead = await childThatMakes(`import { makeScratch } from ${JSON.stringify(SCRATCH)}; const made = makeScratch(${JSON.stringify(W)}).dir;`);
  await dead.closed;
  assert.ok(existsSync(dead.path));
  const p = cli(['probe', W]);
  assert.is(p.code, 0, p.stderr);
  assert.ok(p.stderr.includes(dead.path), p.stderr);
  assert.match(p.stderr, new RegExp(`ringfence cleanup ${W}`));
  const c = cli(['cleanup', W]);
  assert.is(c.code, 0, c.stderr);
  assert.not.ok(existsSync(dead.path), c.stdout);
});

// ---- with loop-mounted XFS volumes (root) -------------------------------------------------

const xtest = skipUnless(test, needRoot);

/** Waits until `child` (a stress run) has its volume mounted; returns its run record. */
async function mountedVolumeOf(child, ms = 20_000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const mine = tempDirs().map((d) => ({ d, s: readState(d) })).find((x) => x.s && x.s.pid === child.pid && x.s.loopDevice);
    if (mine && mountLines().some((l) => l.includes(` ${mine.s.mountPoint} `))) return mine.s;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

function spawnCli(args, opts = {}) {
  const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: ENV, ...opts });
  c.out = ''; c.err = '';
  c.stdout.on('data', (d) => { c.out += d; });
  c.stderr.on('data', (d) => { c.err += d; });
  c.closed = new Promise((r) => c.on('close', (code, signal) => r({ code, signal })));
  return c;
}

async function exitWithin(c, ms) {
  const res = await Promise.race([c.closed, new Promise((r) => setTimeout(() => r('timeout'), ms).unref())]);
  if (res === 'timeout') { c.kill('SIGKILL'); await c.closed; }
  return res;
}

xtest('ringfence cleanup finds and removes the mount, loop device, image and directory of a SIGKILLed stress --xfs run', async () => {
  // (--xfs 256M is refused: mkfs.xfs needs at least 300M; see the table above.)
  const before = snapshot([W]);
  const c = spawnCli(['stress', '--xfs', '300M', '--duration', '30', '--quiet']);
  const s = await mountedVolumeOf(c);
  assert.ok(s, `the volume was mounted; stderr: ${c.err}`);
  c.kill('SIGKILL');
  assert.equal(await c.closed, { code: null, signal: 'SIGKILL' });
  // What a SIGKILL leaves behind: the directory, its image, the mount and the loop device.
  assert.ok(existsSync(s.image), 'image left');
  assert.ok(mountLines().some((l) => l.includes(` ${s.mountPoint} `)), 'mount left');
  assert.ok(loopLines().some((l) => l.includes(s.image)), 'loop device left');

  const probe = cli(['probe', W]);
  assert.is(probe.code, 0, probe.stderr);
  assert.ok(probe.stderr.includes(s.dir) && /ringfence cleanup/.test(probe.stderr), `the next run reports it: ${probe.stderr}`);

  const dry = cli(['cleanup', '--dry-run', '--json']);
  assert.is(dry.code, 0, dry.stderr);
  const l = JSON.parse(dry.stdout).leftovers.find((x) => x.dir === s.dir);
  assert.ok(l, dry.stdout);
  assert.is(l.pid, c.pid); assert.is(l.owner, 'dead');
  assert.equal(l.mounts, [s.mountPoint]);
  assert.ok(l.actions.some((a) => a === `would unmount ${s.mountPoint}`), l.actions.join('; '));
  assert.ok(l.actions.some((a) => a.startsWith(`would delete the image ${s.image}`)));
  assert.ok(mountLines().some((x) => x.includes(` ${s.mountPoint} `)), '--dry-run leaves the mount');

  const r = cli(['cleanup']);
  assert.is(r.code, 0, r.stderr + r.stdout);
  assert.ok(r.stdout.includes(`unmounted ${s.mountPoint}`), r.stdout);
  assert.match(r.stdout, new RegExp(`removed ${s.dir} with the image`));
  assert.not.ok(existsSync(s.dir));
  assert.equal(await sideEffects(before, { pids: [c.pid, probe.pid, dry.pid, r.pid] }), [], 'nothing left');
});

for (const [sig, code] of [['SIGTERM', 143], ['SIGINT', 130]]) {
  xtest(`${sig} to a running stress --xfs: graceful stop, exit ${code}, nothing left behind`, async () => {
    const before = snapshot([W]);
    const c = spawnCli(['stress', '--xfs', '300M', '--duration', '30']);
    assert.ok(await mountedVolumeOf(c), `mounted; stderr: ${c.err}`);
    await new Promise((r) => setTimeout(r, 1000));
    c.kill(sig);
    const res = await exitWithin(c, 30_000);
    assert.is.not(res, 'timeout', `no exit within 30 s of ${sig}; stderr: ${c.err}`);
    assert.equal(res, { code, signal: null }, c.err);
    assert.match(c.err, new RegExp(`${sig}: stopping the run`));
    assert.match(c.out, /INTERRUPTED/);
    assert.equal(await sideEffects(before, { pids: [c.pid], graceMs: 5000 }), [], 'nothing left');
  });
}

xtest('a double Ctrl-C to the process group: exit 130, nothing left behind', async () => {
  for (const gap of [0, 150]) {
    const before = snapshot([W]);
    const c = spawnCli(['stress', '--xfs', '300M', '--duration', '30', '--quiet'], { detached: true });
    assert.ok(await mountedVolumeOf(c), `mounted; stderr: ${c.err}`);
    await new Promise((r) => setTimeout(r, 500));
    process.kill(-c.pid, 'SIGINT');
    await new Promise((r) => setTimeout(r, gap));
    try { process.kill(-c.pid, 'SIGINT'); } catch { /* already gone */ }
    const res = await exitWithin(c, 30_000);
    assert.equal(res, { code: 130, signal: null }, c.err);
    assert.equal(await sideEffects(before, { pids: [c.pid], graceMs: 5000 }), [], `nothing left (gap ${gap} ms)`);
  }
});

xtest('--image keeps the image and leaves no empty temp directory', async () => {
  const image = join(W, 'kept.img');
  const before = snapshot();
  const r = cli(['stress', '--xfs', '300M', '--image', image, '--duration', '1', '--quiet', '--json'], { timeout: 60_000 });
  try {
    assert.is(r.code, 0, r.stderr);
    assert.ok(existsSync(image) && statSync(image).size === 300 * 2 ** 20, 'the image is kept');
    assert.equal(await sideEffects(before, { pids: [r.pid] }), [], 'no temp directory, mount or loop device left');
  } finally { rmSync(image, { force: true }); }
});

test.after(() => work.cleanup());
test.run();
