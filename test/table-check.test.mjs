// Interleaving checker and real-threads stress test for src/table.ts.
// Run after `npx tsc -p tsconfig.json`: node test/table-check.test.mjs
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Worker } from 'node:worker_threads';
import {
  TrackedTable, AtomicWords, FULL, ADMITTED, BLOCKED,
  HEADER_WORDS, SLOT_WORDS, S_STATE, GEN_SHIFT, GEN_MASK, ST_ACTIVE,
} from '../dist/src/table.js';
import { explore, pctRun, END_MAX, CheckFailure, split64 } from './helpers/model.mjs';

const K = 4096n;
const MAXEND = END_MAX(4096); // XFS post-EOF workaround: 2^63-1 aligned down
const req = (start, end, ser) => ({ start: BigInt(start), end: BigInt(end), ser });

function report(r) {
  console.log(`    ${r.name}: ${r.states} states, ${r.transitions} transitions, ${r.finals} final states, max depth ${r.maxDepth}, ${r.parks} parks, ${r.ms} ms`);
}

// ---------------------------------------------------------------------------
// Exhaustive

const exhaustive = [
  { name: '2x2 cap2 ser/non-ser, MAXEND', capacity: 2, threads: [
    [req(0, K, true), req(1000, 2000, false)],
    [req(0, 512, false), { start: 2048n, end: MAXEND, ser: true }]] },
  { name: '2x2 cap1 (FULL)', capacity: 1, threads: [
    [req(0, 100, false), req(50, 150, true)],
    [req(0, K, true), req(K, 2n * K, false)]] },
  { name: '3x1 cap1 (FULL)', capacity: 1, threads: [
    [req(0, 2n * K, true)], [req(K, 5000, false)], [{ start: K, end: MAXEND, ser: true }]] },
];

for (const scn of exhaustive) {
  test(`exhaustive: ${scn.name}`, () => {
    const r = explore(scn, { maxStates: 2e6 });
    report(r);
    assert.ok(r.finals > 0);
    assert.ok(r.parks > 0, 'scenario should make someone park');
  });
}

// ---------------------------------------------------------------------------
// PCT (randomised, fixed seeds)

const pct = [
  { name: '3x3 cap2', capacity: 2, threads: [
    [req(0, K, true), req(100, 200, false), req(K, 2n * K, false)],
    [req(0, 512, false), { start: 2048n, end: MAXEND, ser: true }, req(0, 100, false)],
    [req(3000, 5000, true), req(0, 8192, false), req(4096, 4097, true)]] },
  { name: '4x3 cap3', capacity: 3, threads: [
    [req(0, K, true), req(100, 200, false), req(K, 2n * K, false)],
    [req(0, 512, false), { start: 2048n, end: MAXEND, ser: true }, req(0, 100, false)],
    [req(3000, 5000, true), req(0, 8192, false), req(4096, 4097, true)],
    [req(8192, 9000, false), req(0, 1, true), { start: 0n, end: MAXEND, ser: true }]] },
];
for (const scn of pct) {
  test(`PCT: ${scn.name}`, () => {
    const t0 = performance.now();
    const runs = 3000;
    let maxSteps = 0, parks = 0;
    for (let seed = 1; seed <= runs; seed++) {
      const r = pctRun(scn, seed * 7919, { d: 1 + (seed % 4), k: 150 * scn.threads.length });
      if (r.steps > maxSteps) maxSteps = r.steps;
      parks += r.parks;
    }
    console.log(`    ${scn.name}: ${runs} runs, max ${maxSteps} steps, ${parks} parks, ${Math.round(performance.now() - t0)} ms`);
  });
}

// ---------------------------------------------------------------------------
// Mutation checks: the checker must catch a weakened protocol.

const mutScn = (Table) => ({ name: 'mutant 2x1', capacity: 2, Table, threads: [
  [req(0, K, true)], [req(0, 512, false)]] });
const mut2Scn = (Table) => ({ name: 'mutant 2x2', capacity: 2, Table, threads: [
  [req(0, K, true), req(0, K, false)], [req(0, 512, false), req(100, 200, true)]] });

function expectCaught(scn, kinds) {
  try {
    explore(scn);
  } catch (e) {
    if (!(e instanceof CheckFailure)) throw e;
    console.log(`    caught: ${e.message.split('\n')[0]}`);
    assert.ok(kinds.includes(e.kind), `unexpected failure kind ${e.kind}`);
    return;
  }
  assert.unreachable('the checker did not catch the mutant');
}

class NoRecheck extends TrackedTable {
  // Returns BLOCKED without re-checking the slot after registering interest.
  recheckAfterInterest() { return true; }
}
class NoSerCount extends TrackedTable {
  enterSerialising() {}
  leaveSerialising() {}
}
class IgnoreRanged extends TrackedTable {
  ignorable(st) { return st !== 3; }
}

test('mutant (a): no re-check after registering interest -> lost wake-up', () => {
  expectCaught(mutScn(NoRecheck), ['deadlock']);
});
test('mutant (b1): serialisingInFlight never incremented -> conflicting admission', () => {
  expectCaught(mutScn(NoSerCount), ['conflicting admission', 'order violation', 'serialising exclusion']);
});
test('mutant (b2): scan ignores RANGED slots -> conflicting admission', () => {
  expectCaught(mut2Scn(IgnoreRanged), ['conflicting admission', 'order violation', 'serialising exclusion']);
});
test('unmutated protocol passes the mutant scenarios', () => {
  report(explore(mutScn(TrackedTable)));
  report(explore(mut2Scn(TrackedTable)));
});

// ---------------------------------------------------------------------------
// Sequential API sanity

test('API: handles, tickets, counters, FULL wake mask', () => {
  const t = new TrackedTable(new AtomicWords(new Int32Array(TrackedTable.create(2))), 2);
  const [mh, ml] = split64(MAXEND);
  const a = t.register(0, 3, true, 0, 0, mh, ml);
  assert.ok(a >= 0);
  assert.is(t.serialisingInFlight(), 1);
  assert.is(t.tryAdmit(0, a), ADMITTED);
  const b = t.register(1, 1, false, 1, 0, 1, 4096); // [2^32, 2^32+4096): inside [0, MAXEND)
  assert.ok(b >= 0 && t.ticketOf(b) > t.ticketOf(a));
  assert.is(t.tryAdmit(1, b), BLOCKED);
  assert.is(t.register(2, 1, false, 0, 0, 0, 1), FULL);
  assert.is(t.inFlight(), 2);
  assert.is(t.release(a), 0b110); // worker 1 on the slot, worker 2 on the table
  assert.is(t.serialisingInFlight(), 0);
  assert.is(t.tryAdmit(1, b), ADMITTED);
  assert.is(t.release(b), 0);
  assert.is(t.highWater(), 2);
  assert.throws(() => t.release(b));
  // Unsigned lo compare: [0x80000000, 0x80001000) vs [0, 0x1000) do not overlap.
  const c = t.register(0, 3, true, 0, 0x80000000 | 0, 0, 0x80001000 | 0);
  const d = t.register(1, 3, true, 0, 0, 0, 0x1000);
  assert.is(t.tryAdmit(1, d), ADMITTED);
  assert.is(t.tryAdmit(0, c), ADMITTED);
  t.release(c); t.release(d);
});

// ---------------------------------------------------------------------------
// Real threads

async function hammer({ workers, capacity, iters, serPct, seedGen }) {
  const sab = TrackedTable.create(capacity);
  if (seedGen) {
    // Start every slot a few hundred releases before the generation wraps.
    const i32 = new Int32Array(sab);
    for (let s = 0; s < capacity; s++) i32[HEADER_WORDS + s * SLOT_WORDS + S_STATE] = ((GEN_MASK - 300 - s) & GEN_MASK) << GEN_SHIFT;
  }
  const bells = new SharedArrayBuffer(32 * 4);
  const occ = new SharedArrayBuffer(32 * 4);
  const stats = new SharedArrayBuffer(4 * 4);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: workers }, (_, w) => new Promise((resolve, reject) => {
    const wk = new Worker(new URL('./helpers/model.mjs', import.meta.url), {
      workerData: { role: 'hammer', sab, bells, occ, stats, capacity, worker: w, iters, seed: 1000 + w, serPct },
    });
    wk.on('message', () => resolve());
    wk.on('error', reject);
    wk.on('exit', (c) => (c === 0 ? resolve() : reject(new Error(`worker exit ${c}`))));
  })));
  const st = new Int32Array(stats);
  const t = new TrackedTable(new AtomicWords(new Int32Array(sab)), capacity);
  const ms = Math.round(performance.now() - t0);
  console.log(`    ${workers} workers x ${iters} (cap ${capacity}, ${serPct}% serialising): ${st[0]} conflicts, ${st[1]} BLOCKED, ${st[2]} FULL, high water ${t.highWater()}, ${ms} ms`);
  assert.is(st[0], 0, 'conflicting requests overlapped');
  assert.is(t.inFlight(), 0);
  assert.is(t.serialisingInFlight(), 0);
  assert.ok(t.highWater() <= capacity);
  return st;
}

test('real threads: conflicts and FULL', async () => {
  const st = await hammer({ workers: 3, capacity: 2, iters: 100000, serPct: 20 });
  assert.ok(st[1] > 0);
});
test('real threads: slot churn across generation wrap (ABA)', async () => {
  await hammer({ workers: 2, capacity: 2, iters: 3000000, serPct: 2, seedGen: true });
});

test.run();
