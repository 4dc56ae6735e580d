// Microbenchmark of the tracked-request table: register + tryAdmit + release.
// Build first (npx tsc -p tsconfig.json), then: node bench/table.micro.mjs
// Uses tinybench when installed (npm install --no-save tinybench@5), else an hrtime loop.
// Each measured call runs BATCH register/tryAdmit/release triples; times are per triple.
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { TrackedTable, AtomicWords, ADMITTED, FULL } from '../dist/src/table.js';

const CAP = 64;
const BATCH = 100;

if (!isMainThread) {
  // Contender: loop on the same table with a disjoint, non-serialising range until told to stop.
  const { sab, stop, ser } = workerData;
  const t = new TrackedTable(new AtomicWords(new Int32Array(sab)), CAP);
  const st = new Int32Array(stop);
  let n = 0;
  while (Atomics.load(st, 0) === 0) {
    for (let i = 0; i < 1000; i++) {
      const h = t.register(1, 2, ser, 0, 1 << 20, 0, (1 << 20) + 4096);
      if (h === FULL) continue;
      t.takeWakeups();
      while (t.tryAdmit(1, h) !== ADMITTED) { /* disjoint: never blocks */ }
      t.release(h);
      n++;
    }
  }
  Atomics.store(st, 1, n);
} else {
  const sab = TrackedTable.create(CAP);
  const table = new TrackedTable(new AtomicWords(new Int32Array(sab)), CAP);
  let sink = 0;
  const triple = () => {
    for (let i = 0; i < BATCH; i++) {
      const h = table.register(0, 1, false, 0, 0, 0, 4096);
      sink ^= table.tryAdmit(0, h);
      sink ^= table.release(h);
    }
  };
  const tripleSer = () => {
    for (let i = 0; i < BATCH; i++) {
      const h = table.register(0, 3, true, 0, 0, 0, 4096);
      sink ^= table.tryAdmit(0, h);
      sink ^= table.release(h);
    }
  };

  let tinybench = null;
  try { tinybench = await import('tinybench'); } catch { /* fall back */ }

  async function measure(name, fn) {
    if (tinybench) {
      const bench = new tinybench.Bench({ time: 1500, warmupTime: 300 });
      bench.add(name, fn);
      await bench.run();
      const r = bench.tasks[0].result;
      const lat = r.latency ?? r; // tinybench 5: result.latency.{mean,p50} in ms
      const mean = (lat.mean * 1e6) / BATCH, median = ((lat.p50 ?? lat.median) * 1e6) / BATCH;
      return { name, opsPerSec: Math.round(1e9 / mean), meanNs: +mean.toFixed(1), medianNs: +median.toFixed(1) };
    }
    for (let i = 0; i < 20000; i++) fn();
    const samples = [];
    const end = performance.now() + 1500;
    while (performance.now() < end) {
      const t0 = process.hrtime.bigint();
      fn();
      samples.push(Number(process.hrtime.bigint() - t0) / BATCH);
    }
    samples.sort((a, b) => a - b);
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    return { name, opsPerSec: Math.round(1e9 / mean), meanNs: +mean.toFixed(1), medianNs: +samples[samples.length >> 1].toFixed(1) };
  }

  const rows = [];
  rows.push(await measure('uncontended, non-serialising (fast path)', triple));
  // The same on the memory engines really use: a file's process-wide table from the addon's
  // registry (native/registry.h), an external ArrayBuffer rather than a SharedArrayBuffer.
  {
    const { Engine } = await import('../dist/src/index.js');
    const { mkdtempSync, rmSync } = await import('node:fs');
    const dir = mkdtempSync('/var/tmp/rf-micro-');
    const engine = await Engine.start({ bufferPoolBytes: 1 << 20, queueDepth: 4, tableCapacity: CAP });
    try {
      const f = await engine.open(`${dir}/t`, { create: true });
      const [ident] = engine.identities.values();
      const ts = engine.addon.tableStats(ident.dev, ident.ino);
      const reg = new TrackedTable(new AtomicWords(new Int32Array(engine.addon.tableView(ts.id))), ts.capacity);
      const bit = 5; // a participant bit nobody else holds here
      rows.push(await measure('uncontended, non-serialising, registry table memory', () => {
        for (let i = 0; i < BATCH; i++) {
          const h = reg.register(bit, 1, false, 0, 0, 0, 4096);
          sink ^= reg.tryAdmit(bit, h);
          sink ^= reg.release(h);
        }
      }));
      await f.close();
    } finally {
      await engine.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  rows.push(await measure('uncontended, serialising (scan)', tripleSer));

  // A serialising entry far away, held for the whole measurement: every
  // registration now takes the slow path and scans.
  const held = table.register(2, 3, true, 1, 0, 1, 4096);
  if (table.tryAdmit(2, held) !== ADMITTED) throw new Error('setup');
  rows.push(await measure('serialising entry present (non-overlapping)', triple));
  table.release(held);

  for (const ser of [false, true]) {
    const stop = new SharedArrayBuffer(8);
    const w = new Worker(new URL(import.meta.url), { workerData: { sab, stop, ser } });
    await new Promise((r) => setTimeout(r, 100));
    rows.push(await measure(`two threads contending (other thread ${ser ? 'serialising' : 'non-serialising'}, disjoint)`, triple));
    Atomics.store(new Int32Array(stop), 0, 1);
    await new Promise((r) => w.on('exit', r));
    rows[rows.length - 1].otherThreadTriples = new Int32Array(stop)[1];
  }
  console.log(`tracked-request table, capacity ${CAP}, ${tinybench ? 'tinybench' : 'hrtime loop'}, batches of ${BATCH}, times per register+tryAdmit+release`);
  console.table(rows);
  console.log(`high water ${table.highWater()}, in flight ${table.inFlight()} (sink ${sink & 1})`);
}
