// Unaligned O_DIRECT requests: reads are padded, writes are padded by read-modify-write under
// a serialising table entry, so concurrent unaligned writes into one block lose no byte.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync, writeFileSync, statSync } from 'node:fs';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { scratchDir, pattern, rng, availableBackends, skipUnless, engineOptions } from './helpers/env.mjs';

const scratch = scratchDir('rf-unal-');
test.after(() => scratch.cleanup());
const BACKENDS = availableBackends(loadAddon().probe());

for (const backend of ['io_uring', 'libaio', 'sync']) {
  // A backend this machine cannot run is a counted skip (availableBackends printed why).
  skipUnless(test, BACKENDS.includes(backend) ? null : `backend ${backend} is not available here`)(`${backend}: 300 concurrent unaligned writes sharing blocks lose no byte`, async () => {
    const engine = await Engine.start(engineOptions({ backend, workers: 3, queueDepth: 16 }));
    const path = join(scratch.dir, `share-${backend}`);
    const base = pattern(65536, 5);
    writeFileSync(path, base);
    try {
      const f = await engine.open(path, { direct: true });
      assert.ok(f.info().alignment > 1, 'direct file has an alignment');
      const expect = Buffer.from(base);
      const writes = [], lens = [];
      // Disjoint byte ranges of 37..100 bytes, densely packed: neighbours share blocks.
      let at = 3;
      for (let i = 0; i < 300 && at < 60000; i++) {
        const len = 37 + (i * 13) % 64;
        const data = Buffer.alloc(len, (i % 250) + 1);
        data.copy(expect, at);
        writes.push(f.write(data, at));
        lens.push(len);
        at += len;
      }
      const res = await Promise.all(writes);
      assert.equal(res, lens, 'every write reports its exact length');
      assert.equal(readFileSync(path), expect);
      assert.ok(f.stats().serialising >= writes.length, 'each padded write was serialising');
      await f.close();
    } finally { await engine.close(); }
  });
}

test('unaligned writes past EOF leave the exact size; unaligned reads return the right bytes', async () => {
  const engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 8 }));
  const path = join(scratch.dir, 'eof');
  try {
    const f = await engine.open(path, { create: true, truncate: true, direct: true });
    const model = Buffer.alloc(0);
    let m = model;
    const r = rng(9);
    for (let i = 0; i < 40; i++) {
      const len = 1 + (r() % 3000);
      const off = m.length; // append at EOF, sub-block
      const data = pattern(len, r());
      assert.is(await f.write(data, off), len);
      m = Buffer.concat([m, data]);
      assert.is(statSync(path).size, m.length, `size after append ${i}`);
    }
    assert.equal(readFileSync(path), m);
    for (let i = 0; i < 40; i++) {
      const off = r() % m.length, len = 1 + (r() % 5000);
      const buf = Buffer.alloc(len);
      const n = await f.read(buf, off);
      assert.is(n, Math.min(len, m.length - off));
      assert.equal(buf.subarray(0, n), m.subarray(off, off + n));
    }
    // Overwrite in the middle, unaligned, and read the neighbourhood back.
    const patch = Buffer.alloc(777, 0xab);
    assert.is(await f.write(patch, 1001), 777, 'the unaligned overwrite reports its length');
    patch.copy(m, 1001);
    assert.equal(readFileSync(path), m);
    await f.close();
  } finally { await engine.close(); }
});

test.run();
