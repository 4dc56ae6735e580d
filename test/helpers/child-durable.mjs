// Child for durability.test.mjs: writes BLOCKS known blocks, flush()es, prints "flushed N",
// then keeps writing unflushed blocks (printing "more") until the parent kills it.
// argv: path, direct (1|0)
import { Engine } from '../../dist/src/index.js';
import { pattern, engineOptions } from './env.mjs';

const [path, directArg] = process.argv.slice(2);
const BS = 4096, BLOCKS = 256;
const engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 32, bufferPoolBytes: 4 << 20 }));
const f = await engine.open(path, { create: true, truncate: true, direct: directArg === '1' });
const acked = await Promise.all(Array.from({ length: BLOCKS }, (_, i) => f.write(pattern(BS, i + 1), i * BS)));
if (!acked.every((n) => n === BS)) throw new Error('a write was short');
await f.flush();
process.stdout.write(`flushed ${BLOCKS}\n`);
for (let i = BLOCKS; ; i++) {
  await f.write(pattern(BS, i + 1), (i % 4096) * BS).catch(() => {});
  if (i === BLOCKS + 64) process.stdout.write('more\n');
}
