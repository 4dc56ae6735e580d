// A worker_threads Worker with an Engine of its own on a file the parent also has open
// (test/threads.test.mjs). workerData: { role, path, engine (Engine.start options), ... }.
// The parent steps it through a SharedArrayBuffer `ctl` (Int32Array): ctl[0] is the parent's
// "go" counter, ctl[1] this thread's "done" counter.
import { workerData, parentPort } from 'node:worker_threads';
import { Engine } from '../../dist/src/index.js';
import { pattern } from './env.mjs';

const d = workerData;
const ctl = d.ctl ? new Int32Array(d.ctl) : null;

async function waitGo(i) {
  while (Atomics.load(ctl, 0) < i) {
    const r = Atomics.waitAsync(ctl, 0, Atomics.load(ctl, 0), 5000);
    // A pending waitAsync does not keep the thread's event loop alive: a timer does.
    const keep = setTimeout(() => {}, 6000);
    if (r.async) await r.value;
    clearTimeout(keep);
  }
}

function done(i) {
  Atomics.store(ctl, 1, i);
  Atomics.notify(ctl, 1);
}

const engine = await Engine.start(d.engine);
const f = await engine.open(d.path, { create: true });
parentPort.postMessage({ type: 'open', participants: f.stats().tableParticipants });

switch (d.role) {
  case 'write-past-eof': {
    // generic/586's writer: each round, write block 1 (past EOF after the parent's truncate).
    const data = engine.alloc(d.bs);
    data.set(pattern(d.bs, 586));
    for (let i = 1; i <= d.iterations; i++) {
      await waitGo(i);
      await f.write(data, d.bs);
      done(i);
    }
    break;
  }
  case 'zero-past-eof': {
    // The zero-writer of the pair: each round, zero block 0 while the parent writes block 1.
    for (let i = 1; i <= d.iterations; i++) {
      await waitGo(i);
      await f.writeZeroes(0, d.bs);
      done(i);
    }
    break;
  }
  case 'unaligned': {
    // Writes its own byte ranges, which share blocks with the other threads' ranges.
    const chunks = d.chunks; // [offset, length, seed][]
    let next = 0;
    const lane = async () => {
      for (let k = next++; k < chunks.length; k = next++) {
        const [off, len, seed] = chunks[k];
        const n = await f.write(pattern(len, seed), off);
        if (n !== len) throw new Error(`short write ${n}/${len} at ${off}`);
      }
    };
    await waitGo(1);
    await Promise.all(Array.from({ length: d.qd }, lane));
    done(1);
    break;
  }
  case 'hold-serialising': {
    // A zero-write past EOF, serialising to infinity, that takes windowUs in the (emulated)
    // kernel; the parent terminates this thread meanwhile.
    void f.writeZeroes(d.offset, d.bs);
    parentPort.postMessage({ type: 'holding' });
    await new Promise(() => {});
    break;
  }
  default:
    throw new Error(`unknown role ${d.role}`);
}
parentPort.postMessage({ type: 'stats', stats: f.stats() });
await f.close();
await engine.close();
parentPort.postMessage({ type: 'end' });
