// Long open/close loops leak nothing: no file descriptors (counted in /proc/self/fd), no
// io_uring rings or eventfds (fds whose link is anon_inode:[io_uring] / [eventfd]), no libaio
// contexts (the [aio] mappings in /proc/self/maps), no worker threads, and no pool memory
// (engine.stats().pool.used returns to its baseline).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readdirSync, readlinkSync, readFileSync, mkdirSync } from 'node:fs';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { scratchDir, pattern, availableBackends, engineOptions } from './helpers/env.mjs';

// A real GC, so that buffers dropped without free() can be seen coming back.
setFlagsFromString('--expose-gc');
const gc = globalThis.gc ?? runInNewContext('gc');

const probe = loadAddon().probe();
const BACKENDS = availableBackends(probe);
const scratch = scratchDir('rf-leaks-');
test.after(() => scratch.cleanup());

function resources() {
  const r = { fds: 0, io_uring: 0, eventfd: 0, aio: 0, threads: 0, files: 0 };
  for (const fd of readdirSync('/proc/self/fd')) {
    let link;
    try { link = readlinkSync(`/proc/self/fd/${fd}`); } catch { continue; } // the dir fd itself
    r.fds++;
    if (link === 'anon_inode:[io_uring]') r.io_uring++;
    else if (link === 'anon_inode:[eventfd]') r.eventfd++;
    else if (link.startsWith(scratch.dir)) r.files++;
  }
  r.aio = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/[aio]')).length;
  // Threads of this process, except the kernel's io-wq workers (iou-wrk-*): io_uring keeps the
  // last idle one of each kind for as long as the thread that owns rings lives (in inline mode
  // that is this thread), whatever ringfence does; a leaked ring shows in the io_uring count.
  r.threads = readdirSync('/proc/self/task').filter((t) => {
    try { return !readFileSync(`/proc/self/task/${t}/comm`, 'utf8').startsWith('iou-wrk'); } catch { return false; }
  }).length;
  return r;
}

let loopRings;
/** io_uring fds a worker thread's own libuv loop adds (0 on Node 20; Node >= 22's libuv has one per loop). */
async function loopRingsPerThread() {
  if (loopRings === undefined) {
    const before = resources().io_uring;
    const e = await Engine.start(engineOptions({ backend: 'sync', workers: 2 }));
    const f = await e.open(join(scratch.dir, 'loop-rings'), { create: true });
    await f.write(Buffer.alloc(4096), 0);
    loopRings = (resources().io_uring - before) / 2;
    await e.close();
  }
  return loopRings;
}

/**
 * The resources once the engines closed just before have let go of theirs: a closed engine's
 * worker threads leave the process a little after close() resolves, so a baseline read at once
 * can count one that is on its way out, and a later reading then shows one thread fewer than the
 * engine under test really added. Reads until 5 readings 50 ms apart agree (at most 10 s).
 */
async function quietBaseline() {
  let last = JSON.stringify(resources()), same = 0;
  for (let i = 0; i < 200 && same < 4; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const now = JSON.stringify(resources());
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return JSON.parse(last);
}

/** Resources settle asynchronously (thread exit): poll for up to 3 s until equal. */
async function settled(base, label, ignore = []) {
  let now;
  base = { ...base };
  for (const k of ignore) delete base[k];
  // Up to 10 s: exited threads go away asynchronously, slower on a loaded machine; a leak never does.
  for (let i = 0; i < 200; i++) {
    now = resources();
    for (const k of ignore) delete now[k];
    if (JSON.stringify(now) === JSON.stringify(base)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(now, base, `${label}: resources back to the baseline`);
}

test('300 open/close cycles (with I/O, failed opens, pooled and bounced buffers) leak no fd and no pool memory', async () => {
  const engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 16, bufferPoolBytes: 4 << 20 }));
  try {
    mkdirSync(join(scratch.dir, 'adir'));
    // O_DIRECT and buffered handles use different files: one engine refuses to mix them on one.
    const path = (i) => join(scratch.dir, `f${i % 7}${i % 3 === 0 ? '-buffered' : ''}`);
    const warm = await engine.open(path(0), { create: true });
    await warm.close();
    const base = resources();
    const poolBase = engine.stats().pool.used;
    assert.is(poolBase, 0);
    const open = [];
    // One cycle per call, so no stale local of a suspended async frame keeps a buffer alive.
    const cycle = async (i) => {
      const f = await engine.open(path(i), { create: true, direct: i % 3 !== 0 });
      if (i % 5 === 0) {
        const pooled = engine.alloc(8192); pooled.set(pattern(8192, i));
        assert.is(await f.write(pooled, 0), 8192);
        const back = Buffer.alloc(8192);
        assert.is(await f.read(back, 0), 8192);
        assert.ok(back.equals(pattern(8192, i)));
        assert.is(await f.writev([pooled.subarray(0, 4096), Buffer.from(pattern(4096, i + 1))], 8192), 8192);
        assert.is(await f.read(Buffer.alloc(100), 3), 100); // padded read
        if (i % 2 === 0) engine.free(pooled); // the other half is left to the FinalizationRegistry
      }
      // Some files stay open across cycles, and are closed later (several per identity).
      if (i % 10 === 0) open.push(f); else await f.close();
      if (open.length > 4) await open.shift().close();
      // Failed opens must not leak their fd.
      if (i % 15 === 0) {
        await engine.open(join(scratch.dir, 'missing')).catch(() => {});
        await engine.open(join(scratch.dir, 'adir')).catch(() => {});
        await engine.open(path(i), { bogus: 1 }).catch(() => {});
      }
    };
    for (let i = 0; i < 300; i++) await cycle(i);
    for (const f of open) await f.close();
    await engine.idle();
    // Buffers dropped without free() come back through the FinalizationRegistry after a GC.
    { for (let i = 0; i < 40 && engine.stats().pool.used > poolBase; i++) { gc(); await new Promise((r) => setTimeout(r, 25)); } }
    // Threads are not compared here: open/close creates none, and V8/libuv may start helper
    // threads lazily (GC, the platform pool) during the loop. The start/close test checks them.
    await settled(base, 'after 300 open/close cycles', ['threads']);
    assert.is(engine.stats().files.length, 0, 'no file left registered');
    assert.is(engine.identities.size, 0, 'no tracked-request table left');
    assert.is(engine.stats().pool.used, poolBase, 'pool memory back to baseline (freed buffers, bounce blocks, and forgotten buffers after GC)');
  } finally { await engine.close(); }
});

for (const backend of BACKENDS) {
  test(`${backend}: 10 Engine.start/close cycles leak no fd, ring, eventfd, aio context or thread`, async () => {
    // Warm-up: the first engine in a process loads the addon and starts lazily created threads.
    await (await Engine.start(engineOptions({ backend, workers: 2 }))).close();
    // Measured before the baseline: its sync engine, inline, runs its write on libuv's
    // threadpool, whose threads (process-wide, started on first use) then stay for good.
    await loopRingsPerThread();
    const base = await quietBaseline();
    for (let i = 0; i < 10; i++) {
      const engine = await Engine.start(engineOptions({ backend, workers: 2, queueDepth: 8, bufferPoolBytes: 1 << 20 }));
      const f = await engine.open(join(scratch.dir, `e${backend}`), { create: true });
      const buf = engine.alloc(4096); buf.set(pattern(4096, i));
      assert.is(await f.write(buf, i * 4096), 4096);
      if (i === 0) {
        // The counters do see what an engine holds, so a leak would show.
        const during = resources();
        // Contexts: one per worker (worker mode, 2) or the engine thread's own (inline mode, 1).
        const inline = engine.info().mode === 'inline', k = inline ? 1 : 2, threads = inline ? 0 : 2;
        // Node >= 22's libuv gives each thread's event loop an io_uring of its own: count the
        // addon's rings net of those (measured with the sync backend, which has none).
        assert.is(during.io_uring - base.io_uring - threads * await loopRingsPerThread(), backend === 'io_uring' ? k : 0, 'one ring per context');
        // One doorbell (worker) or completion eventfd (inline) per context, plus one for each worker thread's own libuv loop.
        assert.ok(during.eventfd - base.eventfd >= k, `one eventfd per context (${during.eventfd - base.eventfd} eventfds)`);
        assert.is(during.aio - base.aio, backend === 'libaio' ? k : 0, 'one aio context per context');
        // >= : io_uring's kernel io-wq workers (iou-wrk-*) are threads of this process too.
        assert.ok(during.threads - base.threads >= threads, `${threads} worker threads (${during.threads - base.threads})`);
        assert.is(during.files - base.files, 1, 'the open file');
      }
      if (i % 2 === 0) await f.close(); // otherwise engine.close() closes it
      await engine.close();
      assert.is(engine.stats().pool.used, 4096, 'pool accounting still sees the unfreed buffer (the pool itself is dropped with the engine)');
    }
    await settled(base, `${backend}: after 10 start/close cycles`);
  });
}

test('engines that fail to start leak nothing either', async () => {
  await (await Engine.start(engineOptions({ workers: 1 }))).close();
  const base = await quietBaseline();
  for (let i = 0; i < 5; i++) {
    await Engine.start(engineOptions({ workers: 1, queueDepth: 0 })).catch(() => {});
    await Engine.start(engineOptions({ workers: 1, faults: 'nonsense' })).catch(() => {});
  }
  await settled(base, 'after failed starts');
});

test.run();
