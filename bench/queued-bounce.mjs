// How long N ordinary-Buffer 4 KiB writes take when they must queue for bounce blocks (the
// default 64 MiB pool holds 16,384 of them). Before the O(1) pool queue the time grew with N^2
// (every pop was Array.shift()). Usage: node bench/queued-bounce.mjs [N...]
import { join } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { Engine } from '../dist/src/index.js';

const sizes = process.argv.slice(2).map(Number);
const dir = mkdtempSync('/var/tmp/rf-qb-');
try {
  for (const n of sizes.length ? sizes : [100_000, 200_000, 400_000]) {
    const engine = await Engine.start({ workers: 1 });
    const f = await engine.open(join(dir, 'f'), { create: true, truncate: true });
    const src = Buffer.alloc(4096, 1);
    const t0 = performance.now();
    const all = [];
    for (let i = 0; i < n; i++) all.push(f.write(src, (i % 4096) * 4096));
    await Promise.all(all);
    console.log(`${n} queued bounced writes: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    await f.close();
    await engine.close();
  }
} finally { rmSync(dir, { recursive: true, force: true }); }
