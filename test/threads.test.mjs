// Engines on several threads of one process, on one file: one process-wide tracked-request
// table (native/registry.h). generic/586 across two threads' engines, unaligned writes from
// three threads into the same blocks, a thread terminated while it holds a serialising entry,
// the combined workaround rule, and the registry's limits.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { spawnSync } from 'node:child_process';
import { Engine } from '../dist/src/index.js';
import { scratchDir, pattern } from './helpers/env.mjs';

const scratch = scratchDir('rf-threads-');
test.after(() => scratch.cleanup());
const BS = 4096;
const CHILD = new URL('./helpers/child-thread.mjs', import.meta.url);

/** Starts a child thread with its own engine; resolves once it has the file open. */
async function child(workerData) {
  const w = new Worker(CHILD, { workerData });
  const msgs = [];
  const waiters = [];
  const failed = new Promise((_, reject) => {
    w.on('error', reject);
    w.on('exit', (code) => { if (code !== 0) reject(new Error(`child exited ${code}`)); });
  });
  failed.catch(() => {});
  w.on('message', (m) => { msgs.push(m); for (const x of waiters.splice(0)) x(); });
  const next = async (type) => {
    for (;;) {
      const i = msgs.findIndex((m) => m.type === type);
      if (i >= 0) return msgs.splice(i, 1)[0];
      await Promise.race([new Promise((r) => waiters.push(r)), failed]);
    }
  };
  const open = await next('open');
  const exited = new Promise((r) => w.once('exit', r));
  // Lets a child that finished (it closes its engine and exits) go on its own; terminates it
  // only if it has not exited within `ms` (a failed test: it may be parked for good).
  const stop = async (ms = 10_000) => {
    if (await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))])) return;
    await w.terminate();
  };
  return { w, next, open, exited, stop };
}

async function waitDone(ctl, i) {
  while (Atomics.load(ctl, 1) < i) {
    const r = Atomics.waitAsync(ctl, 1, Atomics.load(ctl, 1), 5000);
    // A pending waitAsync does not keep the event loop alive: a timer does.
    const keep = setTimeout(() => {}, 6000);
    if (r.async) await r.value;
    clearTimeout(keep);
  }
}

/**
 * generic/586 across threads: this thread truncates and zero-writes block 0 (with the
 * pre-5.5 XFS fallocate emulated), a child thread's engine writes block 1 at the same time.
 */
async function run586Threads({ zeroPolicy, writePolicy, iterations, mode = 'inline', zeroHere = true }) {
  const path = join(scratch.dir, `586-${zeroPolicy}-${writePolicy}-${mode}-${zeroHere}`);
  const here = await Engine.start({
    mode, ...(mode === 'workers' ? { workers: 2 } : {}), queueDepth: 8,
    xfsWorkaround: zeroHere ? zeroPolicy : writePolicy, emulateXfsFallocateBug: zeroHere ? { windowUs: 1000 } : false,
  });
  const f = await here.open(path, { create: true, truncate: true });
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const c = await child({
    role: zeroHere ? 'write-past-eof' : 'zero-past-eof', path, bs: BS, iterations, ctl: ctl.buffer,
    engine: { xfsWorkaround: zeroHere ? writePolicy : zeroPolicy, queueDepth: 8, emulateXfsFallocateBug: zeroHere ? false : { windowUs: 1000 } },
  });
  const data = here.alloc(BS);
  data.set(pattern(BS, 586));
  const back = here.alloc(2 * BS);
  let lost = 0;
  try {
    for (let i = 1; i <= iterations; i++) {
      await f.truncate(0);
      Atomics.store(ctl, 0, i);
      Atomics.notify(ctl, 0);
      await (zeroHere ? f.writeZeroes(0, BS) : f.write(data, BS));
      await waitDone(ctl, i);
      const size = await f.size();
      const n = await f.read(back, 0);
      const ok = size === BigInt(2 * BS) && n === 2 * BS &&
        back.subarray(0, BS).every((b) => b === 0) && Buffer.compare(back.subarray(BS), pattern(BS, 586)) === 0;
      if (!ok) lost++;
    }
    const theirs = (await c.next('stats')).stats;
    await c.next('end');
    return { lost, stats: f.stats(), theirs, info: f.info(), participants: c.open.participants, expected: mode === 'workers' ? 3 : 2 };
  } finally {
    await c.stop();
    await f.close();
    await here.close();
  }
}

test('generic/586 across two threads, bug emulated, workaround never: writes past EOF are lost', async () => {
  const r = await run586Threads({ zeroPolicy: 'never', writePolicy: 'never', iterations: 200 });
  console.log(`  never/never: ${r.lost}/200 rounds lost the other thread's write`);
  assert.ok(r.lost >= 20, `the emulated bug must show clearly across threads (lost ${r.lost}/200)`);
  assert.is(r.participants, r.expected, 'both engines joined one table');
});

test('generic/586 across two threads, bug emulated, workaround always: nothing is lost', async () => {
  const r = await run586Threads({ zeroPolicy: 'always', writePolicy: 'always', iterations: 200 });
  console.log(`  always/always: ${r.lost}/200 lost; serialising ${r.stats.serialising}, waits here ${r.stats.waits}, there ${r.theirs.waits} (max ${(r.theirs.waitNsMax / 1e3).toFixed(0)} µs, mean ${(r.theirs.waitNsTotal / 1e3 / Math.max(1, r.theirs.waits)).toFixed(0)} µs)`);
  assert.is(r.lost, 0);
  assert.ok(r.stats.waits + r.theirs.waits > 0, 'some rounds overlapped (else this proves nothing)');
  assert.is(r.participants, r.expected, 'both engines joined one table');
  assert.ok(r.stats.serialising >= 200, 'every post-EOF zero-write was serialising');
});

test('generic/586 across threads with a worker-mode engine on this thread: nothing is lost', async () => {
  const r = await run586Threads({ zeroPolicy: 'always', writePolicy: 'always', iterations: 100, mode: 'workers' });
  assert.is(r.lost, 0);
  assert.is(r.participants, r.expected, 'the inline engine and both offload workers joined one table');
});

test("combined rule: an 'always' engine's writes are safe from a 'never' engine's zero-writes", async () => {
  // The zero-writes come from the 'never' engine (bug emulated there); the writes past EOF
  // from the 'always' one. The workaround is in force on the file while any engine with it
  // open wants it, so the 'never' engine's zero-writes serialise too.
  const r = await run586Threads({ zeroPolicy: 'never', writePolicy: 'always', iterations: 200, zeroHere: false });
  console.log(`  never zero-writes vs always writes: ${r.lost}/200 lost; the never engine serialised ${r.theirs.serialising}`);
  assert.is(r.lost, 0);
  assert.ok(r.theirs.serialising > 0, "the 'never' engine's post-EOF zero-writes serialised");
});

test("combined rule, late joiner: an 'always' engine that opens the file while a 'never' engine's zero-write is in flight waits for it", async () => {
  // The 'never' engine's zero-write past EOF is admitted non-serialising (nobody wanted the
  // workaround yet) and then spends 1 s in the emulated kernel call. The 'always' engine's
  // open() must not return before it has finished: its write past EOF would otherwise race it
  // and be truncated away.
  const path = join(scratch.dir, 'late-joiner');
  const never = await Engine.start({ xfsWorkaround: 'never', emulateXfsFallocateBug: { windowUs: 1_000_000 } });
  const always = await Engine.start({ xfsWorkaround: 'always' });
  try {
    const fn = await never.open(path, { create: true, truncate: true });
    let zwDone = false;
    const zw = fn.writeZeroes(0, BS).then((n) => { zwDone = true; return n; });
    await new Promise((r) => setTimeout(r, 20));
    const inFlightAtOpen = !zwDone;
    const fa = await always.open(path, {});
    const doneAtReturn = zwDone;
    const data = always.alloc(BS);
    data.set(pattern(BS, 99));
    await fa.write(data, BS);
    await zw;
    const back = always.alloc(2 * BS);
    assert.is(await fa.size(), BigInt(2 * BS), 'the write past EOF was not truncated away');
    assert.is(await fa.read(back, 0), 2 * BS);
    assert.equal(Buffer.from(back.subarray(BS)), pattern(BS, 99));
    assert.ok(inFlightAtOpen, 'the zero-write was still in the (emulated) kernel when open() began');
    assert.ok(doneAtReturn, 'open() returned only once that zero-write had finished');
    await fa.close();
    await fn.close();
  } finally {
    await always.close();
    await never.close();
  }
});

test('unaligned writes from engines on 3 threads into the same blocks lose no byte', async () => {
  const path = join(scratch.dir, 'unaligned-3');
  const blocks = 768;
  writeFileSync(path, Buffer.alloc(blocks * BS));
  const expect = Buffer.alloc(blocks * BS);
  const per = [[], [], []];
  for (let b = 0; b < blocks; b++) {
    // Three unaligned pieces per block, one per thread; a few span into the next block.
    const c1 = 700 + ((b * 37) % 900), c2 = 2300 + ((b * 53) % 1200);
    const end = b + 1 < blocks && b % 5 === 0 ? BS + 300 : BS;
    const cuts = [[0, c1], [c1, c2], [c2, end]];
    if (b > 0 && (b - 1) % 5 === 0) cuts[0][0] = 300; // the previous block's piece covers [0, 300)
    cuts.forEach(([s, e], t) => {
      const off = b * BS + s, len = e - s, seed = b * 3 + t + 1;
      per[t].push([off, len, seed]);
      pattern(len, seed).copy(expect, off);
    });
  }
  // Each thread writes its pieces in block order, 8 at a time: the threads meet in the same blocks.
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const kids = await Promise.all(per.map((chunks) => child({ role: 'unaligned', path, chunks, qd: 8, ctl: ctl.buffer, engine: { queueDepth: 16 } })));
  Atomics.store(ctl, 0, 1);
  Atomics.notify(ctl, 0);
  let stats;
  try {
    stats = await Promise.all(kids.map((k) => k.next('stats')));
  } finally {
    await Promise.all(kids.map((k) => k.stop()));
  }
  const got = readFileSync(path);
  let bad = 0;
  for (let i = 0; i < expect.length; i++) if (got[i] !== expect[i]) bad++;
  console.log(`  3 threads x ${blocks} unaligned pieces: ${bad} bytes wrong; waits ${stats.map((s) => s.stats.waits).join('/')}`);
  assert.is(bad, 0);
  assert.ok(stats.every((s) => s.stats.serialising >= blocks * 0.9), `(nearly) every piece was a serialising padded write: ${stats.map((s) => s.stats.serialising)}`);
  assert.ok(stats.reduce((n, s) => n + s.stats.waits, 0) > 0, 'the threads did contend for blocks (else this proves nothing)');
  assert.is(Math.max(...kids.map((k) => k.open.participants)), 3, 'the three engines joined one table');
});

test('a thread terminated while it holds a serialising entry: the others go on, nothing hangs', async () => {
  const path = join(scratch.dir, 'terminated');
  const here = await Engine.start({ xfsWorkaround: 'always', queueDepth: 8 });
  const f = await here.open(path, { create: true, truncate: true });
  try {
    // The child's zero-write past EOF is serialising to infinity and spends 1.5 s in the
    // emulated kernel call (on a helper thread).
    const c = await child({
      role: 'hold-serialising', path, bs: BS, offset: 0,
      engine: { xfsWorkaround: 'always', emulateXfsFallocateBug: { windowUs: 1_500_000 } },
    });
    await c.next('holding');
    assert.is(f.stats().tableParticipants, 2);
    const data = here.alloc(BS);
    data.set(pattern(BS, 7));
    let settled = false;
    const w = f.write(data, 8 * BS).then((n) => { settled = true; return n; });
    await new Promise((r) => setTimeout(r, 100));
    assert.is(settled, false, 'the overlapping write waits for the serialising entry');
    await c.w.terminate();
    const n = await Promise.race([w, new Promise((_, rej) => setTimeout(() => rej(new Error('the parked write hung after the holder was terminated')), 10_000))]);
    assert.is(n, BS);
    assert.is(f.stats().tableParticipants, 1, "the terminated thread's participant left the table");
    assert.ok(f.stats().waits >= 1);
    // native/registry.cc release_owned() put the dead participant's in-flight count (its own
    // statistics line) back to 0: the table's count is the sum of the participants' lines.
    const [ident] = here.identities.values();
    const ts = here.addon.tableStats(ident.dev, ident.ino);
    assert.is(ts.inFlight, 0, 'no entry left in flight');
    assert.ok(ts.highWater >= 2, `the high-water mark counts both participants' entries (${ts.highWater})`);
    // The table is usable afterwards: a serialising request of this engine runs.
    await f.truncate(0);
    assert.is(await f.size(), 0n);
  } finally {
    await f.close();
    await here.close();
  }
});

test('a release in one thread wakes a request parked in another through its doorbell (no once-a-second backstop)', () => {
  // The engines re-check parked requests once a second as a backstop; with it off
  // (RINGFENCE_TEST_NO_BACKSTOP, read when the module loads, so in a child process), the main
  // thread's parked write can only be woken by the worker's release ringing its eventfd. The
  // worker's entry is an unaligned 32 MiB write (a padded read-modify-write, serialising over its
  // aligned range, run on the worker's own ring); nothing else is in flight on the main thread.
  // Without the ring the write never settles, and the child's own 10 s limit fails it: with
  // Executor.wake's tableRing call removed, this child exits 1 ("never woken"). (A zero-write held
  // in the emulated fallocate, as in the test above, does not show that: the main thread was woken
  // without the ring there, by a way not looked into.)
  const path = join(scratch.dir, 'doorbell');
  const src = `
    import { Worker } from 'node:worker_threads';
    import { Engine } from ${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)};
    const here = await Engine.start({ queueDepth: 8 });
    const f = await here.open(${JSON.stringify(path)}, { create: true, truncate: true });
    await f.truncate(64n << 20n);
    const [ident] = here.identities.values();
    const worker = \`
      import { workerData, parentPort } from 'node:worker_threads';
      import { Engine } from \${JSON.stringify(${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)})};
      const e = await Engine.start({ queueDepth: 8 });
      const g = await e.open(workerData.path);
      parentPort.postMessage('open');
      await new Promise((r) => parentPort.once('message', r));
      await g.write(Buffer.alloc(32 << 20, 7), 1);
      await g.close(); await e.close();
      parentPort.postMessage('done');
    \`;
    // The worker's write may finish before the main thread's overlaps it: try again (each try
    // that parks proves the point; one is enough).
    let parked = 0, participants = 0, n = 0, ms = 0;
    for (let attempt = 0; attempt < 10 && parked === 0; attempt++) {
      const w = new Worker(worker, { eval: true, execArgv: [], workerData: { path: ${JSON.stringify(path)} } });
      await new Promise((r) => w.once('message', r));
      participants = Math.max(participants, f.stats().tableParticipants);
      w.postMessage('go');
      while (here.addon.tableStats(ident.dev, ident.ino).inFlight === 0) await new Promise((r) => setImmediate(r));
      const before = f.stats().waits, t0 = performance.now();
      n = await Promise.race([f.write(here.alloc(4096), 16 << 20), new Promise((_, rej) => setTimeout(() => rej(new Error('the parked write was never woken')), 10_000))]);
      ms = performance.now() - t0;
      parked = f.stats().waits - before;
      await new Promise((r) => w.once('message', r));
      await w.terminate();
    }
    console.log(JSON.stringify({ n, ms, parked, participants }));
    await f.close();
    await here.close();
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], {
    encoding: 'utf8', timeout: 60_000, env: { ...process.env, RINGFENCE_TEST_NO_BACKSTOP: '1' },
  });
  assert.ok(r.error === undefined && r.signal === null, `the child hung: ${r.error ?? r.signal}; ${r.stderr}`);
  assert.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  console.log(`  parked ${out.ms.toFixed(1)} ms behind the other thread's padded write, woken by its release`);
  assert.is(out.participants, 2, 'both engines joined one table');
  assert.is(out.n, 4096);
  assert.ok(out.parked >= 1, 'the write did park behind the serialising entry (else this proves nothing)');
});

test('per-file policies in one engine: the registry counts the engine as wanting the workaround while any of its handles does', async () => {
  const path = join(scratch.dir, 'per-file-policy');
  const e = await Engine.start({});
  try {
    const never = await e.open(path, { create: true, xfsWorkaround: 'never' });
    const [ident] = e.identities.values();
    assert.is(e.addon.tableStats(ident.dev, ident.ino).workaroundUsers, 0);
    const always = await e.open(path, { xfsWorkaround: 'always' });
    assert.is(e.addon.tableStats(ident.dev, ident.ino).workaroundUsers, 1, "the 'always' handle puts the workaround in force");
    await always.close();
    assert.is(e.addon.tableStats(ident.dev, ident.ino).workaroundUsers, 0, 'and takes it away again');
    await never.close();
  } finally { await e.close(); }
});

test("the native table's inFlight and highWater are capped at the capacity (the participants' counts are read one after the other)", async () => {
  // native/registry.cc stats() sums each participant's own statistics line. Read while the
  // participants work, the sum can exceed what the table holds (src/table.ts inFlight() is the
  // reference, with its own test in table-check). Two unused participants' lines are set to the
  // whole capacity here: without the cap the sums would be twice the capacity.
  const path = join(scratch.dir, 'stats-cap');
  const e = await Engine.start({});
  try {
    const f = await e.open(path, { create: true });
    const [ident] = e.identities.values();
    const before = e.addon.tableStats(ident.dev, ident.ino);
    const w = e.addon.wire, cap = before.capacity;
    const mem = new Int32Array(e.addon.tableView(before.id));
    const line = (p) => w.TABLE_H_PART + p * w.TABLE_H_PART_WORDS;
    const used = before.participants;
    for (const p of [28, 29]) {
      Atomics.store(mem, line(p) + w.TABLE_P_IN_FLIGHT, cap);
      Atomics.store(mem, line(p) + w.TABLE_P_HIGH_WATER, cap);
    }
    try {
      const ts = e.addon.tableStats(ident.dev, ident.ino);
      assert.is(ts.inFlight, cap, `inFlight capped at the capacity ${cap}`);
      assert.is(ts.highWater, cap, `highWater capped at the capacity ${cap}`);
      assert.is(ts.participants, used, 'the participant count comes from the registry, not from the lines');
    } finally {
      for (const p of [28, 29]) {
        Atomics.store(mem, line(p) + w.TABLE_P_IN_FLIGHT, 0);
        Atomics.store(mem, line(p) + w.TABLE_P_HIGH_WATER, 0);
      }
    }
    assert.is(e.addon.tableStats(ident.dev, ident.ino).inFlight, 0);
    const buf = e.alloc(BS);
    await f.write(buf, 0);
    e.free(buf);
    await f.close();
  } finally { await e.close(); }
});

test("a worker whose replacement cannot rejoin the file's table retires its slot: clear errors, no crash, no hang", async () => {
  // Engine A's only worker dies after its first request; its teardown leaves the file's table,
  // which then closes. Engine B opens the file buffered as soon as that is allowed. A's
  // replacement worker then cannot join (O_DIRECT and buffered on one file): A's slot retires.
  const path = join(scratch.dir, 'rejoin');
  writeFileSync(path, Buffer.alloc(4 * BS, 1));
  const a = await Engine.start({ mode: 'workers', workers: 1, faults: '0:exit:1' });
  const b = await Engine.start({});
  let unhandled = null;
  const onUnhandled = (err) => { unhandled = err; };
  process.on('unhandledRejection', onUnhandled);
  try {
    const fa = await a.open(path, {});
    const first = fa.read(Buffer.alloc(BS), 0).then(() => null, (err) => err);
    let fb = null;
    for (let i = 0; i < 5000 && fb === null; i++) {
      fb = await b.open(path, { direct: false }).catch((err) => {
        if (err.code !== 'ERR_RINGFENCE_MIXED_IO_MODES') throw err;
        return new Promise((r) => setTimeout(() => r(null), 1));
      });
    }
    assert.ok(fb !== null, "B's buffered open succeeded once A's worker had left the table");
    const e1 = await first;
    assert.is(e1?.code, 'ERR_RINGFENCE_WORKER_LOST');
    const next = await Promise.race([
      fa.read(Buffer.alloc(BS), 0).then(() => null, (err) => err),
      new Promise((r) => setTimeout(() => r('hung'), 10_000)),
    ]);
    assert.ok(next !== 'hung', 'a request to the engine whose slot retired did not hang');
    assert.ok(next !== null && ['ERR_RINGFENCE_MIXED_IO_MODES', 'ERR_RINGFENCE_WORKER_LOST'].includes(next.code), `got ${next?.code}: ${next?.message}`);
    await new Promise((r) => setTimeout(r, 50));
    assert.is(unhandled, null, `no unhandled rejection (${unhandled?.message})`);
    await fb.close();
    await fa.close().catch(() => {});
  } finally {
    process.off('unhandledRejection', onUnhandled);
    await a.close().catch(() => {});
    await b.close();
  }
});

test('O_DIRECT and buffered handles on one file are refused across engines too', async () => {
  const path = join(scratch.dir, 'mixed');
  const a = await Engine.start({});
  const b = await Engine.start({});
  try {
    const fa = await a.open(path, { create: true });
    try {
      await b.open(path, { direct: false });
      assert.unreachable('the buffered open must be refused');
    } catch (err) {
      assert.is(err.code, 'ERR_RINGFENCE_MIXED_IO_MODES');
      assert.match(err.message, /another engine/);
    }
    await fa.close();
    const fb = await b.open(path, { direct: false }); // allowed once the O_DIRECT handle is gone
    await fb.close();
  } finally {
    await a.close();
    await b.close();
  }
});

test('the participant limit (31 contexts on one file) is a clear error, and a slot frees on close', async () => {
  const path = join(scratch.dir, 'limit');
  const engines = [], files = [];
  try {
    for (let i = 0; i < 31; i++) {
      const e = await Engine.start({ bufferPoolBytes: 1 << 20, queueDepth: 4 });
      engines.push(e);
      files.push(await e.open(path, { create: true }));
    }
    assert.is(files[0].stats().tableParticipants, 31);
    const extra = await Engine.start({ bufferPoolBytes: 1 << 20, queueDepth: 4 });
    engines.push(extra);
    try {
      await extra.open(path, {});
      assert.unreachable('the 32nd participant must be refused');
    } catch (err) {
      assert.is(err.code, 'ERR_RINGFENCE_TABLE_PARTICIPANTS');
      assert.match(err.message, /31 I\/O contexts/);
    }
    await files.pop().close();
    const f = await extra.open(path, {});
    assert.is(f.stats().tableParticipants, 31);
    await f.close();
  } finally {
    for (const f of files) await f.close();
    for (const e of engines) await e.close();
  }
});

test.run();
