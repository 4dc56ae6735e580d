// Worker faults: a worker that exits, throws or hangs fails exactly the requests it held with
// ERR_RINGFENCE_WORKER_LOST, its table entries are released (so nothing parked behind them waits
// forever), a replacement takes over, and later I/O works.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { Engine, RingfenceError } from '../dist/src/index.js';
import { scratchDir, pattern } from './helpers/env.mjs';

const scratch = scratchDir('rf-faults-');
test.after(() => scratch.cleanup());
const BS = 4096;

async function afterFault(engine, f) {
  // The replacement serves the file: write and read back through every worker.
  for (let i = 0; i < 8; i++) {
    const data = pattern(BS, 900 + i);
    assert.is(await f.write(data, (100 + i) * BS), BS);
    const back = Buffer.alloc(BS);
    assert.is(await f.read(back, (100 + i) * BS), BS);
    assert.equal(back, data);
  }
}

for (const action of ['exit', 'throw']) {
  test(`a worker that ${action}s: its requests reject with ERR_RINGFENCE_WORKER_LOST, others complete, a replacement serves`, async () => {
    const engine = await Engine.start({ workers: 2, queueDepth: 8, faults: `0:${action}:5` });
    const path = join(scratch.dir, `fault-${action}`);
    try {
      const f = await engine.open(path, { create: true, truncate: true });
      const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => f.write(pattern(BS, i + 1), i * BS)));
      const lost = results.filter((r) => r.status === 'rejected');
      assert.ok(lost.length > 0, 'some requests were held by the dead worker');
      for (const r of lost) {
        assert.instance(r.reason, RingfenceError);
        assert.is(r.reason.code, 'ERR_RINGFENCE_WORKER_LOST');
        assert.match(r.reason.message, /data state .* unknown/);
      }
      const file = readFileSync(path);
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') assert.ok(file.subarray(i * BS, (i + 1) * BS).equals(pattern(BS, i + 1)), `acknowledged write ${i} is on disk`);
      });
      await afterFault(engine, f);
      assert.is(engine.stats().workerLosses, 1);
      await f.close();
    } finally { await engine.close(); }
  });
}

test('a hung worker is detected by the watchdog; a serialising request parked behind its entries completes', async () => {
  const engine = await Engine.start({ workers: 2, queueDepth: 8, xfsWorkaround: 'always', faults: '0:hang:3', watchdogMs: 300 });
  const path = join(scratch.dir, 'fault-hang');
  try {
    const f = await engine.open(path, { create: true, truncate: true });
    // Requests 0, 2, 4, 6 go to worker 0, which registers 0 and 2 in the table, then hangs on 4;
    // the zero-write below is the eighth request, so it goes to worker 1.
    const first = Array.from({ length: 7 }, (_, i) => f.write(pattern(BS, i + 1), i * BS));
    const settled = Promise.allSettled(first);
    await new Promise((r) => setTimeout(r, 100));
    // A post-EOF zero-write: serialising from its offset to "infinity", so it must wait for
    // the older entries at blocks 0 and 2 that the hung worker holds.
    const t0 = performance.now();
    await f.writeZeroes(0, 16 * BS);
    const waited = performance.now() - t0;
    const results = await settled;
    const lost = results.filter((r) => r.status === 'rejected');
    assert.ok(lost.length >= 1, 'the hung worker held requests');
    assert.ok(lost.every((r) => r.reason.code === 'ERR_RINGFENCE_WORKER_LOST'));
    assert.ok(waited >= 150, `the zero-write waited for the dead worker's entries (${waited.toFixed(0)} ms)`);
    assert.ok(f.stats().waits >= 1, 'it was parked');
    await afterFault(engine, f);
  } finally { await engine.close(); }
});

test('close() while a worker dies with requests in flight: they settle and close() returns', async () => {
  const engine = await Engine.start({ workers: 2, queueDepth: 8, faults: '0:exit:5' });
  const f = await engine.open(join(scratch.dir, 'fault-close'), { create: true, truncate: true });
  const ps = Array.from({ length: 40 }, (_, i) => f.write(pattern(BS, i + 1), i * BS));
  const closing = engine.close();
  let timer;
  const done = await Promise.race([Promise.allSettled(ps).then(() => closing).then(() => true), new Promise((r) => { timer = setTimeout(() => r(false), 15000); })]);
  clearTimeout(timer);
  assert.ok(done, 'close() returned after every request settled');
  const r = await Promise.allSettled(ps);
  assert.ok(r.some((x) => x.status === 'rejected' && x.reason.code === 'ERR_RINGFENCE_WORKER_LOST'), 'the dead worker\'s requests failed');
  assert.ok(r.filter((x) => x.status === 'fulfilled').every((x) => x.value === BS));
});

test("releaseOwnedBy frees exactly the dead worker's slots, even one it had only claimed, and wakes their waiters", async () => {
  const { TrackedTable, AtomicWords, releaseOwnedBy, HEADER_WORDS, SLOT_WORDS, S_STATE, ST_MASK, ST_FREE, ST_CLAIMED, OWNER_SHIFT, ADMITTED, BLOCKED } = await import('../dist/src/table.js');
  const cap = 8, sab = TrackedTable.create(cap), i32 = new Int32Array(sab);
  const dead = new TrackedTable(new AtomicWords(i32), cap), live = new TrackedTable(new AtomicWords(i32), cap);
  const a = dead.register(3, 2, false, 0, 0, 0, 4096);               // admitted write, worker 3
  assert.is(dead.tryAdmit(3, a), ADMITTED);
  const z = live.register(1, 3, true, 0, 0, 0x7fffffff, -4096);       // serialising zero-write behind it, worker 1
  assert.is(live.tryAdmit(1, z), BLOCKED, 'parked behind the dead worker\'s write');
  const keep = live.register(1, 2, false, 0, 1 << 20, 0, (1 << 20) + 4096);
  // Worker 3 dies right after claiming another slot (before publishing its range).
  let claimed = -1;
  for (let i = 0; i < cap && claimed < 0; i++) {
    const at = HEADER_WORDS + i * SLOT_WORDS + S_STATE, st = Atomics.load(i32, at);
    if ((st & ST_MASK) === ST_FREE && Atomics.compareExchange(i32, at, st, (st & ~0xff) | (3 << OWNER_SHIFT) | ST_CLAIMED) === st) claimed = i;
  }
  const wake = releaseOwnedBy(sab, cap, 3);
  assert.ok(wake & (1 << 1), 'worker 1 is woken');
  const states = Array.from({ length: cap }, (_, i) => Atomics.load(i32, HEADER_WORDS + i * SLOT_WORDS + S_STATE) & ST_MASK);
  assert.is(states[claimed], ST_FREE, 'the claimed-only slot is free again');
  assert.is(states.filter((st) => st !== ST_FREE).length, 2, "worker 1's two entries are untouched");
  assert.is(live.tryAdmit(1, z), ADMITTED, 'the parked zero-write is admitted now');
  live.release(z); live.release(keep);
  assert.ok(Array.from({ length: cap }, (_, i) => Atomics.load(i32, HEADER_WORDS + i * SLOT_WORDS + S_STATE) & ST_MASK).every((st) => st === ST_FREE));
});

test('RINGFENCE_FAULTS is validated: a bad spec throws a RangeError that shows the format', async () => {
  const err = await Engine.start({ faults: '0:explode:1' }).catch((e) => e);
  assert.instance(err, RangeError);
  assert.match(err.message, /WORKER:exit\|throw\|hang:AFTER_REQUESTS/);
});

test.run();
