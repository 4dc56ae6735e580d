// Child for durability.test.mjs: starts an engine, does I/O, and ends WITHOUT close().
// The process must exit by itself. argv: path
import { Engine } from '../../dist/src/index.js';
import { engineOptions } from './env.mjs';

const engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 8, bufferPoolBytes: 1 << 20 }));
const f = await engine.open(process.argv[2], { create: true, truncate: true });
const buf = engine.alloc(4096);
buf.fill(0x42);
await Promise.all(Array.from({ length: 64 }, (_, i) => f.write(buf, i * 4096)));
const back = Buffer.alloc(4096);
await f.read(back, 4096);
if (back[0] !== 0x42) throw new Error('bad read');
console.log('done without close');
