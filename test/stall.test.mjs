// A real kernel stall: xfs_freeze on a loop-mounted XFS volume. A worker blocked in a system
// call is slow, not dead: the watchdog must not declare it lost (its writes complete after the
// thaw), and close({ deadlineMs }) must return even while the filesystem stays frozen.
// Needs root and xfsprogs; otherwise every test here is reported as skipped.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { makeXfsVolume, haveCommand } from '../dist/src/volume.js';
import { availableBackends, isRoot, pattern } from './helpers/env.mjs';

const can = isRoot && haveCommand('xfs_freeze') && haveCommand('mkfs.xfs');
if (!can) console.log('  skip: needs root and xfsprogs (a loop-mounted XFS volume and xfs_freeze)');
const BACKENDS = availableBackends(loadAddon().probe());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function frozen(dir, fn) {
  execFileSync('xfs_freeze', ['-f', dir]);
  let thawed = false;
  const thaw = () => { if (!thawed) { thawed = true; execFileSync('xfs_freeze', ['-u', dir]); } };
  return fn(thaw).finally(thaw);
}

for (const backend of ['sync', 'libaio'].filter((b) => BACKENDS.includes(b))) {
  (can ? test : test.skip)(`${backend}: writes stalled by xfs_freeze complete after the thaw, and the watchdog does not report them lost`, async () => {
    const vol = makeXfsVolume(512 << 20);
    let engine;
    try {
      engine = await Engine.start({ backend, workers: 1, watchdogMs: 300 });
      const path = join(vol.dir, 'frozen');
      const f = await engine.open(path, { create: true, truncate: true });
      await f.write(engine.alloc(4096), 0);
      const warnings = [];
      const onWarning = (w) => warnings.push(w);
      process.on('warning', onWarning);
      const datas = Array.from({ length: 32 }, (_, i) => pattern(4096, i + 1));
      let results;
      await frozen(vol.dir, async (thaw) => {
        const pending = datas.map((d, i) => {
          const b = engine.alloc(4096); b.set(d);
          return f.write(b, i * 4096).then((n) => n, (e) => e);
        });
        await sleep(1500); // five watchdog periods with the worker blocked in the kernel
        assert.is(engine.stats().workerLosses, 0, 'not declared lost while blocked in a system call');
        thaw();
        results = await Promise.all(pending);
      });
      process.off('warning', onWarning);
      for (const r of results) assert.is(r, 4096, r instanceof Error ? r.message : `result ${r}`);
      assert.is(engine.stats().workerLosses, 0);
      assert.ok(warnings.some((w) => w.code === 'RINGFENCE_WORKER_STALLED'), 'a warning said the worker is stalled, not dead');
      await f.close();
      const disk = readFileSync(path);
      datas.forEach((d, i) => assert.ok(disk.subarray(i * 4096, (i + 1) * 4096).equals(d), `block ${i} landed`));
    } finally {
      await engine?.close();
      vol.cleanup();
    }
  });
}

for (const backend of BACKENDS) {
  (can ? test : test.skip)(`${backend}: close({ deadlineMs }) returns while the filesystem stays frozen, and says what it gave up on`, async () => {
    const vol = makeXfsVolume(512 << 20);
    try {
      const engine = await Engine.start({ backend, workers: 1, watchdogMs: 0 });
      const f = await engine.open(join(vol.dir, 'frozen-close'), { create: true, truncate: true });
      await frozen(vol.dir, async () => {
        const w = f.write(engine.alloc(4096).fill(1), 0).then(() => null, (e) => e);
        await sleep(200);
        const t0 = performance.now();
        await engine.close({ deadlineMs: 300 });
        const took = performance.now() - t0;
        const e = await w;
        assert.ok(e !== null, 'the stalled write did not claim success');
        assert.is(e.code, 'ERR_RINGFENCE_CLOSE_TIMEOUT', e.message);
        assert.match(e.message, /deadline of 300 ms/);
        assert.ok(took < 5000, `close() returned after ${Math.round(took)} ms`);
      });
    } finally {
      // The stuck request completes after the thaw; the loop device is busy until it does.
      await sleep(500);
      vol.cleanup();
    }
  });
}

(can && BACKENDS.includes('io_uring') ? test : test.skip)('io_uring: a worker lost while its writes are stuck in the kernel never lets their memory be reused', async () => {
  // The worker throws (injected) while XFS is frozen: its teardown waits ~10 s for the stuck
  // writes, gives up and leaks the ring. The engine must then keep their bounce blocks, or the
  // writes, which land after the thaw, would carry whatever the next owner put there.
  const vol = makeXfsVolume(512 << 20);
  let engine;
  try {
    engine = await Engine.start({ backend: 'io_uring', workers: 1, faults: '0:throw:10', watchdogMs: 0, bufferPoolBytes: 4 << 20 });
    const path = join(vol.dir, 'gaveup');
    const f = await engine.open(path, { create: true, truncate: true });
    await frozen(vol.dir, async (thaw) => {
      const writes = Array.from({ length: 8 }, (_, i) => f.write(Buffer.alloc(65536, 0x11), i * 65536).then((n) => n, (e) => e));
      await sleep(300);
      // Requests 9 and on: the injected fault makes the worker throw at its 10th.
      const triggers = Array.from({ length: 3 }, () => f.read(Buffer.alloc(4096), 1 << 20).then((n) => n, (e) => e));
      const results = await Promise.all([...writes, ...triggers]);
      for (const r of results.slice(0, 8)) assert.ok(r instanceof Error && r.code === 'ERR_RINGFENCE_WORKER_LOST', String(r?.message ?? r));
      // Take every block the pool will give and fill it: none may be a stuck write's.
      const taken = [];
      for (;;) { try { taken.push(engine.alloc(65536).fill(0xee)); } catch { break; } }
      assert.ok(engine.stats().pool.used >= 8 * 65536, 'the stuck writes still hold their blocks');
      thaw();
      await sleep(1000);
    });
    await engine.close({ deadlineMs: 2000 });
    engine = null;
    const disk = readFileSync(path);
    assert.not.ok(disk.includes(0xee), 'no stuck write carried another allocation\'s bytes');
  } finally {
    await engine?.close({ deadlineMs: 2000 });
    await sleep(500);
    vol.cleanup();
  }
});

test.run();
