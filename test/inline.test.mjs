// Inline mode (the default): the calling thread owns its kernel I/O context and drives it from
// its own event loop (src/core/inline.ts, native/inline.h). These tests cover what is particular
// to it; the mode-agnostic files run in both modes (scripts/test.sh, RINGFENCE_TEST_MODE).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import * as fsMod from 'node:fs';
import { readFileSync, writeFileSync, statSync } from 'node:fs';
const require_fs = () => fsMod;
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { scratchDir, pattern, availableBackends } from './helpers/env.mjs';

const scratch = scratchDir('rf-inline-');
test.after(() => scratch.cleanup());
const BACKENDS = availableBackends(loadAddon().probe());
const dist = new URL('../dist/src/index.js', import.meta.url).href;

test('the default engine runs inline: one context, owned by this thread', async () => {
  const engine = await Engine.start();
  try {
    const info = engine.info();
    assert.is(info.mode, 'inline');
    assert.match(info.modeReason, /the default/);
    assert.is(info.options.mode, 'inline');
    assert.is(info.options.workers, 0);
    assert.is(info.workers.length, 1);
    assert.is(info.workers[0].info.mode, 'inline');
  } finally { await engine.close(); }
});

test('mode options: workers or faults mean worker mode; inline refuses them with advice', async () => {
  const w = await Engine.start({ workers: 1 });
  try {
    assert.is(w.info().mode, 'workers'); assert.is(w.info().workers[0].info.mode, 'worker');
    assert.match(w.info().modeReason, /options\.workers was given/);
  } finally { await w.close(); }
  for (const [o, re] of [[{ mode: 'inline', workers: 2 }, /mode 'workers'/], [{ mode: 'inline', faults: '0:exit:1' }, /mode: 'workers'/], [{ mode: 'threads' }, /options\.mode/]]) {
    const err = await Engine.start(o).then(() => null, (e) => e);
    assert.ok(err, `${JSON.stringify(o)} refused`);
    assert.is(err.code, 'ERR_INVALID_ARG_VALUE', err.message);
    assert.match(err.message, re);
  }
});

for (const backend of BACKENDS) {
  test(`${backend} inline: reads, writes, an unaligned write, fallocate, flush and truncate land as node:fs sees them`, async () => {
    const engine = await Engine.start({ backend, queueDepth: 8, bufferPoolBytes: 4 << 20 });
    const path = join(scratch.dir, `ops-${backend}`);
    try {
      assert.is(engine.info().workers[0].backend, backend);
      const f = await engine.open(path, { create: true, truncate: true });
      const data = pattern(64 * 4096, 7);
      // 64 writes in one tick: more than queueDepth, so some wait for room.
      await Promise.all(Array.from({ length: 64 }, (_, i) => f.write(data.subarray(i * 4096, (i + 1) * 4096), i * 4096)));
      const odd = pattern(5000, 8);
      await f.write(odd, 1000);
      data.set(odd, 1000);
      await f.writeZeroes(64 * 4096, 8192);
      await f.flush();
      const back = Buffer.alloc(64 * 4096);
      assert.is(await f.read(back, 0), back.length);
      assert.ok(back.equals(data), 'read back what was written');
      assert.is(statSync(path).size, 66 * 4096);
      await f.truncate(10000);
      await f.close();
      const disk = readFileSync(path);
      assert.is(disk.length, 10000);
      assert.ok(disk.equals(data.subarray(0, 10000)), 'node:fs sees the same bytes');
    } finally { await engine.close(); }
  });
}

test('libaio inline: a buffered file (no O_DIRECT) works; its I/O goes to the helpers, never the loop', async () => {
  if (!BACKENDS.includes('libaio')) { console.log('  (libaio unavailable: covered by the sync case)'); }
  const engine = await Engine.start({ backend: BACKENDS.includes('libaio') ? 'libaio' : 'sync' });
  try {
    const f = await engine.open(join(scratch.dir, 'buffered'), { create: true, truncate: true, direct: false });
    const d = pattern(12345, 3);
    assert.is(await f.write(d, 77), d.length);
    const back = Buffer.alloc(d.length);
    assert.is(await f.read(back, 77), d.length);
    assert.ok(back.equals(d));
    await f.close();
  } finally { await engine.close(); }
});

test('the event loop keeps running while a blocking op (an emulated 300 ms fallocate) is in progress', async () => {
  const engine = await Engine.start({ emulateXfsFallocateBug: { windowUs: 300000 }, xfsWorkaround: 'never' });
  try {
    const f = await engine.open(join(scratch.dir, 'blocking'), { create: true, truncate: true });
    let ticks = 0, maxGap = 0, last = performance.now();
    const timer = setInterval(() => { const now = performance.now(); maxGap = Math.max(maxGap, now - last); last = now; ticks++; }, 5);
    const t0 = performance.now();
    await f.writeZeroes(0, 1 << 20);
    const took = performance.now() - t0;
    clearInterval(timer);
    console.log(`  fallocate took ${took.toFixed(0)} ms; timer ran ${ticks} times, longest gap ${maxGap.toFixed(1)} ms`);
    assert.ok(took >= 290, 'the emulated window was really there');
    assert.ok(ticks >= 20, 'timers ran during the fallocate');
    assert.ok(maxGap < 150, `the loop was never blocked for long (longest gap ${maxGap.toFixed(1)} ms)`);
    await f.close();
  } finally { await engine.close(); }
});

test('an engine started inside a worker_threads Worker gets that thread its own inline context', async () => {
  const path = join(scratch.dir, 'from-worker');
  const src = `
    const { parentPort, threadId } = require('node:worker_threads');
    (async () => {
      const { Engine } = await import(${JSON.stringify(dist)});
      const engine = await Engine.start({ queueDepth: 16 });
      const f = await engine.open(${JSON.stringify(path)}, { create: true, truncate: true });
      const buf = Buffer.alloc(8192, 0x5a);
      await Promise.all([f.write(buf, 0), f.write(buf, 8192)]);
      const back = Buffer.alloc(16384);
      const n = await f.read(back, 0);
      const info = engine.info();
      await f.close(); await engine.close();
      parentPort.postMessage({ threadId, mode: info.mode, ctxMode: info.workers[0].info.mode, n, ok: back.every((b) => b === 0x5a) });
    })().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));
  `;
  const w = new Worker(src, { eval: true });
  const m = await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
  await w.terminate();
  assert.is(m.error, undefined, m.error);
  assert.ok(m.threadId > 0);
  assert.is(m.mode, 'inline');
  assert.is(m.ctxMode, 'inline');
  assert.is(m.n, 16384);
  assert.ok(m.ok);
  assert.is(statSync(path).size, 16384);
});

test('a process whose engine is left open exits once nothing is in flight, and waits for what is', () => {
  const path = join(scratch.dir, 'exit');
  // Nothing else holds the loop open: the poll handle and keep-alive timer must hold it while
  // the write is in flight, and must not once it settled.
  const src = `
    import { Engine } from ${JSON.stringify(dist)};
    const engine = await Engine.start();
    const f = await engine.open(${JSON.stringify(path)}, { create: true, truncate: true });
    f.write(Buffer.alloc(1 << 20, 1), 0).then((n) => console.log('written', n));
  `;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8', timeout: 20000 });
  const ms = Date.now() - t0;
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /written 1048576/);
  assert.ok(ms < 15000, `exited by itself (${ms} ms)`);
  assert.is(statSync(path).size, 1 << 20);
});

test('many more requests than slots (queueDepth 2): every one settles with the right data', async () => {
  const engine = await Engine.start({ queueDepth: 2, bufferPoolBytes: 1 << 20 });
  const path = join(scratch.dir, 'many');
  writeFileSync(path, pattern(256 * 4096, 11));
  const want = readFileSync(path);
  try {
    const f = await engine.open(path);
    const bufs = Array.from({ length: 5000 }, () => Buffer.alloc(4096));
    const ns = await Promise.all(bufs.map((b, i) => f.read(b, (i % 256) * 4096)));
    assert.ok(ns.every((n) => n === 4096));
    bufs.forEach((b, i) => { if (!b.equals(want.subarray((i % 256) * 4096, (i % 256 + 1) * 4096))) throw new Error(`read ${i} wrong`); });
    assert.is(engine.stats().inFlight, 0);
    await f.close();
  } finally { await engine.close(); }
});

/** A subarray of a fresh Buffer whose address is a multiple of `align` (or, with misalign, is not). */
function alignedBuffer(len, align, misalign = 0) {
  const addon = loadAddon();
  const big = Buffer.alloc(len + 2 * align);
  const mod = addon.addressMod(big, align);
  const start = (mod === 0 ? 0 : align - mod) + misalign;
  return big.subarray(start, start + len);
}

test('writes from ordinary Buffers that meet the alignment, and reads into SharedArrayBuffer memory, go to the kernel directly (no pool memory used); others bounce', async () => {
  const engine = await Engine.start({ queueDepth: 16, bufferPoolBytes: 1 << 20 });
  try {
    const path = join(scratch.dir, 'ext');
    const f = await engine.open(path, { create: true, truncate: true });
    const align = f.info().memoryAlignment;
    const data = pattern(64 * 4096, 21);
    const bufs = Array.from({ length: 64 }, (_, i) => { const b = alignedBuffer(4096, Math.max(align, 512)); b.set(data.subarray(i * 4096, (i + 1) * 4096)); return b; });
    assert.ok(bufs.every((b) => loadAddon().addressMod(b, Math.max(align, 512)) === 0));
    await Promise.all(bufs.map((b, i) => f.write(b, i * 4096)));
    // Reads: into SharedArrayBuffer memory (it cannot be detached under the kernel).
    const shared = new Uint8Array(new SharedArrayBuffer(64 * 4096 + 2 * 4096));
    const s0 = (4096 - loadAddon().addressMod(shared, 4096)) % 4096;
    const back = Array.from({ length: 64 }, (_, i) => shared.subarray(s0 + i * 4096, s0 + (i + 1) * 4096));
    await Promise.all(back.map((b, i) => f.read(b, i * 4096)));
    assert.ok(Buffer.concat(back).equals(data), 'aligned Buffers and SharedArrayBuffer views: data round-trips');
    // A batch with them too.
    const res = await f.submit(back.slice(0, 8).map((b, i) => ({ op: 'read', buffer: b, offset: (i + 8) * 4096 })));
    assert.equal(res, new Array(8).fill(4096));
    assert.is(engine.stats().pool.peak, 0, 'no bounce block was ever allocated: the kernel used the Buffers');
    // A read into an ordinary (detachable) Buffer is bounced, however aligned.
    const ordinary = alignedBuffer(4096, 4096);
    assert.is(await f.read(ordinary, 0), 4096);
    assert.ok(ordinary.equals(data.subarray(0, 4096)));
    assert.ok(engine.stats().pool.peak > 0, 'a read into a detachable buffer went through a bounce block');
    await f.close();
    assert.ok(readFileSync(path).equals(data), 'node:fs sees the same bytes');
    if (align > 1) {
      const f2 = await engine.open(path);
      const odd = alignedBuffer(4096, Math.max(align, 512), 8);
      const before = engine.stats().pool.used;
      const r = f2.write(odd.fill(3), 0);
      assert.ok(engine.stats().pool.used > before, 'a misaligned Buffer is written through a bounce block');
      assert.is(await r, 4096);
      await f2.close();
    }
  } finally { await engine.close(); }
});

test('a buffered file needs no alignment: a write from any Buffer goes to the kernel directly', async () => {
  const engine = await Engine.start({ bufferPoolBytes: 1 << 20 });
  try {
    const f = await engine.open(join(scratch.dir, 'ext-buffered'), { create: true, truncate: true, direct: false });
    const d = pattern(10007, 5);
    const src = Buffer.concat([Buffer.alloc(3), d]).subarray(3); // an odd address
    assert.is(await f.write(src, 13), d.length);
    assert.is(engine.stats().pool.peak, 0, 'the write used the Buffer itself');
    const back = new Uint8Array(new SharedArrayBuffer(d.length + 1)).subarray(1);
    assert.is(await f.read(back, 13), d.length);
    assert.ok(Buffer.from(back).equals(d));
    assert.is(engine.stats().pool.peak, 0, 'so did the read into shared memory');
    await f.close();
  } finally { await engine.close(); }
});

test('a short write from an ordinary Buffer is continued from the right byte (EXT offset advances)', () => {
  const path = join(scratch.dir, 'ext-short');
  const script = `process.on('SIGXFSZ', () => {});
    const { Engine } = await import(${JSON.stringify(dist)});
    const engine = await Engine.start();
    const f = await engine.open(${JSON.stringify(path)}, { create: true, truncate: true, direct: false });
    const buf = Buffer.alloc(16384, 7);
    const out = await f.write(buf, 0).then((n) => ({ n }), (e) => ({ code: e.code, message: e.message, peak: engine.stats().pool.peak }));
    await engine.close();
    console.log(JSON.stringify(out));`;
  const r = spawnSync('bash', ['-c', `ulimit -f 8 && exec "${process.execPath}" --input-type=module -e "$0"`, script], { encoding: 'utf8', timeout: 30000 });
  const out = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
  assert.is(out.code, 'EFBIG', r.stdout + r.stderr);
  assert.match(out.message, /first 8192 bytes/);
  assert.is(out.peak, 0, 'zero-copy');
  assert.is(statSync(path).size, 8192);
});

test('a write whose Buffer is detached before it starts rejects ERR_RINGFENCE_BUFFER_DETACHED; nothing is written', async () => {
  const engine = await Engine.start({ bufferPoolBytes: 1 << 20 });
  try {
    const path = join(scratch.dir, 'ext-detached');
    const f = await engine.open(path, { create: true, truncate: true, direct: false });
    const victim = new Uint8Array(new ArrayBuffer(4096)).fill(1);
    const w = f.write(victim, 0);
    structuredClone(victim.buffer, { transfer: [victim.buffer] }); // before the end of the tick: before it starts
    const e = await w.then(() => null, (err) => err);
    assert.ok(e, 'it did not resolve');
    assert.is(e.code, 'ERR_RINGFENCE_BUFFER_DETACHED', e.message);
    assert.is(statSync(path).size, 0);
    await f.close();
  } finally { await engine.close(); }
});

test('native: an EXT entry is checked against its own buffer, and refused without one', () => {
  const addon = loadAddon();
  const pool = new Uint8Array(new SharedArrayBuffer(1 << 16, { maxByteLength: 1 << 16 }));
  const batch = new Int32Array(8 * 8), completions = new Int32Array(4 * 32);
  const fd = require_fs().openSync(join(scratch.dir, 'ext-native'), 'w+');
  let ready = 0;
  const ctx = new addon.Context({ backend: 'sync', depth: 8, pool, batch, completions, onReady: () => { ready++; } });
  try {
    ctx.setFile(0, fd);
    const EXT = 0x400, buf = Buffer.alloc(100, 9);
    batch.set([2 | EXT, 0, 0, 0, 100, 0, 1, 0], 0);        // fits its buffer: runs (on a helper)
    batch.set([2 | EXT, 0, 0, 0, 100, 1, 2, 0], 8);        // 1 + 100 > 100: EFAULT
    batch.set([5 | EXT, 0, 0, 0, 100, 0, 3, 0], 16);       // EXT is for READ/WRITE only: EINVAL
    batch.set([1 | EXT, 0, 0, 0, 10, 0, 4, 0], 24);        // no buffer given for it: EFAULT
    const got = ctx.pump(4, 0, [buf, buf, buf]);
    const res = {};
    for (let i = 0; i < got; i++) res[completions[i * 4]] = completions[i * 4 + 1];
    assert.equal(res, { 2: -14, 3: -22, 4: -14 });
    // Worker-mode pumps take no buffers: an EXT entry there is always refused.
    assert.is(ctx.info().mode, 'inline');
  } finally { ctx.close(); require_fs().closeSync(fd); }
});

/**
 * A connected Unix socket pair for the reply tests: the context sends on `served`'s fd and
 * `client` collects it in `got` (reset it with `c.got = Buffer.alloc(0)`). `close()` ends both.
 */
async function socketPair(name) {
  const net = await import('node:net');
  const sockPath = join(scratch.dir, name);
  const srv = net.createServer();
  await new Promise((r) => srv.listen(sockPath, r));
  const client = net.connect(sockPath);
  const [served] = await Promise.all([new Promise((r) => srv.once('connection', r)), new Promise((r) => client.once('connect', r))]);
  const c = { client, served, got: Buffer.alloc(0), close() { client.destroy(); served.destroy(); srv.close(); } };
  client.on('data', (d) => { c.got = Buffer.concat([c.got, d]); });
  return c;
}

test('native: a reply record is sent at completion only for a whole write, on its own socket, with every word from JavaScript checked', async () => {
  const addon = loadAddon(), sp = await socketPair('reply.sock'), { served } = sp;
  const pool = new Uint8Array(new SharedArrayBuffer(1 << 16, { maxByteLength: 1 << 16 }));
  const batch = new Int32Array(8 * 8), completions = new Int32Array(4 * 32);
  const replies = new Int32Array(1024 * 8), replyArm = new Int32Array(8);
  const bytes = new Uint8Array(replies.buffer);
  const fd = require_fs().openSync(join(scratch.dir, 'reply-file'), 'w+');
  const results = {};
  let wake = () => {};
  const ctx = new addon.Context({ backend: 'sync', depth: 8, pool, batch, completions, replies, replyArm, replySlots: 16, onReady: () => wake() });
  // Submits `entries` ([words, arm]) and pumps until each tag has completed.
  const run = async (entries) => {
    entries.forEach(([w, arm], i) => { batch.set(w, i * 8); replyArm[i] = arm; });
    let n = ctx.pump(entries.length, 0, undefined, true);
    for (let left = entries.length; ;) {
      for (let i = 0; i < n; i++) { results[completions[i * 4]] = completions[i * 4 + 1]; left--; }
      if (left <= 0) break;
      await new Promise((r) => { wake = r; });
      n = ctx.pump(0, 0);
    }
    await new Promise((r) => setTimeout(r, 50)); // what was sent reaches the client
  };
  const arm = (rec, fill) => { bytes.fill(fill, rec * 32, rec * 32 + 16); replies[rec * 8 + 4] = 1; replies[rec * 8 + 5] = 0; replies[rec * 8 + 6] = 0; };
  try {
    ctx.setFile(0, fd);
    assert.ok(ctx.replyOpen(1 << 30) < 0, 'a closed fd number is refused with -errno');
    const h = ctx.replyOpen(served._handle.fd), rec = h & 1023;
    assert.ok(h >= 1024, `a handle, index | generation << 10: ${h}`);
    // A whole write: the record's 16 bytes go out, TRIED with the send's result.
    arm(rec, 0xa1);
    await run([[[2, 0, 0, 0, 4096, 0, 1 << 3, 0], h + 1]]);
    assert.is(results[8], 4096);
    assert.equal([...sp.got], new Array(16).fill(0xa1), 'the reply bytes, once');
    assert.equal([replies[rec * 8 + 4], replies[rec * 8 + 5]], [2, 16]);
    assert.equal([...replyArm], new Array(8).fill(0), 'the context cleared the arm words it read');
    // Nothing is sent for: a failed write (no such file id), a whole READ of a record armed
    // for a write (R_DATA 0, not the read's length), a sub-operation tag, a
    // record number past the table, a record that is not armed.
    sp.got = Buffer.alloc(0);
    arm(rec, 0xb2);
    await run([
      [[2, 7, 0, 0, 4096, 0, 2 << 3, 0], h + 1],
      [[1, 0, 0, 0, 4096, 0, 3 << 3, 0], h + 1],
      [[2, 0, 0, 0, 4096, 0, (4 << 3) | 1, 0], h + 1],
      [[2, 0, 0, 0, 4096, 0, 5 << 3, 0], 5000],
      [[2, 0, 0, 0, 4096, 0, 6 << 3, 0], -3],
      [[2, 0, 0, 0, 4096, 0, 7 << 3, 0], rec + 1],
    ]);
    assert.ok(results[16] < 0, 'the write to an unknown file failed');
    assert.is(sp.got.length, 0, 'nothing was sent');
    assert.is(replies[rec * 8 + 4], 1, 'the record is still armed: the caller replies itself');
    // A slot past replySlots is ignored too, and so is a closed record: its dup is gone.
    await run([[[2, 0, 0, 0, 4096, 0, 40 << 3, 0], h + 1]]);
    assert.is(sp.got.length, 0);
    ctx.replyClose(rec); // the bare index: an older generation's handle, which closes nothing
    await run([[[2, 0, 0, 0, 4096, 0, 1 << 3, 0], h + 1]]);
    assert.is(sp.got.length, 16, 'a stale handle closed nothing');
    sp.got = Buffer.alloc(0);
    arm(rec, 0xc3);
    ctx.replyClose(h);
    await run([[[2, 0, 0, 0, 4096, 0, 1 << 3, 0], h + 1]]);
    assert.is(sp.got.length, 0, 'a closed record sends nothing');
    // Reopened, the same index has a new generation: the old handle names nothing.
    const h2 = ctx.replyOpen(served._handle.fd);
    assert.is(h2 & 1023, rec, 'the index is reused');
    assert.is.not(h2, h);
    await run([[[2, 0, 0, 0, 4096, 0, 1 << 3, 0], h + 1]]);
    assert.is(sp.got.length, 0, 'a request with the old handle sends nothing on the reopened record');
    await run([[[2, 0, 0, 0, 4096, 0, 1 << 3, 0], h2 + 1]]);
    assert.equal([...sp.got], new Array(16).fill(0xc3), 'the new handle sends');
    assert.throws(() => ctx.replyClose(-1), /replyClose: handle/);
  } finally {
    ctx.close(); require_fs().closeSync(fd); sp.close();
  }
  const plain = new addon.Context({ backend: 'sync', depth: 8, pool, batch, completions, onReady: () => {} });
  try { assert.throws(() => plain.replyOpen(0), /without replies/); } finally { plain.close(); }
});

test('native: a read armed with R_DATA = its length sends the header and then the data it read, only when whole', async () => {
  const addon = loadAddon(), sp = await socketPair('reply-read.sock'), { served } = sp;
  const pool = new Uint8Array(new SharedArrayBuffer(1 << 16, { maxByteLength: 1 << 16 }));
  const batch = new Int32Array(8 * 8), completions = new Int32Array(4 * 32);
  const replies = new Int32Array(1024 * 8), replyArm = new Int32Array(8);
  const bytes = new Uint8Array(replies.buffer);
  const path = join(scratch.dir, 'reply-read-file');
  const content = pattern(4096 + 100, 77); // 4096 whole bytes, then a block that reads short
  writeFileSync(path, content);
  const fd = require_fs().openSync(path, 'r+');
  const results = {};
  let wake = () => {};
  const ctx = new addon.Context({ backend: 'sync', depth: 8, pool, batch, completions, replies, replyArm, replySlots: 16, onReady: () => wake() });
  const run = async (entries, bufs) => {
    entries.forEach(([w, arm], i) => { batch.set(w, i * 8); replyArm[i] = arm; });
    let n = ctx.pump(entries.length, 0, bufs, true);
    for (let left = entries.length; ;) {
      for (let i = 0; i < n; i++) { results[completions[i * 4]] = completions[i * 4 + 1]; left--; }
      if (left <= 0) break;
      await new Promise((r) => { wake = r; });
      n = ctx.pump(0, 0);
    }
    await new Promise((r) => setTimeout(r, 50));
  };
  const arm = (rec, fill, data) => { bytes.fill(fill, rec * 32, rec * 32 + 16); replies[rec * 8 + 4] = 1; replies[rec * 8 + 5] = 0; replies[rec * 8 + 6] = data; };
  try {
    ctx.setFile(0, fd);
    const h = ctx.replyOpen(served._handle.fd), rec = h & 1023;
    // A whole read into the pool at 8192: the header, then exactly the bytes the kernel read.
    pool.fill(0xee);
    arm(rec, 0xa1, 4096);
    await run([[[1, 0, 0, 0, 4096, 8192, 1 << 3, 0], h + 1]]);
    assert.is(results[8], 4096);
    assert.is(sp.got.length, 16 + 4096, 'header and data, once');
    assert.equal([...sp.got.subarray(0, 16)], new Array(16).fill(0xa1));
    assert.ok(sp.got.subarray(16).equals(Buffer.from(content.subarray(0, 4096))), 'the data the read brought in, not what the pool held before');
    assert.equal([replies[rec * 8 + 4], replies[rec * 8 + 5]], [2, 16 + 4096]);
    // Nothing is sent for: a read armed with another length, a read that comes back short (at
    // EOF), a write armed as a read (R_DATA != 0), a read whose memory runs past the pool.
    for (const [entry, data, why] of [
      [[1, 0, 0, 0, 4096, 0, 2 << 3, 0], 512, 'R_DATA is not the read\'s length'],
      [[1, 0, 4096, 0, 4096, 16384, 3 << 3, 0], 4096, 'the read came back short'],
      [[2, 0, 0, 0, 4096, 0, 4 << 3, 0], 4096, 'a write with R_DATA set'],
      [[1, 0, 0, 0, 4096, 65536 - 2048, 5 << 3, 0], 4096, 'the read\'s memory runs past the pool'],
    ]) {
      sp.got = Buffer.alloc(0);
      arm(rec, 0xb2, data);
      await run([[entry, h + 1]]);
      assert.is(sp.got.length, 0, `nothing was sent: ${why}`);
      assert.is(replies[rec * 8 + 4], 1, `still armed (${why}): the caller replies itself`);
    }
    assert.is(results[24], 100, 'the EOF read was short');
    assert.is(results[40], -14, 'the read past the pool was refused (EFAULT)');
    // A caller-memory (EXT) read: the data comes from that buffer.
    const EXT = 0x400, ext = Buffer.alloc(4096, 0x55);
    sp.got = Buffer.alloc(0);
    arm(rec, 0xc3, 4096);
    await run([[[1 | EXT, 0, 0, 0, 4096, 0, 6 << 3, 0], h + 1]], [ext]);
    assert.is(results[48], 4096);
    assert.is(sp.got.length, 16 + 4096);
    assert.ok(sp.got.subarray(16).equals(Buffer.from(content.subarray(0, 4096))), 'the EXT buffer\'s data');
    // An EXT read whose buffer is smaller than its length: refused, and nothing sent.
    sp.got = Buffer.alloc(0);
    arm(rec, 0xd4, 4096);
    await run([[[1 | EXT, 0, 0, 0, 4096, 0, 7 << 3, 0], h + 1]], [Buffer.alloc(100)]);
    assert.is(results[56], -14);
    assert.is(sp.got.length, 0, 'nothing sent for a refused EXT read');
  } finally {
    ctx.close(); require_fs().closeSync(fd); sp.close();
  }
});

(BACKENDS.includes('io_uring') ? test : test.skip)('native: a reply due at completion is sent at the wake-up, before JavaScript runs (io_uring)', async () => {
  const addon = loadAddon(), sp = await socketPair('reply-wake.sock'), { served } = sp;
  // A FIFO: the read waits in the kernel until this test writes, so its completion arrives
  // through the eventfd, not inside the pump() that submitted it.
  const fifo = join(scratch.dir, 'reply-wake.fifo');
  assert.is(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  const fd = require_fs().openSync(fifo, 'r+'); // O_RDWR: opens without a writer
  const pool = new Uint8Array(new SharedArrayBuffer(1 << 16, { maxByteLength: 1 << 16 }));
  const batch = new Int32Array(8 * 8), completions = new Int32Array(4 * 32);
  const replies = new Int32Array(1024 * 8), replyArm = new Int32Array(8);
  const bytes = new Uint8Array(replies.buffer);
  let seen = null, wake = () => {};
  const ctx = new addon.Context({
    backend: 'io_uring', depth: 8, pool, batch, completions, replies, replyArm, replySlots: 16,
    // What the record says when JavaScript first hears of the completion.
    onReady: () => { seen = [replies[rec * 8 + 4], replies[rec * 8 + 5]]; wake(); },
  });
  let rec = 0;
  try {
    ctx.setFile(0, fd);
    const h = ctx.replyOpen(served._handle.fd);
    rec = h & 1023;
    bytes.fill(0xa7, rec * 32, rec * 32 + 16);
    replies[rec * 8 + 4] = 1; replies[rec * 8 + 5] = 0; replies[rec * 8 + 6] = 4096;
    batch.set([1, 0, 0, 0, 4096, 0, 1 << 3, 0], 0); replyArm[0] = h + 1;
    assert.is(ctx.pump(1, 0, undefined, true), 0, 'the read waits for the FIFO');
    const data = pattern(4096, 91);
    require_fs().writeSync(fd, data);
    const results = {};
    for (let left = 1; left > 0;) {
      await new Promise((r) => { wake = r; });
      const n = ctx.pump(0, 0);
      for (let i = 0; i < n; i++) { results[completions[i * 4]] = completions[i * 4 + 1]; left--; }
    }
    assert.is(results[8], 4096, 'the completion still reaches JavaScript, once');
    assert.equal(seen, [2, 16 + 4096], 'the reply was already sent when onReady ran (before the pump that reaped it)');
    await new Promise((r) => setTimeout(r, 50));
    assert.is(sp.got.length, 16 + 4096, 'header and data, once');
    assert.equal([...sp.got.subarray(0, 16)], new Array(16).fill(0xa7));
    assert.ok(sp.got.subarray(16).equals(Buffer.from(data)), 'the bytes the read brought in');
  } finally {
    ctx.close(); require_fs().closeSync(fd); sp.close();
  }
});

(BACKENDS.includes('io_uring') ? test : test.skip)('native: two replies due at one wake-up, one a read into caller memory (EXT), are each sent once, on their own sockets, before JavaScript runs (io_uring)', async () => {
  // The wake-up reap with more than one completion, and with an EXT buffer (helper-35's review
  // of the reap at the wake-up: only one pool read had been tested). Both FIFOs are written in
  // the same turn, so both reads have completed when the loop next polls the eventfd.
  const addon = loadAddon(), A = await socketPair('wake2-a.sock'), B = await socketPair('wake2-b.sock');
  const fifos = ['wake2-a.fifo', 'wake2-b.fifo'].map((n) => join(scratch.dir, n));
  for (const f of fifos) assert.is(spawnSync('mkfifo', [f]).status, 0, 'mkfifo');
  const fds = fifos.map((f) => require_fs().openSync(f, 'r+'));
  const pool = new Uint8Array(new SharedArrayBuffer(1 << 16, { maxByteLength: 1 << 16 }));
  const batch = new Int32Array(8 * 8), completions = new Int32Array(4 * 32);
  const replies = new Int32Array(1024 * 8), replyArm = new Int32Array(8);
  const bytes = new Uint8Array(replies.buffer);
  let seen = null, wake = () => {};
  const recs = [];
  const ctx = new addon.Context({
    backend: 'io_uring', depth: 8, pool, batch, completions, replies, replyArm, replySlots: 16,
    onReady: () => { seen ??= recs.map((r) => [replies[r * 8 + 4], replies[r * 8 + 5]]); wake(); },
  });
  try {
    ctx.setFile(0, fds[0]); ctx.setFile(1, fds[1]);
    const hs = [A, B].map((c) => ctx.replyOpen(c.served._handle.fd));
    hs.forEach((h, i) => {
      const rec = h & 1023;
      recs.push(rec);
      bytes.fill(0xa1 + i, rec * 32, rec * 32 + 16);
      replies[rec * 8 + 4] = 1; replies[rec * 8 + 5] = 0; replies[rec * 8 + 6] = 4096;
    });
    const EXT = 0x400, ext = Buffer.alloc(4096, 0x55);
    batch.set([1, 0, 0, 0, 4096, 0, 1 << 3, 0], 0); replyArm[0] = hs[0] + 1;        // into the pool
    batch.set([1 | EXT, 1, 0, 0, 4096, 0, 2 << 3, 0], 8); replyArm[1] = hs[1] + 1;  // into `ext`
    assert.is(ctx.pump(2, 0, [undefined, ext], true), 0, 'both reads wait for their FIFOs');
    const data = [pattern(4096, 17), pattern(4096, 29)];
    require_fs().writeSync(fds[0], data[0]);
    require_fs().writeSync(fds[1], data[1]);
    const results = {};
    let reported = 0;
    for (let left = 2; left > 0;) {
      await new Promise((r) => { wake = r; });
      const n = ctx.pump(0, 0);
      for (let i = 0; i < n; i++) { results[completions[i * 4]] = completions[i * 4 + 1]; left--; reported++; }
    }
    assert.equal(results, { 8: 4096, 16: 4096 }, 'both completions reach JavaScript');
    assert.is(reported, 2, 'each once');
    assert.equal(seen, [[2, 16 + 4096], [2, 16 + 4096]], 'both replies were sent when onReady first ran');
    await new Promise((r) => setTimeout(r, 50));
    assert.is(ctx.pump(0, 0), 0, 'nothing is reported again');
    for (const [i, c] of [A, B].entries()) {
      assert.is(c.got.length, 16 + 4096, `socket ${i}: header and data, once`);
      assert.equal([...c.got.subarray(0, 16)], new Array(16).fill(0xa1 + i), `socket ${i}: its own header`);
      assert.ok(c.got.subarray(16).equals(Buffer.from(data[i])), `socket ${i}: the bytes its read brought in`);
    }
    assert.ok(ext.equals(Buffer.from(data[1])), 'the EXT read landed in the caller\'s buffer');
  } finally {
    ctx.close(); for (const fd of fds) require_fs().closeSync(fd); A.close(); B.close();
  }
});

test('a write still queued in JavaScript when its reply record is closed never sends the reply of the connection that reuses the record', async () => {
  // The bug (review of the first version): a write armed with connection A's record waits in
  // JavaScript (here: not yet flushed; in a server: behind a full ring, for pool memory, or
  // parked), A goes away and closes its record, B opens one and gets the same index, arms its
  // own reply, and A's write, submitted later, sent B's reply on B's socket.
  const A = await socketPair('reuse-a.sock'), B = await socketPair('reuse-b.sock');
  const engine = await Engine.start({ queueDepth: 1, bufferPoolBytes: 1 << 20 });
  const arm = (words, h, fill) => { const w = (h & 1023) * 8; new Uint8Array(words.buffer).fill(fill, w * 4, w * 4 + 16); words[w + 4] = 1; };
  try {
    const words = engine.replyRecords();
    assert.ok(words !== null, 'an inline engine has reply records');
    const f = await engine.open(join(scratch.dir, 'reuse-file'), { create: true, truncate: true });
    const buf = engine.alloc(4096); buf.fill(7);
    const hA = engine.replyOpen(A.served._handle.fd);
    assert.ok(hA >= 0);
    arm(words, hA, 0xaa);
    const wA = f.writeReplying(buf, 0, hA); // queued: the engine flushes at the end of this turn
    engine.replyClose(hA);
    const hB = engine.replyOpen(B.served._handle.fd);
    assert.is(hB & 1023, hA & 1023, 'B got the index A had');
    arm(words, hB, 0xbb);
    assert.is(await wA, 4096);
    await new Promise((r) => setTimeout(r, 50));
    assert.is(B.got.length, 0, 'A\'s write sent nothing on B\'s socket');
    assert.is(A.got.length, 0, 'nor on A\'s');
    assert.is(words[(hB & 1023) * 8 + 4], 1, 'B\'s record is still armed');
    // B's own write sends B's reply, once.
    assert.is(await f.writeReplying(buf, 4096, hB), 4096);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal([...B.got], new Array(16).fill(0xbb));
    engine.replyClose(hB);
    await f.close();
  } finally {
    await engine.close();
    A.close(); B.close();
  }
});

test('after a close() that gave up (the context left running), closing a reply record still closes its dup of the socket', async () => {
  const sp = await socketPair('gaveup.sock'), { served } = sp;
  const fds = () => fsMod.readdirSync('/proc/self/fd').length;
  const engine = await Engine.start();
  try {
    const f = await engine.open(join(scratch.dir, 'gaveup-file'), { create: true, truncate: true });
    const n0 = fds();
    const h = engine.replyOpen(served._handle.fd);
    assert.ok(h >= 0);
    assert.is(fds(), n0 + 1, 'the context holds a dup of the socket');
    // A write in flight and no time to wait for it: close() gives up, and the context is
    // never torn down (its fds stay pinned for the kernel), so only replyClose closes the dup.
    const w = f.write(Buffer.alloc(8 << 20, 1), 0).then(() => null, (e) => e);
    await engine.close({ deadlineMs: 0 });
    assert.ok(engine.fdsPinned, 'close() gave up');
    engine.replyClose(h);
    assert.is(fds(), n0, 'the dup is closed');
    await w;
  } finally {
    await engine.close();
    sp.close();
  }
});

for (const [name, body, end] of [
  ['ends by itself, its engine idle and never closed', "await f.write(Buffer.alloc(4096, 1), 0); parentPort.postMessage('ready');", 'exit'],
  ['ends by itself (and only it loaded the addon)', "await f.write(Buffer.alloc(4096, 1), 0); parentPort.postMessage('ready');", 'exit-alone'],
  ['is terminated while a helper job (an emulated 300 ms fallocate) is in flight', "f.writeZeroes(0, 1 << 20).catch(() => {}); setTimeout(() => parentPort.postMessage('ready'), 50); await new Promise(() => {});", 'terminate'],
  ['is terminated with I/O in the kernel', "for (let i = 0; i < 64; i++) f.write(Buffer.alloc(65536, 2), i * 65536).catch(() => {}); parentPort.postMessage('ready'); await new Promise(() => {});", 'terminate'],
]) {
  test(`a Worker whose inline engine is still open ${name}: the process survives and exits cleanly`, () => {
    // In a child process: a crash at thread teardown (a close callback or a helper's
    // after-callback running in an unloaded addon) would kill it with a signal.
    const tag = `${end}-${body.length}`;
    const workerFile = join(scratch.dir, `teardown-worker-${tag}.mjs`), mainFile = join(scratch.dir, `teardown-main-${tag}.mjs`);
    writeFileSync(workerFile, `import { parentPort } from 'node:worker_threads';
      import { Engine } from ${JSON.stringify(dist)};
      const engine = await Engine.start({ emulateXfsFallocateBug: { windowUs: 300000 }, xfsWorkaround: 'never' });
      const f = await engine.open(${JSON.stringify(join(scratch.dir, `teardown-${tag}`))}, { create: true, truncate: true });
      ${body}\n`);
    writeFileSync(mainFile, `import { Worker } from 'node:worker_threads';
      import { loadAddon } from ${JSON.stringify(new URL('../dist/src/addon.js', import.meta.url).href)};
      ${end === 'exit-alone' ? '' : 'loadAddon(); // the main thread has the addon loaded too'}
      const w = new Worker(${JSON.stringify(workerFile)});
      w.on('error', (e) => { console.error('worker error', e); process.exitCode = 3; });
      // Listen for 'exit' before the message arrives: a worker that posts and ends at once can
      // have both delivered in one turn of this thread's loop, and a listener added after an
      // await would miss 'exit' (the process then ends with code 13, an unsettled await).
      const exited = new Promise((r) => w.once('exit', r));
      await new Promise((r) => w.once('message', r));
      ${end.startsWith('exit') ? 'await exited;' : 'await w.terminate();'}
      console.log('main survived');\n`);
    const r = spawnSync(process.execPath, [mainFile], { encoding: 'utf8', timeout: 30000 });
    assert.is(r.signal, null, `killed by ${r.signal}: ${r.stderr.slice(-500)}`);
    assert.is(r.status, 0, r.stderr.slice(-500));
    assert.match(r.stdout, /main survived/);
  });
}

test('Worker threads terminated at any point of their I/O (writes, opens, closes of shared files) never abort the process', () => {
  // A call into the addon that fails because its thread is being terminated used to throw a
  // C++ exception nothing could catch ("terminate called after throwing an instance of
  // 'Napi::Error'"): about one run in two of this loop aborted on Node 22 before the addon was
  // built with NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS.
  const r = spawnSync(process.execPath, [new URL('./helpers/child-terminate.mjs', import.meta.url).pathname, scratch.dir, '80'],
    { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, `exit ${r.status} ${r.signal ?? ''}: ${r.stderr.slice(-600)}`);
  assert.match(r.stdout, /survived 80/);
});

test('info() is the same on every call: syncOps does not grow (it gained an entry per call)', async () => {
  const engine = await Engine.start();
  try {
    const a = engine.info().workers[0].info.syncOps;
    const b = engine.info().workers[0].info.syncOps;
    assert.equal(b, a);
    assert.is(new Set(b).size, b.length, `syncOps has duplicates: ${b}`);
  } finally { await engine.close(); }
});

// The quiet eventfd, opt-in with RINGFENCE_QUIET_EVENTFD=1 (io_uring inline, x86-64, Linux >=
// 6.8): the registered eventfd is switched off during the context's own enters
// (native/uring_backend.cc, eventfd_back_on), so the CQEs they post do not wake the loop a
// second time. The variable is read when a context is created. Elsewhere the context does not
// do this, and these tests skip.
async function startQuiet(options) {
  const before = process.env.RINGFENCE_QUIET_EVENTFD;
  process.env.RINGFENCE_QUIET_EVENTFD = '1';
  try { return await Engine.start(options); } finally {
    if (before === undefined) delete process.env.RINGFENCE_QUIET_EVENTFD; else process.env.RINGFENCE_QUIET_EVENTFD = before;
  }
}
const QUIET = await (async () => {
  if (!BACKENDS.includes('io_uring')) return false;
  const e = await startQuiet({ backend: 'io_uring' });
  try { return e.info().workers[0].info.quietEventfd === true; } finally { await e.close(); }
})();
const quietTest = QUIET ? test : test.skip;
if (!QUIET) console.log('  (quiet eventfd tests skipped: needs io_uring inline on x86-64 with Linux >= 6.8)');

quietTest('quiet eventfd: off unless RINGFENCE_QUIET_EVENTFD=1 (at QD1 on a fast device it costs a sleep per request)', async () => {
  const before = process.env.RINGFENCE_QUIET_EVENTFD;
  delete process.env.RINGFENCE_QUIET_EVENTFD;
  let engine;
  try { engine = await Engine.start({ backend: 'io_uring' }); } finally { if (before !== undefined) process.env.RINGFENCE_QUIET_EVENTFD = before; }
  try {
    assert.is(engine.info().workers[0].info.quietEventfd, undefined);
    assert.not.ok(engine.info().workers[0].info.setupFlags.includes('TASKRUN_FLAG'), 'TASKRUN_FLAG is only for the quiet eventfd');
  } finally { await engine.close(); }
});

quietTest('io_uring inline, quiet eventfd: under 1.5 loop wake-ups per sequential read (without it about 2 on a slow device such as virtio, 1.1 on a fast one)', async () => {
  const path = join(scratch.dir, 'wakes');
  writeFileSync(path, pattern(1 << 20, 5));
  const engine = await startQuiet({ backend: 'io_uring' });
  try {
    const f = await engine.open(path, { direct: true });
    const buf = engine.alloc(4096);
    const ctx = () => engine.info().workers[0].info;
    const w0 = ctx().loopWakes;
    const N = 500;
    for (let i = 0; i < N; i++) assert.is(await f.read(buf, ((i * 7) % 256) * 4096), 4096);
    const perRequest = (ctx().loopWakes - w0) / N;
    // Before: 2 (the completion, then the CQE that our reap posted signalled the eventfd again).
    assert.ok(perRequest < 1.5, `loop wake-ups per sequential read: ${perRequest.toFixed(2)}`);
    await f.close();
  } finally { await engine.close(); }
});

quietTest('quiet eventfd: completions queued while the eventfd is off are never lost (no backstop to hide a lost wake-up)', () => {
  const path = join(scratch.dir, 'quiet');
  writeFileSync(path, pattern(16 << 20, 9));
  // 32 read loops and 8 write loops for 1.5 s: completions keep arriving while the context is in
  // its own enter, which is the window where the eventfd is off. With the backstop disabled, a
  // completion whose wake-up was lost would leave its loop waiting for good: the child hangs.
  const src = `
    import { Engine } from ${JSON.stringify(dist)};
    const engine = await Engine.start({ backend: 'io_uring' });
    const f = await engine.open(${JSON.stringify(path)}, { direct: true });
    let ops = 0, s = 12345;
    const rnd = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
    const until = performance.now() + 1500;
    const loop = async (write) => {
      const b = engine.alloc(4096);
      while (performance.now() < until) {
        const off = (write ? 2048 + rnd() % 2048 : rnd() % 2048) * 4096;
        if (write) await f.write(b, off); else await f.read(b, off);
        ops++;
      }
    };
    await Promise.all([...Array.from({ length: 32 }, () => loop(false)), ...Array.from({ length: 8 }, () => loop(true))]);
    const i = engine.info().workers[0].info;
    console.log(JSON.stringify({ ops, rechecks: i.quietRechecks, selfSignals: i.quietSelfSignals, wakes: i.loopWakes }));
    await f.close();
    await engine.close();
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], {
    encoding: 'utf8', timeout: 30000, env: { ...process.env, RINGFENCE_TEST_NO_BACKSTOP: '1', RINGFENCE_QUIET_EVENTFD: '1' },
  });
  assert.ok(r.error === undefined && r.signal === null, `the child hung (a completion lost while the eventfd was off?): ${r.error ?? r.signal}; ${r.stderr}`);
  assert.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  assert.ok(out.ops > 1000, `ops ${out.ops}`);
  // The window was hit: completions were queued while the eventfd was off, found and run.
  assert.ok(out.rechecks > 0, `rechecks ${out.rechecks} (the race this covers never happened)`);
});

test.run();
