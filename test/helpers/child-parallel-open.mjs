// Child for lifetimes.test.mjs: opens files in parallel, writes, closes them in parallel (and
// one twice at once), then prints. The bug it guards against: the first control-message ack
// un-ref'd the worker port while another message still waited, and the process exited
// silently with code 13 before printing. argv: dir backend
import { join } from 'node:path';
import { Engine } from '../../dist/src/index.js';
import { engineOptions } from './env.mjs';

const [dir, backend] = process.argv.slice(2);
const engine = await Engine.start(engineOptions({ backend, workers: 2 }));
const names = ['a', 'b', 'c', 'd'].map((n) => join(dir, `par-${backend}-${process.pid}-${n}`));
const files = await Promise.all(names.map((n) => engine.open(n, { create: true, truncate: true })));
await Promise.all(files.map((f, i) => f.write(Buffer.alloc(4096, i + 1), 0)));
await Promise.all([...files.map((f) => f.close()), files[0].close()]);
const again = await Promise.all(names.map((n) => engine.open(n)));
await Promise.all(again.map((f) => f.close()));
await engine.close();
console.log('all done');
