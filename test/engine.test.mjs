// Engine core: every op on every backend, checked against node:fs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openSync, readSync, closeSync, statSync, writeFileSync, readFileSync, fstatSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, RingfenceError } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { scratchDir, rng, pattern, availableBackends, engineOptions } from './helpers/env.mjs';

const probe = loadAddon().probe();
const BACKENDS = availableBackends(probe);
const scratch = scratchDir();
test.after(() => scratch.cleanup());

function readBack(path, offset, len) {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(len);
    const n = readSync(fd, b, 0, len, offset);
    return b.subarray(0, n);
  } finally { closeSync(fd); }
}

for (const backend of BACKENDS) {
  for (const direct of [true, false]) {
    test(`${backend} ${direct ? 'O_DIRECT' : 'buffered'}: random writes and reads round-trip (checked with node:fs)`, async () => {
      const engine = await Engine.start(engineOptions({ backend, workers: 2, queueDepth: 16, bufferPoolBytes: 8 << 20 }));
      const path = join(scratch.dir, `rt-${backend}-${direct}`);
      try {
        const f = await engine.open(path, { create: true, truncate: true, direct });
        const r = rng(backend.length * 7 + (direct ? 1 : 2));
        const align = direct ? f.info().alignment : 1;
        const writes = [];
        for (let i = 0; i < 64; i++) {
          const blocks = 1 + (r() % 8);
          const len = direct ? blocks * 4096 : 1 + (r() % 20000);
          const off = direct ? (r() % 512) * 4096 : r() % (2 << 20);
          const data = pattern(len, r());
          writes.push({ off, data });
        }
        // Sequentially, so later writes win deterministically.
        for (const w of writes) {
          const buf = i32Even(writes.indexOf(w)) ? engine.alloc(w.data.length) : Buffer.from(w.data);
          if (buf !== w.data) buf.set(w.data);
          assert.is(await f.write(buf, w.off), w.data.length);
        }
        const model = Buffer.alloc(Math.max(...writes.map((w) => w.off + w.data.length)));
        for (const w of writes) w.data.copy(model, w.off);
        assert.equal(readFileSync(path), model, 'file content equals the model (node:fs read)');
        // Engine reads of random ranges equal node:fs reads.
        for (let i = 0; i < 32; i++) {
          const len = direct ? (1 + (r() % 8)) * align : 1 + (r() % 9000);
          const off = direct ? (r() % 512) * align : r() % model.length;
          const buf = i % 2 ? engine.alloc(len) : Buffer.alloc(len);
          const n = await f.read(buf, off);
          const expect = readBack(path, off, len);
          assert.is(n, expect.length);
          assert.equal(Buffer.from(buf.subarray(0, n)), expect);
        }
        assert.is(await f.size(), BigInt(model.length));
        await f.close();
      } finally { await engine.close(); }
    });
  }

  test(`${backend}: readv/writev, writeZeroes, fallocate, flush, truncate, size`, async () => {
    const engine = await Engine.start(engineOptions({ backend, workers: 2, queueDepth: 8, bufferPoolBytes: 4 << 20 }));
    const path = join(scratch.dir, `ops-${backend}`);
    try {
      const f = await engine.open(path, { create: true, truncate: true });
      const a = pattern(4096, 1), b = pattern(8192, 2), c = engine.alloc(4096);
      c.set(pattern(4096, 3));
      assert.is(await f.writev([a, b, c], 4096), 16384);
      assert.equal(readBack(path, 4096, 16384), Buffer.concat([a, b, Buffer.from(c)]));
      const ra = Buffer.alloc(8192), rb = engine.alloc(8192);
      assert.is(await f.readv([ra, rb], 4096), 16384);
      assert.equal(ra, Buffer.concat([a, b.subarray(0, 4096)]));
      assert.equal(Buffer.from(rb), Buffer.concat([b.subarray(4096), Buffer.from(c)]));
      // writeZeroes inside the file reads back zeros, and past EOF extends it.
      await f.writeZeroes(8192, 4096);
      assert.equal(readBack(path, 8192, 4096), Buffer.alloc(4096));
      assert.equal(readBack(path, 4096, 4096), a, 'neighbours untouched');
      await f.writeZeroes(65536, 8192);
      assert.is(statSync(path).size, 65536 + 8192);
      assert.equal(readBack(path, 65536, 8192), Buffer.alloc(8192));
      // fallocate KEEP_SIZE allocates without growing.
      await f.fallocate(1 << 20, 4096, 1);
      assert.is(statSync(path).size, 65536 + 8192);
      await f.flush();
      await f.truncate(12288);
      assert.is(await f.size(), 12288n);
      await f.truncate(1n << 20n);
      assert.is(statSync(path).size, 1 << 20);
      await f.close();
    } finally { await engine.close(); }
  });

  test(`${backend}: bigint offsets beyond 4 GiB on a sparse file`, async () => {
    const engine = await Engine.start(engineOptions({ backend, workers: 1, queueDepth: 4, bufferPoolBytes: 1 << 20 }));
    const path = join(scratch.dir, `big-${backend}`);
    try {
      const f = await engine.open(path, { create: true, truncate: true });
      const off = (5n << 30n) + 8192n; // 5 GiB + 8 KiB
      const data = pattern(4096, 9);
      assert.is(await f.write(data, off), 4096);
      assert.is(await f.size(), off + 4096n);
      assert.equal(readBack(path, Number(off), 4096), data);
      const back = Buffer.alloc(4096);
      assert.is(await f.read(back, Number(off)), 4096, 'number offset > 2^32 works too');
      assert.equal(back, data);
      await f.close();
    } finally { await engine.close(); }
  });
}

test('batch submit resolves results in order; several workers on one file at once', async () => {
  const engine = await Engine.start({ mode: 'workers', workers: 3, queueDepth: 8, bufferPoolBytes: 8 << 20 });
  const path = join(scratch.dir, 'batch');
  try {
    const f = await engine.open(path, { create: true, truncate: true });
    const ops = [];
    for (let i = 0; i < 96; i++) ops.push({ op: 'write', buffer: pattern(4096, 100 + i), offset: i * 4096 });
    const res = await f.submit(ops);
    assert.equal(res, ops.map(() => 4096));
    const before = engine.stats().workers.map((w) => w.ops);
    assert.ok(before.filter((n) => n > 0).length === 3, `all three workers served the file: ${before}`);
    const reads = ops.map((o, i) => ({ op: 'read', buffer: Buffer.alloc(4096), offset: i * 4096 }));
    await f.submit([...reads, { op: 'flush' }, { op: 'writeZeroes', offset: 96 * 4096, length: 4096 }]);
    reads.forEach((r, i) => assert.equal(r.buffer, ops[i].buffer));
    assert.is(statSync(path).size, 97 * 4096);
    await f.close();
  } finally { await engine.close(); }
});

test('a full submission ring loses nothing: 20x more requests than ring slots', async () => {
  const engine = await Engine.start({ mode: 'workers', workers: 2, queueDepth: 4, bufferPoolBytes: 64 << 20 });
  const path = join(scratch.dir, 'flood');
  try {
    const f = await engine.open(path, { create: true, truncate: true });
    const n = 2560; // rings hold 64 entries per worker
    const writes = [];
    for (let i = 0; i < n; i++) writes.push(f.write(pattern(4096, i + 1), i * 4096));
    assert.equal(await Promise.all(writes), writes.map(() => 4096));
    assert.ok(engine.stats().ringFullEvents > 0, 'the rings did overflow');
    const file = readFileSync(path);
    for (let i = 0; i < n; i++) assert.ok(file.subarray(i * 4096, (i + 1) * 4096).equals(pattern(4096, i + 1)), `block ${i}`);
    await f.close();
  } finally { await engine.close(); }
});

test('close() drains in-flight requests, then rejects with ERR_RINGFENCE_CLOSED', async () => {
  const engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 8 }));
  const path = join(scratch.dir, 'drain');
  const f = await engine.open(path, { create: true, truncate: true });
  const writes = [];
  for (let i = 0; i < 200; i++) writes.push(f.write(pattern(4096, i + 7), i * 4096));
  const closing = engine.close();
  const results = await Promise.all(writes);
  await closing;
  assert.ok(results.every((n) => n === 4096));
  const file = readFileSync(path);
  for (let i = 0; i < 200; i++) assert.ok(file.subarray(i * 4096, (i + 1) * 4096).equals(pattern(4096, i + 7)));
  try { await f.write(Buffer.alloc(4096), 0); assert.unreachable('write after close'); }
  catch (e) { assert.instance(e, RingfenceError); assert.is(e.code, 'ERR_RINGFENCE_CLOSED'); }
  const e2 = await engine.open(path).catch((e) => e);
  assert.is(e2.code, 'ERR_RINGFENCE_CLOSED');
});

test('unaligned user buffers are bounced correctly (memory alignment)', async () => {
  const engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 8 }));
  const path = join(scratch.dir, 'bounce');
  try {
    const f = await engine.open(path, { create: true, truncate: true, direct: true });
    const backing = Buffer.alloc(4096 * 3 + 7);
    const view = backing.subarray(7, 7 + 8192); // odd address
    view.set(pattern(8192, 42));
    assert.is(await f.write(view, 4096), 8192);
    const pooled = engine.alloc(8192 + 4096);
    const odd = pooled.subarray(1, 1 + 8192); // in the pool but misaligned
    assert.is(await f.read(odd, 4096), 8192);
    assert.equal(Buffer.from(odd), pattern(8192, 42));
    assert.equal(readBack(path, 4096, 8192), pattern(8192, 42));
    await f.close();
  } finally { await engine.close(); }
});

test('errors carry code, errno, op, path, offset, length and say what to do', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  const path = join(scratch.dir, 'errs');
  try {
    const f = await engine.open(path, { create: true, truncate: true, direct: true });
    const e1 = await f.writev([Buffer.alloc(100)], 0).catch((e) => e);
    assert.instance(e1, RingfenceError);
    assert.is(e1.code, 'ERR_RINGFENCE_UNALIGNED');
    assert.match(e1.message, /multiples of \d+/);
    const ro = await engine.open(path, { readOnly: true });
    const e2 = await ro.write(Buffer.alloc(4096), 0).catch((e) => e);
    assert.is(e2.code, 'EBADF');
    assert.match(e2.message, /readOnly/);
    const e3 = await engine.open(join(scratch.dir, 'missing')).catch((e) => e);
    assert.is(e3.code, 'ENOENT');
    assert.match(e3.message, /create: true/);
    const e4b = await f.read(Buffer.alloc(4096), -1).catch((e) => e);
    assert.instance(e4b, RangeError);
    assert.is(e4b.code, 'ERR_OUT_OF_RANGE');
    await f.close(); await ro.close();
  } finally { await engine.close(); }
});

test('engine.info() reports the backend of each worker and why others were refused', async () => {
  const engine = await Engine.start({ mode: 'workers', workers: 2, backend: 'auto' });
  try {
    const info = engine.info();
    assert.is(info.workers.length, 2);
    assert.ok(['io_uring', 'libaio', 'sync'].includes(info.workers[0].backend));
    if (probe.ioUring.ok) assert.is(info.workers[0].backend, 'io_uring');
    assert.type(info.kernel, 'string');
    assert.ok(Array.isArray(info.ioUring.features));
  } finally { await engine.close(); }
});

test('completions that do not fit the completion ring wait, none lost: a long microtask chain keeps the main thread from draining', async () => {
  // The main thread drains completions in a macrotask; a caller that keeps submitting from a
  // chain of microtasks starves it, so the completion ring fills and the worker must hold
  // completions back (and stop taking requests) without overwriting any.
  const engine = await Engine.start(engineOptions({ workers: 1, queueDepth: 1, spinUs: 0 }));
  try {
    const f = await engine.open(join(scratch.dir, 'cqfull'), { create: true, truncate: true, direct: false });
    const buf = engine.alloc(4096);
    const ps = [];
    for (let i = 0; i < 2000; i++) {
      ps.push(f.write(buf, (i % 64) * 4096));
      await null;
      const t = performance.now(); while (performance.now() - t < 0.2) { /* the caller is busy */ }
    }
    let timer;
    const res = await Promise.race([Promise.allSettled(ps), new Promise((r) => { timer = setTimeout(() => r(null), 20000); })]);
    clearTimeout(timer);
    assert.ok(res !== null, `every request settles (in flight: ${engine.stats().inFlight})`);
    assert.ok(res.every((r) => r.status === 'fulfilled' && r.value === 4096));
    await f.close();
  } finally { await engine.close(); }
});

function i32Even(i) { return i % 2 === 0; }

test.run();
