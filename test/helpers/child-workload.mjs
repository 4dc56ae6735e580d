// A short engine workload for scripts/sanitize.sh (ASan/UBSan and valgrind runs): writes,
// reads back and verifies, on each requested backend, then closes. argv: dir [ops] [backends]
import { join } from 'node:path';
import { Engine } from '../../dist/src/index.js';
import { engineOptions } from './env.mjs';

const dir = process.argv[2];
const ops = Number(process.argv[3] ?? 200);
const backends = (process.argv[4] ?? 'io_uring,libaio,sync').split(',');
for (const backend of backends) {
  const engine = await Engine.start(engineOptions({ backend, workers: 2, queueDepth: 16, bufferPoolBytes: 1 << 20 }));
  const f = await engine.open(join(dir, `w-${backend}`), { create: true, truncate: true, direct: true });
  const buf = engine.alloc(4096);
  for (let i = 0; i < ops / 2; i++) {
    buf.fill(i & 0xff);
    await f.write(buf, (i % 64) * 4096);
  }
  const back = Buffer.alloc(4096);
  for (let i = Math.max(0, ops / 2 - 64); i < ops / 2; i++) {
    await f.read(back, (i % 64) * 4096);
    if (!back.every((b) => b === (i & 0xff))) throw new Error(`${backend}: block ${i % 64} mismatch`);
  }
  await f.writev([buf, Buffer.alloc(4096, 7)], 0);
  await f.writeZeroes(8192, 4096);
  await f.read(Buffer.alloc(100), 5); // padded read
  await f.write(Buffer.alloc(100, 3), 4097); // padded RMW write
  await f.flush();
  await f.truncate(65536);
  await f.close();
  await engine.close();
  console.log(`workload ${backend}: ${ops} ops ok`);
}
