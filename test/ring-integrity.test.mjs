// Ring memory is shared, so it is untrusted: a corrupted ring index, scribbled entry words or a
// stale entry for pool memory that has since been freed and reallocated must never make the
// kernel write wrong data, read into memory that belongs to someone else, or report success
// for data that did not land. Each test corrupts the rings of a running engine through its
// private fields (as a stray write in the process would), then checks the file with node:fs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { E_BUF, E_TAG } from '../dist/src/protocol.js';
import {
  CQ_ENTRY, CQ_RES, W_BUSY, RING_HDR_WORDS, RING_HEAD, RING_TAIL, SQ_ENTRY, SQ_SEQ, SQ_SUM, WAKE_TABLE, entrySum, wakeWorker,
} from '../dist/src/shm.js';
import { AtomicWords, TrackedTable } from '../dist/src/table.js';
import { scratchDir, pattern, rng, availableBackends } from './helpers/env.mjs';

const BACKENDS = availableBackends(loadAddon().probe());
const scratch = scratchDir('rf-ring-');
test.after(() => scratch.cleanup());
const BS = 4096;

/** The engine's internal slot of worker 0 (its rings), and a way to wake that worker. */
function slot0(engine) {
  const s = engine['lane']['workers'][0];
  return { s, wake: () => wakeWorker(engine['lane']['ctrl'], 0, WAKE_TABLE, engine.addon.ring, s.doorbell) };
}

/** Resolves when the engine has handled `n` worker losses (bounded: a hang fails the test). */
async function losses(engine, n) {
  for (let i = 0; i < 5000 && engine.stats().workerLosses < n; i++) await new Promise((r) => setTimeout(r, 1));
  return engine.stats().workerLosses;
}

/** A hang guard (not a timing assertion): a request that never settles fails the test. */
async function settled(promises, what) {
  let t;
  const hang = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: some requests never settled in 20 s`)), 20000); });
  try { return await Promise.race([Promise.all(promises), hang]); } finally { clearTimeout(t); }
}

/** close(), bounded: an engine that cannot finish its requests fails the test instead of hanging it. */
async function closed(engine) {
  let t;
  const ok = await Promise.race([engine.close().then(() => true), new Promise((r) => { t = setTimeout(() => r(false), 10000); })]);
  clearTimeout(t);
  if (!ok) {
    process.exitCode = 1;
    throw new Error(`engine.close() did not finish in 10 s: ${engine.stats().inFlight} requests never settled`);
  }
}

const outcome = (p) => p.then((v) => ({ ok: true, v }), (e) => ({ ok: false, code: e.code, message: e.message }));

for (const backend of BACKENDS) {
  for (const [name, ahead] of [['3 x capacity', (cap) => 3 * cap], ['half a ring (stale entries)', (cap) => cap / 2]]) {
    test(`${backend}: a submission tail moved ${name} ahead replays nothing; what the worker held fails ERR_RINGFENCE_RING_CORRUPT; the engine goes on`, async () => {
      const engine = await Engine.start({ backend, workers: 1, queueDepth: 32, bufferPoolBytes: 4 << 20 });
      try {
        const path = join(scratch.dir, `replay-${backend}-${ahead(64)}`);
        const f = await engine.open(path, { create: true, truncate: true, direct: true });
        const { s, wake } = slot0(engine);
        const cap = s.sqCap;
        // One full lap of acknowledged writes with distinct data (bounced through the pool).
        const N = cap;
        await Promise.all(Array.from({ length: N }, (_, i) => f.write(pattern(BS, 100 + i), i * BS)));
        // Their pool memory is free now and gets reused: here, by junk.
        engine.pool.bytes.fill(0xee);
        const head = Atomics.load(s.sq, RING_HEAD);
        assert.is(head, N);
        // With 3 x capacity, one more request is written into the ring (the worker holds it
        // once the tail covers it); the flush must not repair the tail, so it is not left dirty.
        const held = ahead(cap) > cap ? outcome(f.write(pattern(BS, 999), N * BS)) : null;
        s.dirty = false;
        Atomics.store(s.sq, RING_TAIL, (head + ahead(cap)) | 0);
        wake();
        const lost = await losses(engine, 1);
        const disk = readFileSync(path);
        let changed = 0;
        for (let i = 0; i < N; i++) if (!disk.subarray(i * BS, (i + 1) * BS).equals(pattern(BS, 100 + i))) changed++;
        assert.is(changed, 0, `${changed} of ${N} acknowledged blocks were overwritten`);
        assert.ok(disk.length <= (N + 1) * BS);
        assert.is(lost, 1, 'the worker stopped on the corrupt ring and was replaced');
        if (held !== null) {
          const r = await held;
          assert.not.ok(r.ok, 'the request in the corrupt ring did not report success');
          assert.is(r.code, 'ERR_RINGFENCE_RING_CORRUPT');
          assert.match(r.message, /submission tail \d+ is \d+ ahead of head \d+/);
          assert.match(r.message, /did not run or its state is unknown/);
          assert.match(r.message, /report/);
        }
        // The replacement works on fresh rings.
        const buf = engine.alloc(BS);
        buf.set(pattern(BS, 7));
        assert.is(await f.write(buf, 0), BS);
        buf.fill(0);
        assert.is(await f.read(buf, 0), BS);
        assert.ok(Buffer.from(buf).equals(pattern(BS, 7)));
        assert.is(engine.stats().inFlight, 0);
        await f.close();
      } finally { await closed(engine); }
    });
  }

  test(`${backend}: random words scribbled into queued ring entries: no wrong data lands, no success is reported for data that did not`, async () => {
    const R = 6, W = 24, RD = 24, blocks = W + RD;
    let failed = 0, detected = 0;
    for (let round = 0; round < R; round++) {
      const engine = await Engine.start({ backend, workers: 1, queueDepth: 32, bufferPoolBytes: 4 << 20 });
      try {
        const path = join(scratch.dir, `scribble-${backend}-${round}`);
        const before = Array.from({ length: blocks }, (_, i) => pattern(BS, 5000 + i));
        writeFileSync(path, Buffer.concat(before));
        const f = await engine.open(path, { direct: true });
        const after = Array.from({ length: W }, (_, i) => pattern(BS, 9000 + i));
        const { s, wake } = slot0(engine);
        const from = s.sqp.tail;
        const writes = after.map((b, i) => outcome(f.write(b, i * BS)));
        const bufs = Array.from({ length: RD }, () => Buffer.alloc(BS));
        const reads = bufs.map((b, i) => outcome(f.read(b, (W + i) * BS)));
        assert.is((s.sqp.tail - from) | 0, W + RD, 'every request went into the ring');
        // Not yet published: scribble some words of the queued entries, then publish.
        s.dirty = false;
        const r = rng(0x5c0 + round * 31 + backend.length);
        for (let k = 0; k < 6; k++) {
          const idx = (from + (r() % (W + RD))) | 0;
          s.sq[RING_HDR_WORDS + (idx & (s.sqCap - 1)) * SQ_ENTRY + (r() % SQ_ENTRY)] = r() | 0;
        }
        Atomics.store(s.sq, RING_TAIL, s.sqp.tail);
        wake();
        const [wr, rd] = await settled([Promise.all(writes), Promise.all(reads)], `round ${round}`);
        if (engine.stats().workerLosses > 0) detected++;
        const disk = readFileSync(path);
        assert.is(disk.length, blocks * BS, 'the file size did not change');
        for (let i = 0; i < W; i++) {
          const got = disk.subarray(i * BS, (i + 1) * BS);
          if (wr[i].ok) {
            assert.is(wr[i].v, BS);
            assert.ok(got.equals(after[i]), `round ${round}: write ${i} reported success but its data is not on disk`);
          } else {
            failed++;
            assert.ok(got.equals(after[i]) || got.equals(before[i]), `round ${round}: block ${i} holds data nobody wrote`);
          }
        }
        for (let i = 0; i < RD; i++) {
          const got = disk.subarray((W + i) * BS, (W + i + 1) * BS);
          assert.ok(got.equals(before[W + i]), `round ${round}: block ${W + i} (only read) changed`);
          if (rd[i].ok) {
            assert.is(rd[i].v, BS);
            assert.ok(bufs[i].equals(before[W + i]), `round ${round}: read ${i} reported success with wrong data`);
          } else failed++;
        }
        // Whatever happened, the engine still works.
        assert.is(await f.write(after[0], 0), BS);
        await f.close();
      } finally { await closed(engine); }
    }
    console.log(`  ${backend}: ${detected}/${R} rounds found the ring corrupt, ${failed} requests failed`);
    assert.ok(detected > 0, 'the scribbles were noticed');
  });

  for (const [name, ahead, found] of [
    ['half a ring', (cap) => cap / 2, /completion entry at index \d+ carries index \d+/],
    ['3 x capacity', (cap) => 3 * cap, /completion tail \d+ is \d+ ahead of head \d+/],
  ]) test(`${backend}: a completion tail moved ${name} ahead settles nothing; the requests held fail ERR_RINGFENCE_RING_CORRUPT`, async () => {
    const engine = await Engine.start({ backend, workers: 1, queueDepth: 8, bufferPoolBytes: 4 << 20 });
    try {
      const path = join(scratch.dir, `cq-stale-${backend}-${ahead(2)}`);
      writeFileSync(path, pattern(8 * BS, 11));
      const f = await engine.open(path, { direct: true });
      const { s } = slot0(engine);
      // One lap of the completion ring, one request at a time (so every entry names one id).
      for (let i = 0; i <= s.cqCap; i++) assert.is(await f.read(Buffer.alloc(BS), 0), BS);
      // Requests the worker holds and cannot finish: parked behind an older serialising
      // entry that this test puts in the file's table (as a worker 30 that does not exist).
      // The file's process-wide table (native/registry.h), seen from this thread.
      const [ident] = engine.identities.values();
      const ts = engine.addon.tableStats(ident.dev, ident.ino);
      const table = new TrackedTable(new AtomicWords(new Int32Array(engine.addon.tableView(ts.id))), ts.capacity);
      const blocker = table.register(30, 3 /* ZERO */, true, 0, 0, 0x7fffffff, -4096);
      assert.ok(blocker >= 0);
      try {
        const bufs = Array.from({ length: 4 }, () => Buffer.alloc(BS));
        const done = [];
        const held = bufs.map((b, i) => outcome(f.read(b, i * BS)).then((r) => (done[i] = r)));
        const busy = () => Atomics.load(engine['lane']['ctrl'], W_BUSY); // worker 0's word
        for (let i = 0; i < 5000 && busy() < 4; i++) await new Promise((r) => setTimeout(r, 1));
        assert.is(busy(), 4, 'the worker holds the four reads');
        // The completion tail moves half a ring ahead: the entries it now covers are old ones.
        const head = Atomics.load(s.cq, RING_HEAD);
        Atomics.store(s.cq, RING_TAIL, (head + ahead(s.cqCap)) | 0);
        // Either the engine notices (and fails them all), or some read is settled from an old entry.
        await Promise.race([losses(engine, 1), Promise.race(held)]);
        const check = (r, i) => {
          assert.not.ok(r.ok && r.v === BS && !bufs[i].equals(pattern(8 * BS, 11).subarray(i * BS, (i + 1) * BS)), `read ${i} reported success with data it never read`);
          assert.not.ok(r.ok, `read ${i} was settled from a stale completion`);
          assert.is(r.code, 'ERR_RINGFENCE_RING_CORRUPT');
          assert.match(r.message, found);
        };
        done.forEach(check);
        (await settled(held, 'held reads')).forEach(check);
        assert.is(await losses(engine, 1), 1);
      } finally {
        // Release the blocker and ring every participant (as a releasing context would).
        table.release(blocker);
        table.markRang(0x7fffffff);
        engine.addon.tableRing(ts.id, 0x7fffffff);
      }
      // The replacement works.
      const b = Buffer.alloc(BS);
      assert.is(await f.read(b, 2 * BS), BS);
      assert.ok(b.equals(pattern(8 * BS, 11).subarray(2 * BS, 3 * BS)));
      await f.close();
    } finally { await closed(engine); }
  });

  test(`${backend}: a scribbled word in a posted completion is caught: no request is settled with it`, async () => {
    const engine = await Engine.start({ backend, workers: 1, queueDepth: 8, bufferPoolBytes: 4 << 20 });
    try {
      const path = join(scratch.dir, `cq-scribble-${backend}`);
      writeFileSync(path, pattern(8 * BS, 12));
      const f = await engine.open(path, { direct: true });
      const { s } = slot0(engine);
      const head = Atomics.load(s.cq, RING_HEAD);
      const r = outcome(f.read(Buffer.alloc(BS), 0));
      // Wait, without yielding to the event loop (so the engine cannot drain it first), for
      // the worker to post the completion; then change its result word.
      const nap = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; Atomics.load(s.cq, RING_TAIL) === head; i++) {
        if (i === 0) await null; // let the submission be published
        assert.ok(i < 20000, 'the completion was posted');
        Atomics.wait(nap, 0, 0, 1);
      }
      s.cq[RING_HDR_WORDS + (head & (s.cqCap - 1)) * CQ_ENTRY + CQ_RES] = 777;
      const res = (await settled([r], 'the read'))[0];
      assert.not.ok(res.ok && res.v === 777, 'the read was settled with the scribbled result');
      assert.not.ok(res.ok, 'the read was not settled from a corrupt completion');
      assert.is(res.code, 'ERR_RINGFENCE_RING_CORRUPT');
      assert.match(res.message, /fails its check value/);
      assert.is(await losses(engine, 1), 1);
      assert.is(await f.read(Buffer.alloc(BS), 0), BS);
      await f.close();
    } finally { await closed(engine); }
  });

  test(`${backend}: a corrupt submission head is noticed by the main thread before it writes into the ring`, async () => {
    const engine = await Engine.start({ backend, workers: 1, queueDepth: 32, bufferPoolBytes: 4 << 20 });
    try {
      const path = join(scratch.dir, `sq-head-${backend}`);
      const f = await engine.open(path, { create: true, truncate: true, direct: true });
      const { s } = slot0(engine);
      const N = s.sqCap;
      await Promise.all(Array.from({ length: N }, (_, i) => f.write(pattern(BS, 300 + i), i * BS)));
      engine.pool.bytes.fill(0xee);
      // The head word (the worker's, idle now) says the worker is two rings ahead of us.
      Atomics.store(s.sq, RING_HEAD, (s.sqp.tail + 2 * s.sqCap) | 0);
      s.sqp.headCache = (s.sqp.tail - s.sqCap) | 0; // our cached head says "full": the next push reads the word
      const r = await settled([outcome(f.write(pattern(BS, 399), N * BS))], 'the write');
      const disk = readFileSync(path);
      let changed = 0;
      for (let i = 0; i < N; i++) if (!disk.subarray(i * BS, (i + 1) * BS).equals(pattern(BS, 300 + i))) changed++;
      assert.is(changed, 0, `${changed} of ${N} acknowledged blocks were overwritten`);
      assert.is(engine.stats().workerLosses, 1, 'the worker was replaced');
      // The write never went into the corrupt ring: it waited for the replacement and ran there.
      assert.ok(r[0].ok, `the new write succeeded (${r[0].message})`);
      assert.ok(disk.subarray(N * BS, (N + 1) * BS).equals(pattern(BS, 399)));
      await f.close();
    } finally { await closed(engine); }
  });

  test(`${backend}: a corrupt completion head is noticed by the worker: the completion it cannot post fails ERR_RINGFENCE_RING_CORRUPT`, async () => {
    const engine = await Engine.start({ backend, workers: 1, queueDepth: 8, bufferPoolBytes: 4 << 20 });
    try {
      const path = join(scratch.dir, `cq-head-${backend}`);
      writeFileSync(path, pattern(4 * BS, 13));
      const f = await engine.open(path, { direct: true });
      const { s } = slot0(engine);
      assert.is(await f.read(Buffer.alloc(BS), 0), BS);
      // The head word (ours, published for the worker) says we are three rings behind.
      Atomics.store(s.cq, RING_HEAD, (Atomics.load(s.cq, RING_TAIL) - 3 * s.cqCap) | 0);
      const r = (await settled([outcome(f.read(Buffer.alloc(BS), BS))], 'the read'))[0];
      assert.not.ok(r.ok, 'the read was not reported through the corrupt ring');
      assert.is(r.code, 'ERR_RINGFENCE_RING_CORRUPT');
      assert.match(r.message, /completion head -?\d+ is -?\d+ behind tail \d+/);
      assert.is(await losses(engine, 1), 1);
      const b = Buffer.alloc(BS);
      assert.is(await f.read(b, BS), BS);
      assert.ok(b.equals(pattern(4 * BS, 13).subarray(BS, 2 * BS)));
      await f.close();
    } finally { await closed(engine); }
  });

  for (const kind of ['write', 'read']) {
    test(`${backend}: a stale ${kind} entry for a pool block that was freed and reallocated is refused (EFAULT), not executed`, async () => {
      const engine = await Engine.start({ backend, workers: 1, queueDepth: 32, bufferPoolBytes: 4 << 20 });
      try {
        const path = join(scratch.dir, `stale-${kind}-${backend}`);
        const f = await engine.open(path, { create: true, truncate: true, direct: true });
        const { s } = slot0(engine);
        const last = () => RING_HDR_WORDS + (((s.sqp.tail - 1) | 0) & (s.sqCap - 1)) * SQ_ENTRY;
        const junk = pattern(BS, 0xbad);
        // 1. A request through a bounce block; keep a copy of its ring entry.
        const data = pattern(BS, 1);
        let p;
        if (kind === 'write') p = f.write(data, 0);
        else { await f.write(data, 0); p = f.read(Buffer.alloc(BS), 0); }
        const old = s.sq.slice(last(), last() + SQ_ENTRY);
        assert.is(await p, BS);
        // 2. Its block was freed; now it belongs to another allocation, holding other data.
        const off = old[E_BUF] >>> 0, taken = [];
        let got;
        while ((got = engine.pool.alloc(BS)) !== off) { assert.ok(got >= 0, 'the block was found again'); taken.push(got); }
        taken.push(got);
        engine.pool.bytes.set(junk, off);
        // 3. A new request whose ring entry is replaced by the stale one (with its own id and
        //    ring index and a matching check value: only the pool generation can tell).
        const r = outcome(kind === 'write' ? f.write(pattern(BS, 3), 8 * BS) : f.read(Buffer.alloc(BS), 0));
        const at = last();
        for (let i = 0; i < SQ_ENTRY; i++) if (i !== E_TAG && i !== SQ_SEQ) s.sq[at + i] = old[i];
        s.sq[at + SQ_SUM] = entrySum(s.sq, at, SQ_SUM);
        const res = await r;
        // Not executed: the file and the block's new owner are untouched.
        const disk = readFileSync(path);
        assert.ok(disk.subarray(0, BS).equals(data), 'the acknowledged block is unchanged');
        assert.ok(Buffer.from(engine.pool.bytes.buffer, off, BS).equals(junk), 'the reallocated block is unchanged');
        assert.is(disk.length, BS, 'nothing was written at the new request\'s offset either');
        assert.not.ok(res.ok, `the stale ${kind} was refused`);
        assert.is(res.code, 'EFAULT');
        for (const t of taken) engine.pool.free(t);
        assert.is(engine.stats().workerLosses, 0, 'a stale buffer is not ring corruption: the worker stays');
        await f.close();
      } finally { await closed(engine); }
    });
  }

}

test.run();
