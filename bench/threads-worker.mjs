// The measuring side of bench/threads.mjs: QD concurrent loops of 4 KiB random reads on one
// Engine, counted over a wall-clock window shared by every thread. Imported by the main thread
// (its own cases) and run as a worker_threads Worker (one Engine per thread).
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { readlinkSync } from 'node:fs';
import { Engine } from '../dist/src/index.js';

export const BS = 4096;

/** Wall-clock milliseconds comparable across threads (performance.now() is per thread). */
export const wallNow = () => performance.timeOrigin + performance.now();

/** This thread's kernel task id (for its CPU time in /proc/self/task/TID/schedstat). */
export function threadId() {
  try { return Number(readlinkSync('/proc/thread-self').split('/').pop()); } catch { return 0; }
}

/**
 * Starts an Engine, opens `path` and allocates one pool buffer per loop. The file is opened
 * read-only and O_DIRECT; tracking follows the engine options (on by default).
 */
export async function setup(path, qd, engineOptions) {
  const engine = await Engine.start(engineOptions);
  try {
    const f = await engine.open(path, { direct: true, readOnly: true });
    const bufs = Array.from({ length: qd }, () => engine.alloc(BS));
    return { engine, f, bufs };
  } catch (err) { await engine.close(); throw err; }
}

/**
 * `bufs.length` loops, each awaiting one read at a time from the moment it is called until
 * `endAt` (wallNow() time); a read is counted when it completes inside [startAt, endAt).
 * Returns the count. Offsets: xorshift32 per loop, over the whole file.
 */
export async function readLoops(f, bufs, blocks, seed, startAt, endAt) {
  let counted = 0;
  await Promise.all(bufs.map(async (buf, q) => {
    let s = (seed * 7919 + q * 104729 + 1) >>> 0 || 1;
    for (;;) {
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
      const n = await f.read(buf, (s % blocks) * BS);
      if (n !== BS) throw new Error(`short read: ${n} of ${BS} bytes`);
      const t = wallNow();
      if (t >= endAt) break;
      if (t >= startAt) counted++;
    }
  }));
  return counted;
}

/** The engine's I/O context counters so far: ops, and pumps that submitted (one enter each). */
export function engineCounters(engine) {
  const w = engine.stats().workers;
  return { ops: w.reduce((a, x) => a + x.ops, 0), batches: w.reduce((a, x) => a + x.batches, 0) };
}

export async function teardown({ engine, f, bufs }) {
  for (const b of bufs) engine.free(b);
  await f.close();
  await engine.close();
}

/** Waits until ctl[i] is not 0. A pending waitAsync does not keep the event loop alive: a timer does. */
export async function waitNonZero(ctl, i) {
  while (Atomics.load(ctl, i) === 0) {
    const keep = setTimeout(() => {}, 2000);
    const r = Atomics.waitAsync(ctl, i, 0, 1000);
    if (r.async) await r.value;
    clearTimeout(keep);
  }
}

// ---- the worker thread ------------------------------------------------------------------

if (!isMainThread && workerData?.role === 'ringfence-threads-bench') {
  const d = workerData;
  const ctl = new Int32Array(d.ctl);    // [0]: go (set by the main thread)
  const times = new Float64Array(d.times); // [0]: startAt, [1]: endAt (wallNow() ms)
  const s = await setup(d.path, d.qd, d.engine);
  parentPort.postMessage({ type: 'ready', tid: threadId(), info: { mode: s.engine.info().mode, backend: s.engine.info().workers[0]?.backend, tracked: s.f.info().tracked } });
  await waitNonZero(ctl, 0);
  const ops = await readLoops(s.f, s.bufs, d.blocks, d.seed, times[0], times[1]);
  // Every thread still has the file open here: the table's participants count them all.
  parentPort.postMessage({ type: 'result', ops, stats: s.f.stats(), engine: engineCounters(s.engine) });
  await new Promise((r) => parentPort.once('message', r)); // 'close': every thread has reported
  await teardown(s);
  parentPort.postMessage({ type: 'closed' });
}
