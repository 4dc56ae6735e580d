// Starts Worker threads that do I/O through inline engines of their own (writes, opens and
// closes of files other threads also have open) and terminates each at some point of it.
// Prints "survived N" if the process lives through all of them. Used by test/inline.test.mjs.
//   node test/helpers/child-terminate.mjs DIR N
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Engine } from '../../dist/src/index.js';

if (isMainThread) {
  const [dir, n] = [process.argv[2], Number(process.argv[3] ?? 40)];
  for (let i = 0; i < n; i++) {
    const w = new Worker(new URL(import.meta.url), { workerData: { dir, i } });
    await new Promise((r) => w.once('message', r));
    await new Promise((r) => setTimeout(r, (i * 7) % 40));
    await w.terminate();
  }
  console.log(`survived ${n}`);
} else {
  const { dir, i } = workerData;
  const e = await Engine.start({ queueDepth: 16, bufferPoolBytes: 4 << 20 });
  const f = await e.open(`${dir}/f${i % 3}`, { create: true });
  parentPort.postMessage('go');
  const buf = Buffer.alloc(1000);
  for (;;) {
    const ps = [];
    for (let k = 0; k < 16; k++) ps.push(f.write(buf, k * 777));
    await Promise.all(ps);
    const g = await e.open(`${dir}/f${(i + 1) % 3}`, { create: true });
    await g.write(buf, 5);
    await g.close();
  }
}
