// Child for inputs.test.mjs: starts bounced reads, detaches the caller's buffers while the
// reads are in flight, and prints "survived" if the process and the engine live on.
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { Engine } from '../../dist/src/index.js';
import { engineOptions } from './env.mjs';

const dir = process.argv[2];
const path = join(dir, 'detach-child');
writeFileSync(path, Buffer.alloc(1 << 20, 0x5a));
const engine = await Engine.start(engineOptions({ workers: 1, queueDepth: 8, bufferPoolBytes: 1 << 20 }));
const f = await engine.open(path, { direct: false });
const results = [];
for (let i = 0; i < 32; i++) {
  const ab = new ArrayBuffer(4096);
  const p = f.read(new Uint8Array(ab), i * 4096).then((n) => `ok ${n}`, (e) => `rejected ${e.code}`);
  structuredClone(ab, { transfer: [ab] }); // detach while in flight
  results.push(p);
}
const settled = await Promise.all(results);
const back = Buffer.alloc(4096);
await f.read(back, 0);
if (back[0] !== 0x5a) throw new Error('engine broken after detach');
await f.close();
await engine.close();
console.log(`survived: ${[...new Set(settled)].join(', ')}; pool used ${engine.stats().pool.used}`);
