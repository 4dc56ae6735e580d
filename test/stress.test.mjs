// `ringfence stress`: crc32c and block-format unit tests (no root), then the CLI end to end on
// small loop-mounted XFS volumes (root): exit codes, JSON, reproducibility, cleanup, SIGINT.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32c, crc32cUpdate, crc32cBytewise } from '../dist/src/stress/crc32c.js';
import {
  HEADER_BYTES, MAGIC, UnitModel, classify, decodeHeader, encodeHeader, expectedCrc, fillUnit, unitCrc,
} from '../dist/src/stress/verify.js';
import { Rng, StreamDigest } from '../dist/src/stress/rng.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const haveMkfs = (() => { try { execFileSync('mkfs.xfs', ['-V'], { stdio: 'ignore' }); return true; } catch { return false; } })();
const canXfs = isRoot && haveMkfs;
if (!canXfs) console.log(`skip the XFS end-to-end tests: ${!isRoot ? 'they need root (process.getuid() !== 0)' : 'mkfs.xfs is not installed'}`);

// ---- crc32c ----------------------------------------------------------------------------

test('crc32c: known vectors (iSCSI RFC 3720 B.4 and the check value)', () => {
  assert.is(crc32c('123456789'), 0xe3069283);
  assert.is(crc32c(new Uint8Array(0)), 0);
  assert.is(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.is(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.is(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.is(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  assert.is(crc32c('The quick brown fox jumps over the lazy dog'), 0x22620404);
});

test('crc32c: slicing-by-8 equals the byte-wise table, and incremental equals one-shot', () => {
  const r = new Rng(7);
  for (let n = 0; n < 300; n += 1 + (n >> 3)) {
    const b = Uint8Array.from({ length: n }, () => r.next() & 0xff);
    const whole = crc32c(b);
    assert.is(whole, crc32cBytewise(b), `length ${n}`);
    const cut = r.below(n + 1);
    assert.is(crc32cUpdate(crc32cUpdate(0, b, 0, cut), b, cut, n), whole, `split at ${cut} of ${n}`);
  }
});

// ---- block format -----------------------------------------------------------------------

test('header: encode/decode round-trips 64-bit offsets and sequence numbers', () => {
  const b = new Uint8Array(64);
  const h = { magic: MAGIC, crc: 0xdeadbeef, offset: 2 ** 40 + 4096, seq: 2 ** 35 + 7, seed: 0xfffffffe, length: 4096 };
  encodeHeader(b, 16, h);
  assert.equal(decodeHeader(b, 16), h);
  assert.is(HEADER_BYTES, 32);
});

test('fillUnit: deterministic, self-checking, distinct per (offset, seq, seed)', () => {
  const a = new Uint8Array(4096), b = new Uint8Array(4096);
  const crc = fillUnit(a, 0, 4096, 8192, 5, 42);
  fillUnit(b, 0, 4096, 8192, 5, 42);
  assert.equal(a, b);
  assert.is(unitCrc(a, 0, 4096), crc);
  assert.is(decodeHeader(a).crc, crc);
  assert.is(expectedCrc(4096, 8192, 5, 42), crc);
  assert.is.not(expectedCrc(4096, 8192, 6, 42), crc);
  assert.is.not(expectedCrc(4096, 12288, 5, 42), crc);
  assert.is.not(expectedCrc(4096, 8192, 5, 43), crc);
});

test('classify: good, lost, stale, misdirected, torn', () => {
  const U = 4096, seed = 9, exp = { offset: 40960, seq: 12, seed };
  const good = new Uint8Array(U);
  fillUnit(good, 0, U, 40960, 12, seed);
  assert.is(classify(good, 0, U, U, exp).cls, null);
  // lost: zeros where a completed write should be, or beyond EOF.
  assert.is(classify(new Uint8Array(U), 0, U, U, exp).cls, 'lost');
  const eof = classify(new Uint8Array(U), 0, U, 0, exp);
  assert.is(eof.cls, 'lost'); assert.ok(eof.found.eof);
  // zeros expected and found: fine; beyond EOF with zeros expected: fine.
  assert.is(classify(new Uint8Array(U), 0, U, U, { ...exp, seq: 0 }).cls, null);
  assert.is(classify(new Uint8Array(U), 0, U, 0, { ...exp, seq: 0 }).cls, null);
  // stale: an older write of the same offset, another run's seed, or data where zeros belong.
  const old = new Uint8Array(U); fillUnit(old, 0, U, 40960, 11, seed);
  const st = classify(old, 0, U, U, exp);
  assert.is(st.cls, 'stale'); assert.is(st.found.seq, 11); assert.ok(st.found.crcOk);
  const other = new Uint8Array(U); fillUnit(other, 0, U, 40960, 12, seed + 1);
  assert.is(classify(other, 0, U, U, exp).cls, 'stale');
  assert.is(classify(good, 0, U, U, { ...exp, seq: 0 }).cls, 'stale');
  // misdirected: a valid block meant for another offset.
  const mis = new Uint8Array(U); fillUnit(mis, 0, U, 45056, 12, seed);
  const m = classify(mis, 0, U, U, exp);
  assert.is(m.cls, 'misdirected'); assert.is(m.found.offset, 45056);
  // torn: payload damage, header damage, half old and half new, garbage, short read.
  const flip = good.slice(); flip[3000] ^= 1;
  assert.is(classify(flip, 0, U, U, exp).cls, 'torn');
  const hdr = good.slice(); hdr[17] ^= 0x80;
  assert.is(classify(hdr, 0, U, U, exp).cls, 'torn');
  const half = good.slice(); half.set(old.subarray(2048), 2048);
  assert.is(classify(half, 0, U, U, exp).cls, 'torn');
  const halfZero = good.slice(); halfZero.fill(0, 2048);
  assert.is(classify(halfZero, 0, U, U, exp).cls, 'torn');
  assert.is(classify(new Uint8Array(U).fill(0xa5), 0, U, U, exp).cls, 'torn');
  assert.is(classify(good, 0, U, 2048, exp).cls, 'torn');
});

test('classify works on units inside a larger buffer (sub-block units)', () => {
  const buf = new Uint8Array(4096);
  for (let i = 0; i < 8; i++) fillUnit(buf, i * 512, 512, 8192 + i * 512, 100 + i, 3);
  for (let i = 0; i < 8; i++) assert.is(classify(buf, i * 512, 512, 512, { offset: 8192 + i * 512, seq: 100 + i, seed: 3 }).cls, null);
  buf.fill(0, 1024, 1536);
  assert.is(classify(buf, 1024, 512, 512, { offset: 9216, seq: 102, seed: 3 }).cls, 'lost');
});

test('UnitModel: writes, zero-writes extend, truncate clears', () => {
  const m = new UnitModel(4096, 2);
  m.zero(0, 65536);
  assert.is(m.size, 65536);
  m.write(3, 7); m.write(20, 8);
  assert.is(m.seqAt(3), 7); assert.is(m.size, 21 * 4096);
  m.truncate(8192);
  assert.is(m.seqAt(3), 0); assert.is(m.size, 8192);
  assert.is(m.seqAt(10000), 0);
});

test('Rng and StreamDigest are deterministic', () => {
  const a = new Rng(5), b = new Rng(5), c = new Rng(6);
  const sa = Array.from({ length: 8 }, () => a.next()), sb = Array.from({ length: 8 }, () => b.next());
  assert.equal(sa, sb);
  assert.not.equal(sa, Array.from({ length: 8 }, () => c.next()));
  const d1 = new StreamDigest('h'), d2 = new StreamDigest('h'), d3 = new StreamDigest('h');
  for (let i = 0; i < 1000; i++) { d1.add(1, i * 4096, 4096, i); d2.add(1, i * 4096, 4096, i); d3.add(1, i * 4096, 4096, i + (i === 999)); }
  assert.is(d1.digest(), d2.digest());
  assert.is.not(d1.digest(), d3.digest());
});

// ---- CLI end to end -----------------------------------------------------------------------

function run(args, { timeoutMs = 90_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'stress', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`stress ${args.join(' ')} timed out; stderr: ${stderr}`)); }, timeoutMs);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
  });
}

function json(r) {
  try { return JSON.parse(r.stdout); } catch { throw new Error(`stdout is not one JSON object (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`); }
}

const ringfenceMounts = () => readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => l.includes('/ringfence-'));
// Loop devices backed by a ringfence image (other users of this machine may attach their own).
const loops = () => execFileSync('losetup', ['-a'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('/ringfence-')).sort();
/** Ringfence mounts and loop devices that exist right now (the baseline for a cleanup check). */
const snapshot = () => [...ringfenceMounts(), ...loops()];

/**
 * No ringfence mount and no ringfence loop device beyond those in `before` (another process on
 * this machine may hold its own ringfence volume; loop autoclear can lag a little).
 */
async function assertCleanedUp(before, what) {
  let m = [], extra = [];
  for (let i = 0; i < 50; i++) {
    m = ringfenceMounts().filter((l) => !before.includes(l));
    extra = loops().filter((l) => !before.includes(l));
    if (m.length === 0 && extra.length === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(m, [], `${what}: ringfence mounts left behind`);
  assert.equal(extra, [], `${what}: loop devices left behind`);
}

const XFS = ['--xfs', '512M'];
const xtest = (name, fn) => (canXfs ? test(name, fn) : test.skip(name, fn));

test('usage errors exit 2 with a message that says the fix', async () => {
  const a = await run(['--workload', 'nope']);
  assert.is(a.code, 2, a.stderr);
  assert.match(a.stderr, /Allowed choices are qcow2-alloc, append-race, eof-extend, mixed/);
  assert.is(a.stdout, '');
  const b = await run(['--dir', '/nonexistent', '--json']);
  assert.is(b.code, 2, b.stderr);
  assert.match(b.stderr, /\/nonexistent is not a directory: create it first or pick another --dir/);
  const bj = json(b);
  assert.is(bj.ok, false); assert.is(bj.exitCode, 2);
  const c = await run(['--window-us', '100', '--dir', '/tmp']);
  assert.is(c.code, 2); assert.match(c.stderr, /add --emulate-xfs-bug/);
  const d = await run(['--block-size', '3000', '--dir', '/tmp']);
  assert.is(d.code, 2); assert.match(d.stderr, /power of two/);
  const e = await run(['--qd', 'x', '--dir', '/tmp']);
  assert.is(e.code, 2); assert.match(e.stderr, /--qd must be an integer/);
});

xtest('qcow2-alloc with the emulated bug and --workaround never: lost writes, exit 1, full JSON', async () => {
  const before = snapshot();
  const r = await run([...XFS, '--emulate-xfs-bug', '--workaround', 'never', '--duration', '4', '--json']);
  assert.is(r.code, 1, r.stderr);
  const j = json(r);
  assert.is(j.ok, false);
  assert.ok(j.bad.lost > 0, `lost ${j.bad.lost}`);
  for (const k of ['ok', 'fs', 'kernel', 'workaround', 'emulateBug', 'workload', 'seed', 'ops', 'bytesWritten', 'bytesVerified',
    'serialised', 'waits', 'bad', 'firstBad', 'sizeOk', 'streamDigest', 'durationMs', 'volume']) assert.ok(k in j, `JSON has ${k}`);
  assert.is(j.fs, 'xfs');
  assert.is(j.workload, 'qcow2-alloc');
  assert.equal(j.workaround.policy, 'never'); assert.is(j.workaround.enabled, false); assert.type(j.workaround.rule, 'string');
  assert.equal(j.emulateBug, { enabled: true, windowUs: 2000 });
  assert.ok(j.firstBad.length > 0 && j.firstBad.length <= 10);
  assert.is(j.firstBad[0].class, 'lost');
  assert.ok(j.firstBad[0].expected.seq > 0);
  assert.ok(j.bytesVerified > 0 && j.bytesWritten > 0 && j.ops > 0);
  assert.match(j.volume.note, /XFS volume on a loop device/);
  assert.match(j.streamDigest, /^[0-9a-f]{32}$/);
  for (const k of ['count', 'totalMs', 'maxMs']) assert.type(j.waits[k], 'number');
  for (const k of ['lost', 'stale', 'misdirected', 'torn']) assert.type(j.bad[k], 'number');
  await assertCleanedUp(before, 'qcow2-alloc never');
});

xtest('qcow2-alloc with the emulated bug and --workaround always: clean, exit 0, requests serialised', async () => {
  const before = snapshot();
  const r = await run([...XFS, '--emulate-xfs-bug', '--workaround', 'always', '--duration', '3', '--json']);
  assert.is(r.code, 0, r.stderr + r.stdout);
  const j = json(r);
  assert.is(j.ok, true); assert.is(j.bad.total, 0); assert.is(j.sizeOk, true);
  assert.is(j.workaround.enabled, true);
  assert.ok(j.serialised > 0 && j.waits.count > 0, `serialised ${j.serialised}, waits ${j.waits.count}`);
  await assertCleanedUp(before, 'qcow2-alloc always');
});

xtest('append-race with the emulated bug and --workaround never: lost writes and wrong sizes, exit 1', async () => {
  const before = snapshot();
  const r = await run([...XFS, '--workload', 'append-race', '--emulate-xfs-bug', '--workaround', 'never', '--duration', '3', '--json']);
  assert.is(r.code, 1, r.stderr);
  const j = json(r);
  assert.ok(j.bad.lost > 0, `lost ${j.bad.lost}`);
  assert.is(j.sizeOk, false);
  assert.is(j.firstBad[0].offset, 4096);
  await assertCleanedUp(before, 'append-race never');
});

xtest('inline mode (--mode inline): the same contrast, append-race with the emulated bug: never loses writes, auto none', async () => {
  const before = snapshot();
  const never = await run([...XFS, '--workload', 'append-race', '--emulate-xfs-bug', '--workaround', 'never', '--mode', 'inline', '--duration', '3', '--json']);
  assert.is(never.code, 1, never.stderr);
  const n = json(never);
  assert.match(n.backend, /io_uring|libaio|sync/);
  assert.ok(n.bad.lost > 0, `lost ${n.bad.lost}`);
  assert.is(n.sizeOk, false);
  const auto = await run([...XFS, '--workload', 'append-race', '--emulate-xfs-bug', '--mode', 'inline', '--duration', '3', '--json']);
  assert.is(auto.code, 0, auto.stderr + auto.stdout);
  const a = json(auto);
  assert.is(a.workaround.enabled, true);
  assert.is(a.bad.total, 0); assert.is(a.sizeOk, true);
  await assertCleanedUp(before, 'append-race inline');
});

xtest('--threads 2: writer threads with engines of their own, one table: never loses writes, auto none', async () => {
  const before = snapshot();
  const never = await run([...XFS, '--workload', 'append-race', '--emulate-xfs-bug', '--workaround', 'never', '--threads', '2', '--duration', '3', '--json']);
  assert.is(never.code, 1, never.stderr);
  const n = json(never);
  assert.is(n.options.threads, 2);
  assert.ok(n.bad.lost > 0, `lost ${n.bad.lost}`);
  assert.ok(n.notes.some((x) => /2 writer threads/.test(x)), n.notes.join('; '));
  const auto = await run([...XFS, '--workload', 'append-race', '--emulate-xfs-bug', '--threads', '2', '--duration', '3', '--json']);
  assert.is(auto.code, 0, auto.stderr + auto.stdout);
  const a = json(auto);
  assert.is(a.workaround.enabled, true);
  assert.is(a.bad.total, 0); assert.is(a.sizeOk, true);
  // The writer threads' requests are counted, and some had to wait for another thread's.
  assert.ok(a.serialised > 0 && a.waits.count > 0, `serialised ${a.serialised}, waits ${a.waits.count}`);
  await assertCleanedUp(before, 'append-race --threads');
});

xtest('--threads with qcow2-alloc and mixed: clean runs with the workaround (cross-thread ordering keeps the model exact)', async () => {
  for (const workload of ['qcow2-alloc', 'mixed']) {
    const r = await run([...XFS, '--workload', workload, '--emulate-xfs-bug', '--threads', '3', '--duration', '2', '--json']);
    assert.is(r.code, 0, `${workload}: ${r.stderr}${r.stdout}`);
    const j = json(r);
    assert.is(j.bad.total, 0, workload); assert.is(j.sizeOk, true, workload);
    assert.ok(j.ops > 50, `${workload}: ${j.ops} ops`);
  }
});

xtest('append-race with the emulated bug and --workaround auto: auto enables the workaround, exit 0', async () => {
  const before = snapshot();
  const r = await run([...XFS, '--workload', 'append-race', '--emulate-xfs-bug', '--duration', '3', '--json']);
  assert.is(r.code, 0, r.stderr + r.stdout);
  const j = json(r);
  assert.is(j.workaround.policy, 'auto'); assert.is(j.workaround.enabled, true);
  assert.match(j.workaround.rule, /emulated/);
  assert.is(j.bad.total, 0); assert.is(j.sizeOk, true);
  await assertCleanedUp(before, 'append-race auto');
});

xtest('no emulation, --workaround never on this kernel: clean (mixed, table output, progress on stderr)', async () => {
  const before = snapshot();
  const r = await run([...XFS, '--workload', 'mixed', '--workaround', 'never', '--duration', '5.5']);
  assert.is(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /verdict\s+CLEAN/);
  assert.match(r.stdout, /workaround\s+disabled \(policy never\)/);
  assert.match(r.stdout, /bad blocks\s+lost 0, stale 0, misdirected 0, torn 0/);
  assert.match(r.stdout, /volume\s+a temporary 512 MiB XFS volume/);
  assert.match(r.stderr, /mixed: \d+(\.\d+k)? ops, .* MiB\/s written/);
  await assertCleanedUp(before, 'mixed never');
});

xtest('eof-extend runs clean without emulation (O_DIRECT sub-block writes, or buffered with a note)', async () => {
  const r = await run([...XFS, '--workload', 'eof-extend', '--duration', '2', '--json']);
  assert.is(r.code, 0, r.stderr + r.stdout);
  const j = json(r);
  assert.ok(j.notes.some((n) => /sub-block/.test(n)), JSON.stringify(j.notes));
});

xtest('--seed reproduces the operation stream; another seed does not', async () => {
  const before = snapshot();
  const args = [...XFS, '--workload', 'qcow2-alloc', '--ops', '3000', '--json', '--quiet'];
  const [a, b, c] = [json(await run([...args, '--seed', '42'])), json(await run([...args, '--seed', '42'])), json(await run([...args, '--seed', '43']))];
  assert.is(a.seed, 42); assert.is(c.seed, 43);
  assert.is(a.streamDigest, b.streamDigest);
  assert.is.not(a.streamDigest, c.streamDigest);
  assert.is(a.ops, b.ops);
  const m1 = json(await run([...XFS, '--workload', 'mixed', '--ops', '2000', '--seed', '7', '--json']));
  const m2 = json(await run([...XFS, '--workload', 'mixed', '--ops', '2000', '--seed', '7', '--json']));
  assert.is(m1.streamDigest, m2.streamDigest);
  await assertCleanedUp(before, 'seed runs');
});

xtest('SIGINT stops a running stress, verifies, unmounts, detaches the loop device and exits', async () => {
  const before = snapshot();
  const child = spawn(process.execPath, [CLI, 'stress', ...XFS, '--duration', '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((r) => child.on('close', (code, signal) => r({ code, signal })));
  const ours = () => ringfenceMounts().filter((l) => !before.includes(l));
  for (let i = 0; i < 100 && ours().length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(ours().length > 0, 'the volume was mounted');
  await new Promise((r) => setTimeout(r, 1500));
  const t0 = Date.now();
  child.kill('SIGINT');
  const timeout = new Promise((r) => setTimeout(() => r('timeout'), 30_000).unref());
  const res = await Promise.race([exited, timeout]);
  if (res === 'timeout') { child.kill('SIGKILL'); await exited; }
  assert.is.not(res, 'timeout', `did not exit within 30 s of SIGINT; stderr: ${stderr}`);
  assert.is(res.code, 130, `exit code ${res.code}; stderr: ${stderr}`);
  assert.ok(Date.now() - t0 < 20_000);
  assert.match(stderr, /SIGINT/);
  assert.match(stdout, /INTERRUPTED/);
  await assertCleanedUp(before, 'SIGINT');
});

test.run();
