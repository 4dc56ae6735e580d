// Lifetimes: pool memory, close(), file ids, batches, pool waiters. Each test reproduces a bug
// a review found (data written into the wrong file, pool memory reused under a live view or an
// in-flight request, half-run batches, a broken pool queue) and fails on the code before the fix.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync, writeFileSync, readdirSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { scratchDir, pattern, availableBackends, engineOptions } from './helpers/env.mjs';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
const BACKENDS = availableBackends(loadAddon().probe());
const scratch = scratchDir('rf-life-');
test.after(() => scratch.cleanup());
const here = (p) => fileURLToPath(new URL(p, import.meta.url));

/** Several full GCs with turns of the event loop between them, so FinalizationRegistry callbacks run. */
async function collect() {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Catches a rejection now (so it is never unhandled) for a later rejects(). */
const later = (p) => { p.catch(() => {}); return p; };

async function rejects(p, code) {
  try { await p; } catch (e) { assert.is(e.code, code, e.message); return e; }
  assert.unreachable(`expected a rejection with ${code}`);
}

function readAt(path, off, len) {
  const fd = openSync(path, 'r');
  try { const b = Buffer.alloc(len); const n = readSync(fd, b, 0, len, off); return b.subarray(0, n); } finally { closeSync(fd); }
}

// ---- close() counts every request from the call on (item 1)

for (const backend of BACKENDS) {
  test(`${backend}: a write waiting for pool memory when its file closes is rejected, never lands in the next file`, async () => {
    const engine = await Engine.start(engineOptions({ backend, workers: 1, bufferPoolBytes: 1 << 20 }));
    const a = join(scratch.dir, `wait-a-${backend}`), b = join(scratch.dir, `wait-b-${backend}`);
    try {
      const A = await engine.open(a, { create: true, truncate: true });
      const hold = engine.alloc(1 << 20); // the whole pool: a bounced write must wait
      // An odd address: never aligned for O_DIRECT, so it is bounced (inline mode would send an
      // aligned Buffer to the kernel directly, with no pool memory to wait for).
      const w = later(A.write(Buffer.alloc(4097, 0x5a).subarray(1), 0));
      await A.close();
      const B = await engine.open(b, { create: true, truncate: true });
      engine.free(hold);
      const e = await rejects(w, 'ERR_RINGFENCE_CLOSED');
      assert.match(e.message, /never started/);
      await engine.idle();
      assert.is(statSync(a).size, 0, 'nothing was written to A');
      assert.is(statSync(b).size, 0, 'and nothing to B, which reused the file id');
      await B.close();
    } finally { await engine.close(); }
  });
}

test('close() while requests are in flight waits for them; a second close() waits too', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  try {
    const f = await engine.open(join(scratch.dir, 'close-wait'), { create: true, truncate: true });
    const buf = engine.alloc(4096).fill(3);
    const writes = Array.from({ length: 32 }, (_, i) => f.write(buf, i * 4096));
    let first = false;
    const c1 = f.close().then(() => { first = true; });
    await f.close();
    assert.ok(first, 'the second close() resolved only after the first finished');
    await c1;
    for (const n of await Promise.all(writes)) assert.is(n, 4096);
  } finally { await engine.close(); }
});

test('engine.close() rejects requests still waiting for pool memory the caller holds, instead of hanging', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, bufferPoolBytes: 1 << 20 }));
  const f = await engine.open(join(scratch.dir, 'engine-close-wait'), { create: true, truncate: true });
  engine.alloc(1 << 20);
  // An odd address: never aligned for O_DIRECT, so it must be copied through the (full) pool
  // (in inline mode an aligned Buffer would go to the kernel directly and need no pool memory).
  const w = later(f.write(Buffer.alloc(4097, 1).subarray(1), 0));
  await engine.close();
  await rejects(w, 'ERR_RINGFENCE_CLOSED');
});

// ---- pool memory stays reserved while any view or request uses it (items 2 and 5)

test('a subarray of a pooled buffer keeps its memory reserved after the original view is collected', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, bufferPoolBytes: 1 << 20 }));
  try {
    let sub = engine.alloc(8192).subarray(0, 4096);
    sub.fill(0x11);
    let other = Buffer.from(engine.alloc(8192).buffer, 100, 50); // any view of the memory
    other.fill(0x22);
    await collect();
    const fresh = [];
    for (let i = 0; i < 64; i++) { try { fresh.push(engine.alloc(8192).fill(0xee)); } catch { break; } }
    assert.ok(sub.every((x) => x === 0x11), 'the subarray was not handed out again');
    assert.ok(other.every((x) => x === 0x22), 'Buffer.from(buf.buffer, ...) was not handed out again');
    // Once every view is gone, the memory does come back.
    const usedBefore = engine.stats().pool.used;
    sub = null; other = null; fresh.length = 0;
    await collect();
    assert.ok(engine.stats().pool.used < usedBefore, 'collected views return their blocks');
  } finally { await engine.close(); }
});

for (const backend of BACKENDS) {
  test(`${backend}: writes from pooled buffers nobody keeps land intact while the GC runs during flight`, async () => {
    // Room for every buffer even if the GC returns none: the test is about memory reuse, not exhaustion.
    const engine = await Engine.start(engineOptions({ backend, workers: 1, bufferPoolBytes: 16 << 20 }));
    const path = join(scratch.dir, `gc-${backend}`);
    try {
      const f = await engine.open(path, { create: true, truncate: true });
      const N = 2000, pending = [];
      for (let i = 0; i < N; i++) {
        pending.push(f.write(engine.alloc(4096).fill(i & 0xff), i * 4096));
        if (i % 64 === 63) {
          gc();
          // Memory handed out now must not be memory a write in flight still reads.
          for (let k = 0; k < 8; k++) { try { engine.alloc(4096).fill(0xa5); } catch { break; } }
          await new Promise((r) => setImmediate(r));
        }
      }
      for (const n of await Promise.all(pending)) assert.is(n, 4096);
      const data = readFileSync(path);
      let bad = 0;
      for (let i = 0; i < N; i++) if (!data.subarray(i * 4096, (i + 1) * 4096).every((x) => x === (i & 0xff))) bad++;
      assert.is(bad, 0, `${bad} of ${N} blocks on disk hold other bytes`);
      await f.close();
    } finally { await engine.close(); }
  });

  test(`${backend}: free() of a buffer still in flight keeps its memory until the request settles`, async () => {
    const engine = await Engine.start(engineOptions({ backend, workers: 1, bufferPoolBytes: 1 << 20 }));
    const path = join(scratch.dir, `free-inflight-${backend}`);
    try {
      const f = await engine.open(path, { create: true, truncate: true });
      const pending = [];
      for (let i = 0; i < 24; i++) {
        const b = engine.alloc(4096).fill(i + 1);
        pending.push(f.write(b, i * 4096));
        engine.free(b);
        assert.is(b.byteLength, 0, 'a freed buffer is detached at once');
        engine.alloc(4096).fill(0xff); // would take the freed block if free() released it now
      }
      await Promise.all(pending);
      const data = readFileSync(path);
      for (let i = 0; i < 24; i++) assert.ok(data.subarray(i * 4096, (i + 1) * 4096).every((x) => x === i + 1), `block ${i}`);
      await f.close();
    } finally { await engine.close(); }
  });
}

test('free() refuses a stale buffer, a second free and a partial view, and never frees another buffer\'s block', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, bufferPoolBytes: 1 << 20 }));
  try {
    const a = engine.alloc(4096);
    engine.free(a);
    const b = engine.alloc(4096).fill(7);
    assert.throws(() => engine.free(a), (e) => e.code === 'ERR_INVALID_ARG_VALUE' && /freed already/.test(e.message));
    const c = engine.alloc(4096).fill(9);
    assert.ok(b.every((x) => x === 7), 'b still owns its memory');
    assert.throws(() => engine.free(c.subarray(0, 10)), (e) => e.code === 'ERR_INVALID_ARG_VALUE' && /not a view of part/.test(e.message));
    assert.throws(() => engine.free(Buffer.alloc(4096)), (e) => e.code === 'ERR_INVALID_ARG_VALUE');
    const used = engine.stats().pool.used;
    engine.free(b); engine.free(c);
    assert.is(engine.stats().pool.used, used - 8192);
    const f = await engine.open(join(scratch.dir, 'freed-use'), { create: true, truncate: true });
    await rejects(f.write(b, 0), 'ERR_RINGFENCE_BUFFER_FREED');
    await f.close();
  } finally { await engine.close(); }
});

// ---- a rejected batch runs nothing (item 4)

test('submit(): a batch with an op that cannot fit the pool, or cannot be padded, runs none of its ops', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, bufferPoolBytes: 1 << 20 }));
  const untracked = await Engine.start(engineOptions({ workers: 1, trackRequests: false }));
  try {
    const p1 = join(scratch.dir, 'batch-fit');
    const f = await engine.open(p1, { create: true, truncate: true });
    const ok = engine.alloc(4096).fill(1);
    // (Misaligned by one byte, so that it needs a bounce block in either mode: inline mode writes
    // an aligned Buffer directly, and whether Buffer.alloc's memory is aligned depends on Node.)
    const big = Buffer.alloc((2 << 20) + 1).subarray(1);
    const e = await rejects(f.submit([{ op: 'write', buffer: ok, offset: 0 }, { op: 'write', buffer: big, offset: 4096 }]), 'ERR_RINGFENCE_TOO_LARGE');
    assert.match(e.message, /split the request|larger bufferPoolBytes/);
    await rejects(f.submit([{ op: 'write', buffer: ok, offset: 0 }, { op: 'read', buffer: Buffer.alloc(100), offset: 2 ** 53 - 50 }]), 'ERR_RINGFENCE_UNALIGNED');
    await engine.idle();
    assert.is(statSync(p1).size, 0, 'op 0 did not run');
    const p2 = join(scratch.dir, 'batch-untracked');
    const g = await untracked.open(p2, { create: true, truncate: true });
    await rejects(g.submit([{ op: 'write', buffer: Buffer.alloc(4096, 1), offset: 0 }, { op: 'write', buffer: Buffer.alloc(100), offset: 8192 }, { op: 'write', buffer: Buffer.alloc(4096, 2), offset: 16384 }]), 'ERR_RINGFENCE_UNALIGNED');
    await untracked.idle();
    assert.is(statSync(p2).size, 0, 'no op of the batch ran');
    // A failure while running attaches every outcome.
    const r = await f.submit([{ op: 'write', buffer: ok, offset: 0 }, { op: 'flush' }]);
    assert.equal(r, [4096, 0]);
    await f.close(); await g.close();
  } finally { await engine.close(); await untracked.close(); }
});

test('submit(): an op whose buffer is detached while it waits for pool memory fails alone, with every result attached', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, bufferPoolBytes: 1 << 20 }));
  try {
    const f = await engine.open(join(scratch.dir, 'batch-detach'), { create: true, truncate: true });
    const hold = engine.alloc(1 << 20);
    const victim = new Uint8Array(new ArrayBuffer(4096)).fill(4);
    const p = f.submit([{ op: 'write', buffer: victim, offset: 0 }, { op: 'write', buffer: Buffer.alloc(4096, 5), offset: 4096 }]);
    structuredClone(victim.buffer, { transfer: [victim.buffer] }); // detach it
    engine.free(hold);
    const e = await rejects(p, 'ERR_RINGFENCE_BUFFER_DETACHED');
    assert.ok(Array.isArray(e.results), 'results attached');
    assert.is(e.results[1], 4096);
    await engine.idle();
    assert.is(engine.stats().pool.used, 0, 'no pool block leaked');
    await f.close();
  } finally { await engine.close(); }
});

// ---- the pool's waiting queue (items 11, 12)

test('a waiter that fails (detached buffer) neither leaks its block nor blocks the queue nor blames another request', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, bufferPoolBytes: 1 << 20 }));
  try {
    const f = await engine.open(join(scratch.dir, 'waiters'), { create: true, truncate: true });
    const hold = engine.alloc(1 << 20);
    const victim = new Uint8Array(new ArrayBuffer(4096)).fill(1);
    const bad = f.write(victim, 0);
    const good = Array.from({ length: 8 }, (_, i) => f.write(Buffer.alloc(4096, i + 2), (i + 1) * 4096));
    structuredClone(victim.buffer, { transfer: [victim.buffer] });
    let uncaught = null;
    const onErr = (e) => { uncaught = e; };
    process.on('uncaughtException', onErr);
    engine.free(hold);
    await rejects(bad, 'ERR_RINGFENCE_BUFFER_DETACHED');
    for (const n of await Promise.all(good)) assert.is(n, 4096);
    process.off('uncaughtException', onErr);
    assert.is(uncaught, null);
    await engine.idle();
    assert.is(engine.stats().pool.used, 0, 'every bounce block returned');
    await f.close();
  } finally { await engine.close(); }
});

test('many ordinary-buffer writes queued behind a small pool all complete with the right data', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, bufferPoolBytes: 256 << 10, queueDepth: 32 }));
  const path = join(scratch.dir, 'queued-bounce');
  try {
    const f = await engine.open(path, { create: true, truncate: true });
    const N = 20_000;
    const all = [];
    for (let i = 0; i < N; i++) { const b = Buffer.alloc(4096); b.writeUInt32LE(i + 1, 0); b.writeUInt32LE(i + 1, 4092); all.push(f.write(b, i * 4096)); }
    assert.ok(engine.stats().pool.used === 256 << 10, 'the pool is exhausted: the rest wait in its queue');
    const res = await Promise.all(all);
    assert.ok(res.every((n) => n === 4096));
    const data = readFileSync(path);
    let bad = 0;
    for (let i = 0; i < N; i++) if (data.readUInt32LE(i * 4096) !== i + 1 || data.readUInt32LE(i * 4096 + 4092) !== i + 1) bad++;
    assert.is(bad, 0, `${bad} blocks wrong`);
    assert.is(engine.stats().pool.used, 0);
    await f.close();
  } finally { await engine.close(); }
});

// ---- opening and closing files concurrently (items 9, 13)

for (const backend of BACKENDS) {
  test(`${backend}: parallel open() and close() calls never end the process silently`, () => {
    for (let run = 0; run < 6; run++) {
      const r = spawnSync(process.execPath, [here('./helpers/child-parallel-open.mjs'), scratch.dir, backend], { encoding: 'utf8', timeout: 30000 });
      assert.is(r.status, 0, `run ${run}: exit ${r.status} ${r.signal ?? ''} ${r.stderr}`);
      assert.match(r.stdout, /all done/, `run ${run}: printed ${JSON.stringify(r.stdout)}`);
    }
  });
}

test('open() racing engine.close() rejects and leaks no file descriptor', async () => {
  const before = readdirSync('/proc/self/fd').length;
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  const p = engine.open(join(scratch.dir, 'race-open'), { create: true, truncate: true });
  const c = engine.close();
  await rejects(p, 'ERR_RINGFENCE_CLOSED');
  await c;
  await rejects(engine.open(join(scratch.dir, 'race-open2'), { create: true }), 'ERR_RINGFENCE_CLOSED');
  await new Promise((r) => setTimeout(r, 50));
  assert.is(readdirSync('/proc/self/fd').length, before, 'every fd the engine opened is closed');
});

// ---- what can be opened (items 7, 10)

test('one engine refuses to mix O_DIRECT and buffered handles on one file', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  try {
    const p = join(scratch.dir, 'mixed');
    const d = await engine.open(p, { create: true, truncate: true });
    await rejects(engine.open(p, { direct: false }), 'ERR_RINGFENCE_MIXED_IO_MODES');
    await d.close();
    const b = await engine.open(p, { direct: false }); // fine once the other handle is closed
    await rejects(engine.open(p), 'ERR_RINGFENCE_MIXED_IO_MODES');
    await b.close();
  } finally { await engine.close(); }
});

test('FIFOs, sockets and character devices are refused at open() with a clear error', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  try {
    const fifo = join(scratch.dir, 'fifo');
    spawnSync('mkfifo', [fifo]);
    for (const opts of [{}, { direct: false }, { readOnly: true, direct: false }]) {
      const e = await rejects(engine.open(fifo, opts), 'ERR_RINGFENCE_UNSUPPORTED_FILE');
      assert.match(e.message, /FIFO/);
    }
    const e = await rejects(engine.open('/dev/null', { direct: false }), 'ERR_RINGFENCE_UNSUPPORTED_FILE');
    assert.match(e.message, /character device/);
  } finally { await engine.close(); }
});

test('close({ deadlineMs }) settles requests that never complete, and returns', async () => {
  // The injected 'hang' fault blocks the worker after its first request: nothing completes.
  const engine = await Engine.start(engineOptions({ workers: 1, faults: '0:hang:1', watchdogMs: 0 }));
  const f = await engine.open(join(scratch.dir, 'deadline'), { create: true, truncate: true });
  const w = [later(f.write(Buffer.alloc(4096, 1), 0)), later(f.write(Buffer.alloc(4096, 2), 4096))];
  await new Promise((r) => setTimeout(r, 100));
  const t0 = performance.now();
  await engine.close({ deadlineMs: 300 });
  const took = performance.now() - t0;
  for (const p of w) await rejects(p, 'ERR_RINGFENCE_CLOSE_TIMEOUT');
  assert.ok(took < 10000, `close() returned (after ${Math.round(took)} ms)`);
  await rejects(engine.close({ deadlineMs: -1 }), 'ERR_OUT_OF_RANGE');
  await rejects(engine.close({ deadline: 5 }), 'ERR_INVALID_ARG_VALUE');
});

test('close({ deadlineMs: 0 }) with nothing in flight closes cleanly: it does not give up, and every fd the engine opened is closed', async () => {
  // The bug: with no time left, the wait for opens in progress ended before the promise of
  // those opens (none, here) could report, so close() gave up on an idle engine: it pinned the
  // files' descriptors and left the kernel I/O context open, for good.
  for (const opts of [{}, { workers: 1 }]) {
    const before = readdirSync('/proc/self/fd').length;
    const engine = await Engine.start(engineOptions(opts));
    // (The mode the engine really runs in: RINGFENCE_TEST_MODE=inline makes both passes inline.)
    const what = `${engine.info().mode} mode, options ${JSON.stringify(opts)}`;
    const f = await engine.open(join(scratch.dir, 'deadline0'), { create: true, truncate: true });
    assert.is(await f.write(Buffer.alloc(4096, 3), 0), 4096);
    await engine.close({ deadlineMs: 0 });
    assert.is(engine.fdsPinned, false, `${what}: close() did not give up`);
    await new Promise((r) => setTimeout(r, 50));
    assert.is(readdirSync('/proc/self/fd').length, before, `${what}: every fd the engine opened is closed`);
  }
});

test('close() then close({ deadlineMs }): the later deadline applies; an open stuck behind a hung worker does not hold close() forever', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, faults: '0:hang:1', watchdogMs: 0 }));
  const f = await engine.open(join(scratch.dir, 'deadline2'), { create: true, truncate: true });
  const w = later(f.write(Buffer.alloc(4096, 1), 0));
  await new Promise((r) => setTimeout(r, 100));
  const stuckOpen = later(engine.open(join(scratch.dir, 'deadline2-b'), { create: true }));
  await new Promise((r) => setTimeout(r, 50));
  const c1 = engine.close();
  const t0 = performance.now();
  await engine.close({ deadlineMs: 200 });
  await c1;
  assert.ok(performance.now() - t0 < 10000, 'close() returned');
  await rejects(w, 'ERR_RINGFENCE_CLOSE_TIMEOUT');
  await stuckOpen.then(() => assert.unreachable('the open must not succeed on a closed engine'), (e) => assert.ok(e instanceof Error));
});

test('submit(): ops are issued from what was validated, not read again (a getter cannot swap the buffer)', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1, bufferPoolBytes: 1 << 20 }));
  const path = join(scratch.dir, 'batch-getter');
  try {
    const f = await engine.open(path, { create: true, truncate: true });
    const good = Buffer.alloc(4096, 0x01);
    let reads = 0;
    const op = { op: 'write', offset: 0, get buffer() { return reads++ === 0 ? good : { byteLength: 4096 }; } };
    const r = await f.submit([op]);
    assert.equal(r, [4096]);
    assert.is(reads, 1, 'the buffer property was read once');
    assert.ok(readFileSync(path).equals(good), 'the validated bytes were written');
    let kinds = 0;
    const flip = { get op() { return kinds++ === 0 ? 'flush' : 'nope'; } };
    assert.equal(await f.submit([flip]), [0], 'a batch always settles');
    await f.close();
  } finally { await engine.close(); }
});

test('engine.submitRaw() counts against its file: close() waits for it', async () => {
  const engine = await Engine.start(engineOptions({ workers: 1 }));
  try {
    const f = await engine.open(join(scratch.dir, 'raw-refs'), { create: true, truncate: true });
    const nop = [8, f.id, 0, 0, 0, 0, 0, 0];
    assert.is(await engine.submitRaw(f, nop), 0);
    let settled = false;
    const w = f.write(Buffer.alloc(1 << 20, 3), 0).then((n) => { settled = true; return n; });
    await f.close();
    assert.ok(settled, 'close() waited for the write');
    assert.is(await w, 1 << 20);
  } finally { await engine.close(); }
});

test.run();
