// Direct tests of the native addon (build/Release/ringfence.node).
// Run: node test/native.test.mjs   (after `node-gyp rebuild`)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { spawn, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const addon = require('node-gyp-build')(root);

// Mirrors src/protocol.ts.
const READ = 1, WRITE = 2, READV = 3, WRITEV = 4, FALLOCATE = 5, FSYNC = 6, TRUNCATE = 7, NOP = 8;
const EMULATE_XFS_BUG = 0x100;
const KEEP_SIZE = 0x01, PUNCH_HOLE = 0x02, ZERO_RANGE = 0x10;
const { EINVAL, EBADF, EFAULT, EBUSY } = os.constants.errno;
const BLK = 4096;
const GiB = 2 ** 30;

// ---- environment ---------------------------------------------------------

const probe = addon.probe();
console.log(`kernel ${probe.kernel}, io_uring_disabled=${probe.ioUringDisabled}`);
console.log(`io_uring: ok=${probe.ioUring.ok} ${probe.ioUring.reason} flags=[${probe.ioUring.setupFlags}] ops=${JSON.stringify(probe.ioUring.ops)}`);
console.log(`io_uring features: ${probe.ioUring.features.join(' ')}`);
console.log(`libaio: ok=${probe.libaio.ok} ${probe.libaio.reason}`);

const backends = [];
for (const [name, ok, reason] of [
  ['io_uring', probe.ioUring.ok, probe.ioUring.reason],
  ['libaio', probe.libaio.ok, probe.libaio.reason],
  ['sync', true, ''],
]) {
  if (ok) backends.push(name);
  else console.log(`SKIP backend ${name}: ${reason}`);
}

// os.tmpdir() may be tmpfs, which rejects O_DIRECT: prefer /var/tmp, then cwd.
function pickDir() {
  for (const base of ['/var/tmp', process.cwd()]) {
    let dir;
    try {
      dir = fs.mkdtempSync(path.join(base, 'ringfence-native-'));
      const p = path.join(dir, 'probe');
      const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DIRECT, 0o600);
      fs.closeSync(fd);
      fs.unlinkSync(p);
      return { dir, direct: true };
    } catch {
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log('NOTE: no directory accepts O_DIRECT; testing with buffered I/O');
  return { dir: fs.mkdtempSync(path.join(os.tmpdir(), 'ringfence-native-')), direct: false };
}
const { dir, direct } = pickDir();
console.log(`test dir ${dir} (O_DIRECT=${direct})`);
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

let fileSeq = 0;
function openTemp() {
  const p = path.join(dir, `f${fileSeq++}`);
  const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC | (direct ? fs.constants.O_DIRECT : 0);
  return { path: p, fd: fs.openSync(p, flags, 0o600) };
}

// ---- helpers -------------------------------------------------------------

const POOL = 1 << 20;
const BATCH = 32;

function makeCtx(backend, { depth = 16, emulateWindowUs = 0, doorbellFd, stall } = {}) {
  const sab = new SharedArrayBuffer(POOL, { maxByteLength: POOL }); // page-aligned
  const pool = new Uint8Array(sab);
  const batch = new Int32Array(BATCH * 8);
  const completions = new Int32Array((depth + BATCH) * 4);
  const bell = doorbellFd ?? addon.createDoorbell();
  const opts = { backend, depth, pool, batch, completions, doorbellFd: bell, emulateWindowUs };
  if (stall !== undefined) opts.stall = stall;
  const ctx = new addon.Context(opts);
  return { ctx, pool, batch, completions, bell, ownBell: doorbellFd === undefined };
}

function done(c) {
  c.ctx.close();
  if (c.ownBell) addon.closeFd(c.bell);
}

function put(batch, i, { op, flags = 0, file = 0, off = 0, len = 0, buf = 0, tag = i, aux = 0 }) {
  const o = i * 8;
  const off64 = BigInt.asUintN(64, BigInt(off));
  batch[o] = op | flags;
  batch[o + 1] = file;
  batch[o + 2] = Number(off64 & 0xffffffffn) | 0;
  batch[o + 3] = Number(off64 >> 32n) | 0;
  batch[o + 4] = len | 0;
  batch[o + 5] = buf | 0;
  batch[o + 6] = tag;
  batch[o + 7] = aux;
}

// FALLOCATE carries a 64-bit length in words 4 (low) and 5 (high).
function fallocEntry({ file = 0, off, len, mode = 0, flags = 0, tag }) {
  const l = BigInt(len);
  return { op: FALLOCATE, flags, file, off, len: Number(l & 0xffffffffn) | 0, buf: Number(l >> 32n) | 0, aux: mode, tag };
}

/** Submit entries (tags must be unique), pump until all completed; returns Map tag -> result. */
function run(c, entries) {
  entries.forEach((e, i) => put(c.batch, i, { tag: i, ...e }));
  const results = new Map();
  const collect = (n) => {
    for (let i = 0; i < n; i++) {
      const tag = c.completions[i * 4], res = c.completions[i * 4 + 1];
      assert.not.ok(results.has(tag), `duplicate completion for tag ${tag}`);
      results.set(tag, res);
    }
  };
  collect(c.ctx.pump(entries.length, 0));
  const deadline = Date.now() + 10000;
  while (results.size < entries.length) {
    if (Date.now() > deadline) throw new Error(`timeout: ${results.size}/${entries.length} completed`);
    collect(c.ctx.pump(0, 1000));
  }
  assert.is(c.ctx.inflight(), 0);
  return results;
}

function fill(pool, off, len) {
  const bytes = crypto.randomBytes(len);
  pool.set(bytes, off);
  return bytes;
}

function preadBuffered(p, pos, len) {
  const fd = fs.openSync(p, 'r');
  try {
    const b = Buffer.alloc(len);
    const n = fs.readSync(fd, b, 0, len, pos);
    return b.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

// The io_uring instances of this process: one fd each. Self-contained (also sent to children).
function ringFds() {
  const fs = require('node:fs');
  const out = [];
  for (const n of fs.readdirSync('/proc/self/fd')) {
    try { if (fs.readlinkSync(`/proc/self/fd/${n}`) === 'anon_inode:[io_uring]') out.push(Number(n)); } catch { /* closed meanwhile */ }
  }
  return out;
}

/**
 * Runs `source` (CommonJS; `root` and ringFds() are defined for it) in a child `node`, which
 * must print one JSON line last; resolves with that, or rejects with the child's output.
 */
function runChild(source, { flags = [], timeout = 40000 } = {}) {
  const src = `const root = ${JSON.stringify(root)};\n${ringFds}\n${source}`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...flags, '-e', src], { stdio: ['ignore', 'pipe', 'pipe'], timeout });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('close', (code, signal) => {
      const last = out.trim().split('\n').pop();
      if (code === 0) {
        try { return resolve(JSON.parse(last)); } catch { /* fall through */ }
      }
      reject(new Error(`child exit ${code} ${signal ?? ''}\nstdout: ${out}\nstderr: ${err}`));
    });
  });
}

function runWorker(source, workerData) {
  return new Promise((resolve, reject) => {
    const w = new Worker(source, { eval: true, workerData });
    let msg;
    w.on('message', (m) => { msg = m; });
    w.on('error', reject);
    w.on('exit', (code) => (code === 0 ? resolve(msg) : reject(new Error(`worker exit ${code}`))));
  });
}

// ---- module-level API ----------------------------------------------------

test('probe shape', () => {
  assert.type(probe.kernel, 'string');
  assert.type(probe.ioUringDisabled, 'number');
  assert.type(probe.ioUring.ok, 'boolean');
  assert.ok(Array.isArray(probe.ioUring.setupFlags));
  assert.ok(Array.isArray(probe.ioUring.features));
  for (const k of ['fallocate', 'fsync', 'readFixed', 'ftruncate']) assert.type(probe.ioUring.ops[k], 'boolean');
  assert.type(probe.libaio.ok, 'boolean');
  assert.is(addon.MAX_FILES, 4096);
  assert.is(addon.IOV_MAX, 64);
});

test('doorbell + dioAlign', () => {
  const fd = addon.createDoorbell();
  assert.ok(fd >= 0);
  addon.ring(fd);
  addon.ring(fd);
  addon.closeFd(fd);
  assert.throws(() => addon.ring(fd));
  const f = openTemp();
  const a = addon.dioAlign(f.fd);
  console.log(`dioAlign: ${JSON.stringify(a)}`);
  if (a !== null) {
    assert.ok(a.mem > 0 && a.offset > 0);
    assert.ok(a.offset <= BLK && a.mem <= BLK, 'test blocks are 4 KiB aligned');
  }
  fs.closeSync(f.fd);
});

test('Context constructor rejects bad options', () => {
  const sab = new SharedArrayBuffer(POOL, { maxByteLength: POOL });
  const bell = addon.createDoorbell();
  const base = { backend: 'sync', depth: 4, pool: new Uint8Array(sab), batch: new Int32Array(64), completions: new Int32Array(4 * 12), doorbellFd: bell };
  assert.throws(() => new addon.Context({ ...base, backend: 'nope' }), /unknown backend/);
  assert.throws(() => new addon.Context({ ...base, depth: 0 }), RangeError);
  assert.throws(() => new addon.Context({ ...base, depth: 4097 }), RangeError);
  assert.throws(() => new addon.Context({ ...base, pool: new Int32Array(4) }), TypeError);
  assert.throws(() => new addon.Context({ ...base, completions: new Int32Array(4 * 11) }), RangeError);
  assert.throws(() => new addon.Context({ ...base, doorbellFd: 100000 }), /not open/);
  const ctx = new addon.Context(base);
  assert.throws(() => ctx.setFile(4096, 0), RangeError);
  assert.throws(() => ctx.setFile(-1, 0), RangeError);
  assert.throws(() => ctx.setFile(0, 100000), /not open/);
  assert.throws(() => ctx.pump(9, 0), RangeError); // batch capacity is 8
  ctx.close();
  ctx.close(); // idempotent
  assert.throws(() => ctx.pump(0, 0), /closed/);
  addon.closeFd(bell);
});

// ---- per backend ---------------------------------------------------------

for (const backend of backends) {
  test(`${backend}: info`, () => {
    const c = makeCtx(backend);
    const info = c.ctx.info();
    console.log(`${backend} info: ${JSON.stringify(info)}`);
    assert.is(info.backend, backend);
    assert.is(info.depth, 16);
    assert.type(info.fixedBuffers, 'boolean');
    assert.type(info.fixedFiles, 'boolean');
    assert.type(info.asyncFtruncate, 'boolean');
    assert.ok(Array.isArray(info.setupFlags) && Array.isArray(info.syncOps));
    if (backend === 'libaio') assert.ok(info.syncOps.includes('fallocate') && info.syncOps.includes('fsync'));
    done(c);
  });

  test(`${backend}: write/read at random offsets incl. beyond 4 GiB`, () => {
    const c = makeCtx(backend);
    const f = openTemp();
    c.ctx.setFile(3, f.fd);
    const offsets = [0, BLK * 7, BLK * (1 + crypto.randomInt(100000)), 5 * GiB + BLK * crypto.randomInt(1000), 4 * GiB - BLK];
    const data = offsets.map((_, i) => fill(c.pool, i * 2 * BLK, 2 * BLK));
    const w = run(c, offsets.map((off, i) => ({ op: WRITE, file: 3, off, len: 2 * BLK, buf: i * 2 * BLK })));
    for (let i = 0; i < offsets.length; i++) assert.is(w.get(i), 2 * BLK, `write ${i}`);
    assert.is(fs.fstatSync(f.fd).size, 5 * GiB + offsets[3] - 5 * GiB + 2 * BLK);

    const rbase = 512 * 1024;
    c.pool.fill(0, rbase, rbase + offsets.length * 2 * BLK);
    const r = run(c, offsets.map((off, i) => ({ op: READ, file: 3, off, len: 2 * BLK, buf: rbase + i * 2 * BLK })));
    for (let i = 0; i < offsets.length; i++) {
      assert.is(r.get(i), 2 * BLK, `read ${i}`);
      assert.ok(Buffer.from(c.pool.subarray(rbase + i * 2 * BLK, rbase + (i + 1) * 2 * BLK)).equals(data[i]), `pool data ${i}`);
      assert.ok(preadBuffered(f.path, offsets[i], 2 * BLK).equals(data[i]), `file data ${i}`);
    }
    // A read past EOF returns 0 bytes.
    const eof = run(c, [{ op: READ, file: 3, off: 6 * GiB, len: BLK, buf: 0 }]);
    assert.is(eof.get(0), 0);
    c.ctx.clearFile(3);
    assert.is(run(c, [{ op: READ, file: 3, off: 0, len: BLK, buf: 0 }]).get(0), -EBADF);
    done(c);
    fs.closeSync(f.fd);
  });

  test(`${backend}: readv/writev`, () => {
    const c = makeCtx(backend);
    const f = openTemp();
    c.ctx.setFile(0, f.fd);
    const table = 256 * 1024; // 8-aligned descriptor table in the pool
    const dv = new DataView(c.pool.buffer);
    const segs = [[0, BLK], [3 * BLK, 2 * BLK], [10 * BLK, BLK]];
    segs.forEach(([o, l], i) => { dv.setUint32(table + i * 8, o, true); dv.setUint32(table + i * 8 + 4, l, true); });
    const expect = Buffer.concat(segs.map(([o, l]) => fill(c.pool, o, l)));
    const total = expect.length;
    const w = run(c, [{ op: WRITEV, file: 0, off: BLK * 4, len: total, buf: table, aux: segs.length }]);
    assert.is(w.get(0), total);
    const disk = fs.readFileSync(f.path);
    assert.is(disk.length, BLK * 4 + total);
    assert.ok(disk.subarray(BLK * 4).equals(expect));

    // Scatter back into different buffers.
    const rsegs = [[64 * BLK, 2 * BLK], [70 * BLK, 2 * BLK]];
    rsegs.forEach(([o, l], i) => { dv.setUint32(table + 64 + i * 8, o, true); dv.setUint32(table + 64 + i * 8 + 4, l, true); });
    const r = run(c, [{ op: READV, file: 0, off: BLK * 4, len: total, buf: table + 64, aux: rsegs.length }]);
    assert.is(r.get(0), total);
    const got = Buffer.concat(rsegs.map(([o, l]) => Buffer.from(c.pool.subarray(o, o + l))));
    assert.ok(got.equals(expect));
    done(c);
    fs.closeSync(f.fd);
  });

  test(`${backend}: fallocate zero-range, fsync, truncate, nop`, () => {
    const c = makeCtx(backend);
    const f = openTemp();
    c.ctx.setFile(1, f.fd);
    fill(c.pool, 0, 8 * BLK);
    assert.is(run(c, [{ op: WRITE, file: 1, off: 0, len: 8 * BLK, buf: 0 }]).get(0), 8 * BLK);
    const res = run(c, [fallocEntry({ file: 1, off: 2 * BLK, len: 3 * BLK, mode: ZERO_RANGE, tag: 0 })]);
    assert.is(res.get(0), 0);
    c.pool.fill(0xff, 0, 8 * BLK);
    assert.is(run(c, [{ op: READ, file: 1, off: 0, len: 8 * BLK, buf: 0 }]).get(0), 8 * BLK);
    assert.ok(c.pool.subarray(2 * BLK, 5 * BLK).every((b) => b === 0), 'zeroed range reads back zeros');
    assert.ok(preadBuffered(f.path, 2 * BLK, 3 * BLK).every((b) => b === 0));
    assert.ok(!preadBuffered(f.path, 0, 2 * BLK).every((b) => b === 0), 'outside the range untouched');

    // Plain fallocate extends the file; KEEP_SIZE does not.
    assert.is(run(c, [fallocEntry({ file: 1, off: 8 * BLK, len: 8 * BLK, tag: 0 })]).get(0), 0);
    assert.is(fs.fstatSync(f.fd).size, 16 * BLK);
    assert.is(run(c, [fallocEntry({ file: 1, off: 16 * BLK, len: 8 * BLK, mode: KEEP_SIZE, tag: 0 })]).get(0), 0);
    assert.is(fs.fstatSync(f.fd).size, 16 * BLK);
    assert.is(run(c, [fallocEntry({ file: 1, off: 0, len: BLK, mode: PUNCH_HOLE | KEEP_SIZE, tag: 0 })]).get(0), 0);
    assert.ok(preadBuffered(f.path, 0, BLK).every((b) => b === 0), 'punched hole reads zeros');

    const s = run(c, [
      { op: FSYNC, file: 1, aux: 0 },
      { op: FSYNC, file: 1, aux: 1 },
      { op: NOP },
    ]);
    assert.equal([s.get(0), s.get(1), s.get(2)], [0, 0, 0]);

    assert.is(run(c, [{ op: TRUNCATE, file: 1, off: 12345 }]).get(0), 0);
    assert.is(fs.fstatSync(f.fd).size, 12345);
    assert.is(run(c, [{ op: TRUNCATE, file: 1, off: 0 }]).get(0), 0);
    assert.is(fs.fstatSync(f.fd).size, 0);
    done(c);
    fs.closeSync(f.fd);
  });

  test(`${backend}: invalid entries fail alone`, () => {
    const c = makeCtx(backend);
    const f = openTemp();
    c.ctx.setFile(0, f.fd);
    const table = 128 * 1024;
    const dv = new DataView(c.pool.buffer);
    const setDesc = (at, o, l) => { dv.setUint32(at, o, true); dv.setUint32(at + 4, l, true); };
    setDesc(table, 0, BLK);            // good descriptor
    setDesc(table + 8, 0, 0);          // zero-length descriptor
    setDesc(table + 16, POOL - 100, BLK); // past the pool end
    const good = fill(c.pool, 0, BLK);
    const cases = [
      [{ op: WRITE, file: 0, off: 0, len: BLK, buf: 0 }, BLK, 'good write'],
      [{ op: 9, file: 0, len: BLK }, -EINVAL, 'op 9'],
      [{ op: 0, file: 0, len: BLK }, -EINVAL, 'op 0'],
      [{ op: WRITE, file: 5, len: BLK }, -EBADF, 'file id not set'],
      [{ op: WRITE, file: 4096, len: BLK }, -EBADF, 'file id out of range'],
      [{ op: WRITE, file: -1, len: BLK }, -EBADF, 'negative file id'],
      [{ op: WRITE, file: 0, len: BLK, buf: POOL - 100 }, -EFAULT, 'buffer past pool end'],
      [{ op: READ, file: 0, len: BLK, buf: -1 }, -EFAULT, 'pool offset 0xffffffff'],
      [{ op: WRITE, file: 0, off: -4096, len: BLK }, -EINVAL, 'negative offset'],
      [{ op: WRITE, file: 0, off: 2n ** 63n - 10n, len: BLK }, -EINVAL, 'offset+len overflows'],
      [{ op: WRITE, file: 0, len: 0 }, -EINVAL, 'zero length'],
      [{ op: WRITE, file: 0, len: -5 }, -EINVAL, 'negative length'],
      [{ op: WRITEV, file: 0, len: BLK, buf: table, aux: 0 }, -EINVAL, 'iov count 0'],
      [{ op: WRITEV, file: 0, len: BLK, buf: table, aux: 65 }, -EINVAL, 'iov count 65'],
      [{ op: WRITEV, file: 0, len: BLK, buf: table + 4, aux: 1 }, -EFAULT, 'iov table misaligned'],
      [{ op: WRITEV, file: 0, len: 2 * BLK, buf: POOL - 8, aux: 2 }, -EFAULT, 'iov table past pool end'],
      [{ op: WRITEV, file: 0, len: BLK, buf: table, aux: 2 }, -EINVAL, 'iov zero-length descriptor'],
      [{ op: READV, file: 0, len: BLK, buf: table + 16, aux: 1 }, -EFAULT, 'iov descriptor past pool'],
      [{ op: WRITEV, file: 0, len: 2 * BLK, buf: table, aux: 1 }, -EINVAL, 'iov sum != length'],
      [fallocEntry({ file: 0, off: 0, len: BLK, mode: PUNCH_HOLE }), -EINVAL, 'punch hole without keep size'],
      [fallocEntry({ file: 0, off: 0, len: BLK, mode: 0x40 }), -EINVAL, 'unknown mode'],
      [fallocEntry({ file: 0, off: 0, len: 0 }), -EINVAL, 'fallocate length 0'],
      [fallocEntry({ file: 0, off: 2n ** 62n, len: 2n ** 62n + 1n }), -EINVAL, 'fallocate end overflows'],
      [{ op: FSYNC, file: 0, aux: 2 }, -EINVAL, 'fsync aux 2'],
      [{ op: WRITE, flags: 0x200, file: 0, len: BLK }, -EINVAL, 'unknown flag'],
      [{ op: WRITE, flags: 0x10000, file: 0, len: BLK }, -EINVAL, 'high bits'],
      [{ op: WRITE, flags: EMULATE_XFS_BUG, file: 0, len: BLK }, -EINVAL, 'emulate flag on WRITE'],
      [{ op: TRUNCATE, file: 0, off: -1 }, -EINVAL, 'negative truncate'],
    ];
    assert.ok(cases.length <= BATCH);
    const res = run(c, cases.map(([e]) => e));
    cases.forEach(([, want, what], i) => assert.is(res.get(i), want, what));
    assert.ok(preadBuffered(f.path, 0, BLK).equals(good), 'good entry landed');
    assert.is(fs.fstatSync(f.fd).size, BLK, 'nothing else touched the file');
    done(c);
    fs.closeSync(f.fd);
  });

  if (backend !== 'sync') {
    test(`${backend}: never more than depth in flight (-EBUSY)`, () => {
      const c = makeCtx(backend, { depth: 2 });
      const f = openTemp();
      c.ctx.setFile(0, f.fd);
      fill(c.pool, 0, 3 * BLK);
      const res = run(c, [0, 1, 2].map((i) => ({ op: WRITE, file: 0, off: i * BLK, len: BLK, buf: i * BLK })));
      const vals = [res.get(0), res.get(1), res.get(2)].sort();
      assert.equal(vals, [-EBUSY, BLK, BLK].sort());
      done(c);
      fs.closeSync(f.fd);
    });

    test(`${backend}: close() drains in-flight ops`, () => {
      const c = makeCtx(backend, { depth: 16 });
      const f = openTemp();
      c.ctx.setFile(0, f.fd);
      fill(c.pool, 0, 16 * BLK);
      for (let i = 0; i < 16; i++) put(c.batch, i, { op: WRITE, file: 0, off: i * BLK * 16, len: BLK, buf: i * BLK, tag: i });
      const n = c.ctx.pump(16, 0);
      assert.ok(n <= 16);
      c.ctx.close();
      assert.is(c.ctx.inflight(), 0);
      assert.throws(() => c.ctx.pump(0, 0), /closed/);
      addon.closeFd(c.bell);
      fs.closeSync(f.fd);
    });
  }

  test(`${backend}: doorbell wakes pump(0, 5000)`, async () => {
    const c = makeCtx(backend);
    // Already rung: returns at once.
    addon.ring(c.bell);
    let t0 = Date.now();
    assert.is(c.ctx.pump(0, 5000), 0);
    assert.ok(Date.now() - t0 < 1000, 'pre-rung doorbell');

    // Rung by another thread while we block.
    const wake = new Int32Array(new SharedArrayBuffer(4));
    const w = new Worker(`
      const { workerData } = require('node:worker_threads');
      const addon = require('node-gyp-build')(workerData.root);
      Atomics.wait(workerData.wake, 0, 0);
      Atomics.wait(workerData.wake, 0, 1, 150);
      addon.ring(workerData.bell);
    `, { eval: true, workerData: { root, bell: c.bell, wake } });
    await new Promise((r) => w.once('online', r));
    Atomics.store(wake, 0, 1);
    Atomics.notify(wake, 0);
    t0 = Date.now();
    assert.is(c.ctx.pump(0, 5000), 0);
    const elapsed = Date.now() - t0;
    console.log(`${backend}: doorbell woke pump after ${elapsed} ms`);
    assert.ok(elapsed < 2000, `woken in ${elapsed} ms`);
    await new Promise((r) => w.once('exit', r));

    // Without a ring it times out.
    t0 = Date.now();
    assert.is(c.ctx.pump(0, 50), 0);
    assert.ok(Date.now() - t0 >= 40, 'timed wait');
    done(c);
  });

  test(`${backend}: emulated XFS fallocate sets size to off+len after the window`, () => {
    const c = makeCtx(backend, { emulateWindowUs: 20000 });
    const f = openTemp();
    c.ctx.setFile(2, f.fd);
    const t0 = Date.now();
    const res = run(c, [fallocEntry({ file: 2, off: BLK, len: 3 * BLK, mode: ZERO_RANGE, flags: EMULATE_XFS_BUG, tag: 0 })]);
    assert.is(res.get(0), 0);
    assert.ok(Date.now() - t0 >= 15, 'window elapsed');
    assert.is(fs.fstatSync(f.fd).size, 4 * BLK);
    // Inside EOF: no size change.
    assert.is(run(c, [fallocEntry({ file: 2, off: 0, len: BLK, flags: EMULATE_XFS_BUG, tag: 0 })]).get(0), 0);
    assert.is(fs.fstatSync(f.fd).size, 4 * BLK);
    done(c);
    fs.closeSync(f.fd);
  });
}

// ---- randomized: many overlapping batches against a model ---------------

for (const backend of backends) {
  test(`${backend}: random batches match a model`, () => {
    const depth = 24;
    const c = makeCtx(backend, { depth });
    const f = openTemp();
    c.ctx.setFile(7, f.fd);
    const NBLK = 64; // file blocks
    const model = Buffer.alloc(NBLK * BLK);
    fs.ftruncateSync(f.fd, NBLK * BLK); // reads never hit EOF
    const poolSlots = Math.floor(POOL / BLK) - 1;
    let tag = 0, inflight = new Map(), busyBlocks = new Set(), freeSlots = [...Array(poolSlots).keys()];
    const reap = (n) => {
      for (let i = 0; i < n; i++) {
        const t = c.completions[i * 4], r = c.completions[i * 4 + 1];
        const op = inflight.get(t);
        assert.ok(op, `unknown tag ${t}`);
        inflight.delete(t);
        assert.is(r, BLK, `op ${t} result`);
        if (op.read) assert.ok(Buffer.from(c.pool.subarray(op.slot * BLK, (op.slot + 1) * BLK)).equals(model.subarray(op.blk * BLK, (op.blk + 1) * BLK)), `read ${t}`);
        busyBlocks.delete(op.blk);
        freeSlots.push(op.slot);
      }
    };
    for (let round = 0; round < 60; round++) {
      let n = 0;
      const room = Math.min(BATCH, depth - inflight.size);
      for (let k = 0; k < room && Math.random() < 0.9; k++) {
        const blk = crypto.randomInt(NBLK);
        if (busyBlocks.has(blk)) continue; // no overlapping ops on one block
        const slot = freeSlots.pop();
        const read = Math.random() < 0.4;
        if (!read) model.set(fill(c.pool, slot * BLK, BLK), blk * BLK);
        busyBlocks.add(blk);
        inflight.set(tag, { blk, slot, read });
        put(c.batch, n++, { op: read ? READ : WRITE, file: 7, off: blk * BLK, len: BLK, buf: slot * BLK, tag: tag++ });
      }
      reap(c.ctx.pump(n, Math.random() < 0.3 ? 5 : 0));
    }
    while (inflight.size) reap(c.ctx.pump(0, 1000));
    const disk = fs.readFileSync(f.path);
    assert.ok(disk.equals(model.subarray(0, disk.length)), 'file matches model');
    done(c);
    fs.closeSync(f.fd);
  });
}

// ---- the emulated bug actually loses data --------------------------------

test('emulated XFS bug: a write past off+len during the window is truncated away', async () => {
  const c = makeCtx('sync', { emulateWindowUs: 400000 });
  const f = openTemp();
  c.ctx.setFile(0, f.fd);
  const flag = new Int32Array(new SharedArrayBuffer(8));
  const w = new Worker(`
    const { workerData } = require('node:worker_threads');
    const fs = require('node:fs');
    const fd = fs.openSync(workerData.path, 'r+');
    Atomics.wait(workerData.flag, 0, 0);
    Atomics.wait(workerData.flag, 1, 0, 100); // land inside the window
    fs.writeSync(fd, Buffer.alloc(4096, 7), 0, 4096, 16 * 4096);
    fs.fsyncSync(fd);
    Atomics.store(workerData.flag, 1, 1);
    fs.closeSync(fd);
  `, { eval: true, workerData: { path: f.path, flag } });
  await new Promise((r) => w.once('online', r));
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
  const res = run(c, [fallocEntry({ file: 0, off: 0, len: 4 * BLK, flags: EMULATE_XFS_BUG, tag: 0 })]);
  await new Promise((r) => w.once('exit', r));
  assert.is(res.get(0), 0);
  assert.is(Atomics.load(flag, 1), 1, 'the racing write completed');
  assert.is(fs.fstatSync(f.fd).size, 4 * BLK, 'its data past off+len is gone');
  done(c);
  fs.closeSync(f.fd);
});

// ---- context-awareness: a worker exits with a Context still open ---------

for (const backend of backends) {
  test(`${backend}: worker exit with an open Context is cleaned up`, async () => {
    const f = openTemp();
    const msg = await runWorker(`
      const { workerData, parentPort } = require('node:worker_threads');
      const addon = require('node-gyp-build')(workerData.root);
      const pool = new Uint8Array(new SharedArrayBuffer(1 << 16, { maxByteLength: 1 << 16 }));
      const batch = new Int32Array(8 * 8), completions = new Int32Array(4 * 16);
      const bell = addon.createDoorbell();
      const ctx = new addon.Context({ backend: workerData.backend, depth: 8, pool, batch, completions, doorbellFd: bell });
      ctx.setFile(0, workerData.fd);
      for (let i = 0; i < 8; i++) batch.set([2, 0, i * 4096, 0, 4096, i * 4096, i, 0], i * 8);
      ctx.pump(8, 0);
      parentPort.postMessage({ inflight: ctx.inflight() });
      // exit without close(): the env cleanup hook must drain and tear down
    `, { root, backend, fd: f.fd });
    console.log(`${backend}: worker exited with ${msg.inflight} op(s) in flight`);
    assert.ok(msg.inflight >= 0);
    // Every write finished before the worker's env went away.
    assert.is(fs.fstatSync(f.fd).size, 8 * BLK);
    fs.closeSync(f.fd);
  });
}

// ---- pool views: poolView / detach / addressMod -------------------------

test('poolView: an ArrayBuffer of its own that aliases the pool bytes, both ways', () => {
  const pool = new Uint8Array(new SharedArrayBuffer(POOL, { maxByteLength: POOL }));
  const ab = addon.poolView(pool, 3 * BLK, 2 * BLK);
  assert.ok(ab instanceof ArrayBuffer, 'a plain (detachable) ArrayBuffer, not the SharedArrayBuffer');
  assert.is(ab.byteLength, 2 * BLK);
  const u = new Uint8Array(ab);
  pool.fill(0x11, 3 * BLK, 5 * BLK);
  assert.ok(u.every((b) => b === 0x11), 'pool writes show in the view');
  u[0] = 0xaa;
  u[2 * BLK - 1] = 0xbb;
  assert.is(pool[3 * BLK], 0xaa, 'view writes show in the pool (first byte)');
  assert.is(pool[5 * BLK - 1], 0xbb, 'view writes show in the pool (last byte)');
  assert.is(pool[3 * BLK - 1], 0, 'byte before the view untouched');
  assert.is(pool[5 * BLK], 0, 'byte after the view untouched');
  const again = addon.poolView(pool, 3 * BLK, 16);
  assert.ok(again !== ab, 'each call makes a new ArrayBuffer');
  assert.is(new Uint8Array(again)[0], 0xaa);
  // The very last byte, and offsets relative to the Uint8Array given.
  new Uint8Array(addon.poolView(pool, POOL - 1, 1))[0] = 0x42;
  assert.is(pool[POOL - 1], 0x42);
  new Uint8Array(addon.poolView(pool.subarray(7 * BLK), 5, 1))[0] = 0x43;
  assert.is(pool[7 * BLK + 5], 0x43);
});

test('poolView: argument checks', () => {
  const sab = new SharedArrayBuffer(POOL, { maxByteLength: POOL });
  const pool = new Uint8Array(sab);
  assert.throws(() => addon.poolView(new Int32Array(sab), 0, 4), (e) => e instanceof TypeError && /Uint8Array/.test(e.message));
  assert.throws(() => addon.poolView(new Uint8Array(64), 0, 4), (e) => e instanceof TypeError && /SharedArrayBuffer/.test(e.message));
  assert.throws(() => addon.poolView(sab, 0, 4), TypeError);
  assert.throws(() => addon.poolView({}, 0, 4), TypeError);
  assert.throws(() => addon.poolView(pool, '0', 4), TypeError);
  assert.throws(() => addon.poolView(pool, 0), TypeError);
  for (const [off, len, what] of [[-1, 4, 'negative offset'], [1.5, 4, 'fractional offset'], [NaN, 4, 'NaN offset'],
    [0, 0, 'length 0'], [0, -4, 'negative length'], [0, 2.5, 'fractional length'], [0, Infinity, 'infinite length'],
    [POOL, 1, 'offset at the end'], [POOL - 4, 5, 'one byte past the end'], [0, POOL + 1, 'longer than the pool'],
    [2 ** 53, 1, 'offset 2^53']]) {
    assert.throws(() => addon.poolView(pool, off, len), RangeError, what);
  }
  assert.is(addon.poolView(pool, 0, POOL).byteLength, POOL, 'the whole pool');
});

test('poolView: the view keeps the pool memory alive through GC, and releases it when it goes', async () => {
  const r = await runChild(`
    const addon = require('node-gyp-build')(root);
    const { Worker } = require('node:worker_threads');
    const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
    const collected = new Set();
    const reg = new FinalizationRegistry((k) => collected.add(k));
    async function gcUntil(key, rounds) {
      for (let i = 0; i < rounds && !collected.has(key); i++) { global.gc(); await sleep(5); }
      return collected.has(key);
    }
    const newPool = (key, fill) => {
      const pool = new Uint8Array(new SharedArrayBuffer(1 << 20, { maxByteLength: 1 << 20 }));
      reg.register(pool.buffer, key);
      pool.fill(fill, 4096, 8192);
      return pool;
    };
    (async () => {
      const out = {};
      // Control: an unreferenced pool is collected here, so "not collected" below means something.
      (() => { newPool('control', 0); })();
      out.control = await gcUntil('control', 100);
      // Only the view remains: no Uint8Array, no SharedArrayBuffer reference in JavaScript.
      let view = (() => addon.poolView(newPool('pool', 0xab), 4096, 4096))();
      out.collectedWhileViewLives = await gcUntil('pool', 40);
      for (let i = 0; i < 32; i++) new Uint8Array(new SharedArrayBuffer(1 << 20, { maxByteLength: 1 << 20 })).fill(0x5c);
      global.gc();
      let u = new Uint8Array(view);
      out.readBack = u.every((b) => b === 0xab);
      u.fill(0xcd);
      out.writeBack = new Uint8Array(view).every((b) => b === 0xcd);
      u = null;
      view = null;
      out.collectedAfterViewGone = await gcUntil('pool', 200);
      // A detached view releases the pool too, while the (empty) ArrayBuffer itself lives on.
      const detached = (() => addon.poolView(newPool('pool2', 1), 0, 4096))();
      addon.detach(detached);
      out.collectedAfterDetach = await gcUntil('pool2', 200);
      out.detachedLength = detached.byteLength;
      // A worker that exits with views alive (env teardown releases them); we go on.
      await new Promise((res, rej) => {
        const w = new Worker(\`
          const addon = require('node-gyp-build')(\${JSON.stringify(root)});
          const pool = new Uint8Array(new SharedArrayBuffer(1 << 16, { maxByteLength: 1 << 16 }));
          globalThis.keep = [addon.poolView(pool, 0, 4096), addon.poolView(pool, 4096, 1)];
          new Uint8Array(globalThis.keep[0]).fill(9);
        \`, { eval: true });
        w.on('error', rej);
        w.on('exit', (code) => (code === 0 ? res() : rej(new Error('worker exit ' + code))));
      });
      global.gc();
      out.afterWorker = true;
      console.log(JSON.stringify(out));
    })().catch((e) => { console.error(e); process.exit(1); });
  `, { flags: ['--expose-gc'] });
  console.log(`poolView gc: ${JSON.stringify(r)}`);
  assert.ok(r.control, 'control pool collected (gc works in the child)');
  assert.not.ok(r.collectedWhileViewLives, 'pool SharedArrayBuffer not collected while a view lives');
  assert.ok(r.readBack, 'bytes read back through the view after GC');
  assert.ok(r.writeBack, 'writes through the view after GC');
  assert.ok(r.collectedAfterViewGone, 'the reference is released when the view is collected');
  assert.ok(r.collectedAfterDetach, 'the reference is released when the view is detached');
  assert.is(r.detachedLength, 0);
  assert.ok(r.afterWorker);
});

test('detach: every view of a pool view becomes empty; detaching twice is a no-op', () => {
  const pool = new Uint8Array(new SharedArrayBuffer(POOL, { maxByteLength: POOL }));
  const ab = addon.poolView(pool, BLK, BLK);
  const u = new Uint8Array(ab);
  const sub = u.subarray(100, 200);
  const dv = new DataView(ab);
  pool[BLK + 150] = 7;
  assert.is(sub[50], 7);
  assert.is(dv.getUint8(150), 7);
  addon.detach(ab);
  assert.is(ab.byteLength, 0);
  assert.is(u.byteLength, 0);
  assert.is(u.length, 0);
  assert.is(sub.byteLength, 0);
  assert.is(sub.length, 0);
  assert.is(u[150], undefined);
  assert.throws(() => dv.getUint8(0), TypeError);
  assert.is(pool[BLK + 150], 7, 'the pool itself is untouched');
  pool[BLK + 150] = 8;
  assert.is(pool[BLK + 150], 8);
  addon.detach(ab); // harmless
  // Any detachable ArrayBuffer works; other things are a TypeError.
  const plain = new ArrayBuffer(16);
  addon.detach(plain);
  assert.is(plain.byteLength, 0);
  assert.throws(() => addon.detach(new SharedArrayBuffer(16)), (e) => e instanceof TypeError && /ArrayBuffer/.test(e.message));
  assert.throws(() => addon.detach(new Uint8Array(16)), TypeError);
  assert.throws(() => addon.detach(undefined), TypeError);
  assert.throws(() => addon.detach(new WebAssembly.Memory({ initial: 1 }).buffer), (e) => e instanceof TypeError && /not detachable/.test(e.message));
});

test('addressMod: address of the first byte modulo a power of two', () => {
  const u = new Uint8Array(new SharedArrayBuffer(1 << 20, { maxByteLength: 1 << 20 }));
  assert.is(addon.addressMod(u, 4096), 0, 'a growable SharedArrayBuffer is page-aligned');
  assert.is(addon.addressMod(u.subarray(1), 4096), 1);
  assert.is(addon.addressMod(u.subarray(4097), 4096), 1);
  assert.is(addon.addressMod(u.subarray(3), 2), 1);
  assert.is(addon.addressMod(u.subarray(3), 1), 0);
  const base = addon.addressMod(u, 1 << 20);
  assert.is(addon.addressMod(u.subarray(12345), 1 << 20), (base + 12345) % (1 << 20));
  assert.is(addon.addressMod(new Uint8Array(addon.poolView(u, 8192 + 3, 16)), 4096), 3, 'a pool view aliases the pool');
  for (const m of [0, 3, 4097, 2 ** 21, 1.5, -4096, NaN]) assert.throws(() => addon.addressMod(u, m), RangeError, `m = ${m}`);
  assert.throws(() => addon.addressMod(u, '4096'), TypeError);
  assert.throws(() => addon.addressMod(new Int32Array(4), 4096), TypeError);
  assert.throws(() => addon.addressMod(new ArrayBuffer(4), 4096), TypeError);
});

// ---- the stall word ------------------------------------------------------

test('Context: stall option checks', () => {
  const bell = addon.createDoorbell();
  const base = { backend: 'sync', depth: 4, pool: new Uint8Array(new SharedArrayBuffer(BLK)), batch: new Int32Array(64), completions: new Int32Array(4 * 12), doorbellFd: bell };
  assert.throws(() => new addon.Context({ ...base, stall: new Int32Array(4) }), /SharedArrayBuffer/);
  assert.throws(() => new addon.Context({ ...base, stall: new Int32Array(new SharedArrayBuffer(4), 4) }), TypeError);
  assert.throws(() => new addon.Context({ ...base, stall: new Uint32Array(new SharedArrayBuffer(4)) }), TypeError);
  assert.throws(() => new addon.Context({ ...base, stall: 5 }), TypeError);
  new addon.Context({ ...base, stall: new Int32Array(new SharedArrayBuffer(4)) }).close();
  new addon.Context({ ...base, stall: undefined }).close();
  addon.closeFd(bell);
});

for (const backend of backends) {
  test(`${backend}: the stall word is bumped around every blocking call, and only then`, () => {
    const stall = new Int32Array(new SharedArrayBuffer(16));
    stall[0] = 2 ** 31 - 2; // even, and about to wrap: parity must survive it
    stall[1] = 12345;
    const c = makeCtx(backend, { stall });
    const f = openTemp();
    c.ctx.setFile(0, f.fd);
    const delta = (fn) => { const before = stall[0]; fn(); return (stall[0] - before) | 0; };
    fill(c.pool, 0, 4 * BLK);
    const table = 64 * BLK;
    const dv = new DataView(c.pool.buffer);
    dv.setUint32(table, 0, true);
    dv.setUint32(table + 4, BLK, true);

    const one = delta(() => assert.is(run(c, [{ op: WRITE, file: 0, off: 0, len: BLK, buf: 0 }]).get(0), BLK));
    assert.is(one & 1, 0, `even after the call (${one})`);
    if (backend === 'io_uring') assert.ok(one >= 2, `one write: +${one}`);
    else assert.is(one, 2, 'one write: exactly one bracketed call (pwrite / io_submit)');

    const ops = [
      { op: READ, file: 0, off: 0, len: BLK, buf: BLK },
      { op: WRITEV, file: 0, off: BLK, len: BLK, buf: table, aux: 1 },
      { op: READV, file: 0, off: BLK, len: BLK, buf: table, aux: 1 },
      fallocEntry({ file: 0, off: 0, len: 8 * BLK }),
      { op: FSYNC, file: 0, aux: 0 },
      { op: FSYNC, file: 0, aux: 1 },
      { op: TRUNCATE, file: 0, off: 8 * BLK },
    ];
    const many = delta(() => { for (const [t, r] of run(c, ops)) assert.ok(r >= 0, `op ${t}: ${r}`); });
    assert.is(many & 1, 0);
    // sync: one call each; libaio: one io_submit for the 4 rw ops + 4 inline calls.
    if (backend === 'sync') assert.is(many, 2 * ops.length);
    else if (backend === 'libaio') assert.is(many, 2 * (1 + 4));
    else assert.ok(many >= 2, `io_uring batch: +${many}`);

    // Waits and non-blocking work do not count.
    assert.is(delta(() => { for (let i = 0; i < 3; i++) c.ctx.pump(0, 20); }), 0, 'waiting for the doorbell');
    assert.is(delta(() => run(c, [{ op: WRITE, file: 0, off: 0, len: 0, buf: 0 }])), 0, 'an invalid entry');
    if (backend !== 'io_uring') assert.is(delta(() => run(c, [{ op: NOP }])), 0, 'a NOP');
    assert.is(stall[0] & 1, 0);
    assert.is(stall[1], 12345, 'only word 0 is written');
    done(c);
    fs.closeSync(f.fd);
  });
}

test('sync: the stall word is odd while the worker is inside a blocking call', async () => {
  const stall = new Int32Array(new SharedArrayBuffer(8));
  const f = openTemp();
  const w = new Worker(`
    const { workerData, parentPort } = require('node:worker_threads');
    const addon = require('node-gyp-build')(workerData.root);
    const pool = new Uint8Array(new SharedArrayBuffer(1 << 16));
    const batch = new Int32Array(8), completions = new Int32Array(4 * 8);
    const bell = addon.createDoorbell();
    const ctx = new addon.Context({ backend: 'sync', depth: 4, pool, batch, completions, doorbellFd: bell,
                                    emulateWindowUs: 400000, stall: workerData.stall });
    ctx.setFile(0, workerData.fd);
    batch.set([${FALLOCATE | EMULATE_XFS_BUG}, 0, 0, 0, 4096, 0, 77, 0]); // a 400 ms emulated fallocate
    const n = ctx.pump(1, 0);
    parentPort.postMessage({ n, tag: completions[0], res: completions[1] });
    ctx.close();
    addon.closeFd(bell);
  `, { eval: true, workerData: { root, stall, fd: f.fd } });
  let msg;
  w.on('message', (m) => { msg = m; });
  await new Promise((r) => w.once('online', r));
  const nap = new Int32Array(new SharedArrayBuffer(4));
  let sawOdd = false;
  for (const deadline = Date.now() + 5000; Date.now() < deadline && !sawOdd;) {
    if (Atomics.load(stall, 0) & 1) sawOdd = true;
    else Atomics.wait(nap, 0, 0, 2);
  }
  await new Promise((r) => w.once('exit', r));
  assert.ok(sawOdd, 'odd seen while the fallocate ran');
  assert.equal(msg, { n: 1, tag: 77, res: 0 });
  assert.is(Atomics.load(stall, 0), 2, 'even again afterwards: one bracketed call');
  fs.closeSync(f.fd);
});

// ---- io_uring: setup failure, submit failure, bounded shutdown ------------

if (backends.includes('io_uring')) {
  test('io_uring: a constructor failure after io_uring_queue_init leaks no ring (test hook)', () => {
    const before = ringFds().length;
    const bell = addon.createDoorbell();
    const opts = { backend: 'io_uring', depth: 8, pool: new Uint8Array(new SharedArrayBuffer(POOL, { maxByteLength: POOL })),
      batch: new Int32Array(64), completions: new Int32Array(4 * 16), doorbellFd: bell };
    // RINGFENCE_TEST_URING_FAIL_AFTER_INIT: a documented test hook in native/uring_backend.cc.
    process.env.RINGFENCE_TEST_URING_FAIL_AFTER_INIT = '1';
    try {
      for (let i = 0; i < 4; i++) assert.throws(() => new addon.Context(opts), /after io_uring_queue_init \(test hook/);
    } finally {
      delete process.env.RINGFENCE_TEST_URING_FAIL_AFTER_INIT;
    }
    assert.is(ringFds().length, before, 'no io_uring fd left behind');
    const ctx = new addon.Context(opts);
    assert.is(ringFds().length, before + 1, 'the count sees a live ring');
    ctx.close();
    assert.is(ringFds().length, before);
    addon.closeFd(bell);
  });

  test('io_uring: a refused submit completes its entries with the error; shutdown is bounded and never spins', async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const setup = `
      const addon = require('node-gyp-build')(root);
      const fs = require('node:fs');
      const pool = new Uint8Array(new SharedArrayBuffer(1 << 16, { maxByteLength: 1 << 16 }));
      const batch = new Int32Array(8 * 8), completions = new Int32Array(4 * 16);
      const bell = addon.createDoorbell();
      // Node >= 22's libuv may own io_uring fds of its own: only the Context's ring counts.
      const loopRings = ringFds();
      const ctxRings = () => ringFds().filter((fd) => !loopRings.includes(fd));
      const ctx = new addon.Context({ backend: 'io_uring', depth: 8, pool, batch, completions, doorbellFd: bell });
      const timed = (fn) => { const t0 = Date.now(), c0 = process.cpuUsage(); fn(); const c = process.cpuUsage(c0); return { ms: Date.now() - t0, cpuMs: (c.user + c.system) / 1000 }; };
    `;
    const settled = await Promise.allSettled([
      // 1. The ring fd is closed under the Context (its mappings keep the ring alive, but every
      //    io_uring_enter now fails with EBADF): queued entries must complete with -EBADF.
      runChild(`${setup}
        const fd = fs.openSync(${JSON.stringify(path.join(dir, 'refused'))}, 'w+');
        ctx.setFile(0, fd);
        const rings = ctxRings();
        if (rings.length !== 1) throw new Error('rings: ' + rings);
        addon.closeFd(rings[0]);
        for (let i = 0; i < 3; i++) batch.set([2, 0, i * 4096, 0, 4096, i * 4096, 100 + i, 0], i * 8);
        const n = ctx.pump(3, 0);
        const res = [];
        for (let i = 0; i < n; i++) res.push([completions[i * 4], completions[i * 4 + 1]]);
        const inflight = ctx.inflight();
        const wait = timed(() => ctx.pump(0, 300));
        addon.ring(bell);
        const woken = timed(() => ctx.pump(0, 5000));
        const close = timed(() => ctx.close());
        console.log(JSON.stringify({ n, res, inflight, wait, woken, close, size: fs.fstatSync(fd).size }));
      `),
      // 2. The doorbell read is armed in the kernel and the ring can no longer be entered: it
      //    can never be cancelled or completed, so close() must give up (and leak) in bounded time.
      runChild(`${setup}
        ctx.pump(0, 20); // arms the doorbell read, times out
        addon.closeFd(ctxRings()[0]);
        const close = timed(() => ctx.close());
        console.log(JSON.stringify({ close }));
      `),
      // 3. A read of a FIFO nobody writes to never completes on its own: close() cancels it after
      //    the grace period and then tears the ring down properly.
      runChild(`${setup}
        ctx.setFile(0, fs.openSync(${JSON.stringify(fifo)}, 'r+'));
        batch.set([1, 0, 0, 0, 4096, 0, 7, 0]);
        const n = ctx.pump(1, 0) + ctx.pump(0, 100);
        const inflight = ctx.inflight(), rings = ctxRings().length;
        const close = timed(() => ctx.close());
        console.log(JSON.stringify({ n, inflight, rings, close, ringsAfter: ctxRings().length }));
      `),
    ]);
    const names = ['refused submit', 'unusable ring with the doorbell armed', 'FIFO read in flight'];
    settled.forEach((s, i) => { if (s.status === 'rejected') console.log(`${names[i]}: ${s.reason.message}`); });
    settled.forEach((s, i) => assert.is(s.status, 'fulfilled', `${names[i]}: the child finished (a hang is killed after 40 s)`));
    const [refused, stuckRing, fifoRead] = settled.map((s) => s.value);
    console.log(`io_uring refused submit: ${JSON.stringify(refused)}`);
    console.log(`io_uring unusable ring, doorbell armed: ${JSON.stringify(stuckRing)}`);
    console.log(`io_uring FIFO read in flight: ${JSON.stringify(fifoRead)}`);
    const { EBADF: ebadf } = os.constants.errno;
    assert.is(refused.n, 3, 'every queued entry completed in the same pump');
    assert.equal(refused.res.sort(), [[100, -ebadf], [101, -ebadf], [102, -ebadf]]);
    assert.is(refused.inflight, 0);
    assert.ok(refused.wait.ms >= 250, `pump(0, 300) still waits (${refused.wait.ms} ms)`);
    assert.ok(refused.woken.ms < 2000, `and the doorbell still wakes it (${refused.woken.ms} ms)`);
    assert.ok(refused.close.ms < 2000, `nothing left to drain (${refused.close.ms} ms)`);
    assert.is(refused.size, 0, 'nothing was written');

    assert.ok(stuckRing.close.ms >= 9000 && stuckRing.close.ms < 20000, `gave up after ~10 s (${stuckRing.close.ms} ms)`);
    assert.ok(stuckRing.close.cpuMs < stuckRing.close.ms / 4, `no busy loop (${stuckRing.close.cpuMs} ms CPU)`);

    assert.is(fifoRead.n, 0);
    assert.is(fifoRead.inflight, 1);
    assert.is(fifoRead.rings, 1);
    assert.ok(fifoRead.close.ms >= 4000 && fifoRead.close.ms < 9000, `cancelled after the grace period (${fifoRead.close.ms} ms)`);
    assert.ok(fifoRead.close.cpuMs < fifoRead.close.ms / 4, `no busy loop (${fifoRead.close.cpuMs} ms CPU)`);
    assert.is(fifoRead.ringsAfter, 0, 'then the ring was torn down, not leaked');
  });
}

test.run();
