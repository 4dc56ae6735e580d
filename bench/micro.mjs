// Microbenchmarks of the engine's building blocks (tinybench): ring push/pop, buffer pool
// alloc/free, and the cost of one native batch call. The tracked-request table has its own:
// bench/table.micro.mjs. Build first (npm run build), then: npm run bench:micro
import { Bench } from 'tinybench';
import { BufferPool } from '../dist/src/pool.js';
import { createRing, RING_HDR_WORDS, RING_HEAD, RING_TAIL, SQ_ENTRY } from '../dist/src/shm.js';
import { loadAddon } from '../dist/src/addon.js';

const BATCH = 32;
const bench = new Bench({ time: 1000, warmupTime: 200 });

// Ring: the producer writes 32 entries and publishes the tail, the consumer reads them and
// publishes the head (both sides on one thread: this is the instruction cost, not the wake-up).
const ring = new Int32Array(createRing(256, SQ_ENTRY));
let sink = 0;
bench.add(`ring push+pop x${BATCH}`, () => {
  let tail = Atomics.load(ring, RING_TAIL);
  for (let i = 0; i < BATCH; i++, tail = (tail + 1) | 0) {
    const at = RING_HDR_WORDS + (tail & 255) * SQ_ENTRY;
    for (let w = 0; w < SQ_ENTRY; w++) ring[at + w] = i + w;
  }
  Atomics.store(ring, RING_TAIL, tail);
  let head = Atomics.load(ring, RING_HEAD);
  const end = Atomics.load(ring, RING_TAIL);
  for (; head !== end; head = (head + 1) | 0) sink ^= ring[RING_HDR_WORDS + (head & 255) * SQ_ENTRY + 6];
  Atomics.store(ring, RING_HEAD, head);
});

const pool = new BufferPool(64 << 20);
const offs = new Int32Array(BATCH);
bench.add(`pool alloc+free 4 KiB x${BATCH}`, () => {
  for (let i = 0; i < BATCH; i++) offs[i] = pool.alloc(4096);
  for (let i = 0; i < BATCH; i++) pool.free(offs[i]);
});
bench.add(`pool alloc+free 64 KiB x${BATCH}`, () => {
  for (let i = 0; i < BATCH; i++) offs[i] = pool.alloc(65536);
  for (let i = 0; i < BATCH; i++) pool.free(offs[i]);
});

const addon = loadAddon();
const doorbell = addon.createDoorbell();
const contexts = [];
for (const backend of ['io_uring', 'libaio', 'sync']) {
  let ctx;
  const batch = new Int32Array(BATCH * 8), completions = new Int32Array((BATCH * 3) * 4);
  try {
    ctx = new addon.Context({ backend, depth: BATCH, pool: new Uint8Array(pool.sab), batch, completions, doorbellFd: doorbell, emulateWindowUs: 0 });
  } catch (err) { console.log(`skip ${backend}: ${err.message}`); continue; }
  contexts.push(ctx);
  for (let i = 0; i < BATCH; i++) { batch[i * 8] = 8; batch[i * 8 + 6] = i; } // NOP
  bench.add(`native pump(0) [${backend}]`, () => { sink ^= ctx.pump(0, 0); });
  bench.add(`native pump(${BATCH} NOPs) [${backend}]`, () => {
    let got = ctx.pump(BATCH, 0);
    while (got < BATCH) got += ctx.pump(0, 1);
  });
}

await bench.run();
const rows = bench.tasks.map((t) => {
  const r = t.result, lat = r.latency ?? r;
  return { task: t.name, 'ops/s': Math.round(r.throughput?.mean ?? r.hz), 'mean ns': +(lat.mean * 1e6).toFixed(0), 'p99 ns': +(lat.p99 * 1e6).toFixed(0) };
});
console.table(rows);
for (const c of contexts) c.close();
addon.closeFd(doorbell);
void sink;
