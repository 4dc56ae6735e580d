// BufferPool (src/pool.ts) on its own: the buddy allocator behind engine.alloc() and the
// bounce buffers. Only its public behaviour is tested (alloc, free, blockSize, used, peak,
// maxAlloc, bytes), so the tests hold whatever bookkeeping it keeps inside.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BufferPool } from '../dist/src/pool.js';
import { rng, scratchDir, pattern } from './helpers/env.mjs';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';

const URING = loadAddon().probe().ioUring.ok;

const PAGE = 4096, KiB = 1024, MiB = 1024 * KiB;

/** The block alloc(size) must hand out: the smallest power-of-two number of pages >= size. */
function expectedBlock(size) {
  let b = PAGE;
  while (b < size) b *= 2;
  return b;
}

/** free() of something that is not a live block throws (any Error: the message may change). */
function throwsNotAllocated(fn, what) {
  assert.throws(fn, (e) => e instanceof Error, what);
}

(URING ? test : test.skip)('io_uring registers the pool in 4 MiB chunks on first use: I/O from and into every chunk is exact, in both modes', async () => {
  const scratch = scratchDir('rf-chunks-');
  try {
    for (const mode of ['inline', 'workers']) {
      const e = await Engine.start({ backend: 'io_uring', mode, ...(mode === 'workers' ? { workers: 2 } : {}), bufferPoolBytes: 32 << 20 });
      try {
        const f = await e.open(`${scratch.dir}/${mode}`, { create: true });
        // Eight blocks of 1 MiB spread over the chunks (the buddy allocator fills from the bottom,
        // so take 4 MiB blocks and use the first 1 MiB of each: one per chunk).
        const blocks = [];
        for (let i = 0; i < 8; i++) blocks.push(e.alloc(4 << 20));
        const data = blocks.map((b, i) => { const p = pattern(1 << 20, 100 + i); b.set(p, 0); return p; });
        assert.equal(await Promise.all(blocks.map((b, i) => f.write(b.subarray(0, 1 << 20), i << 20))), blocks.map(() => 1 << 20));
        for (const b of blocks) b.fill(0);
        // Read each stripe back into another chunk's block.
        assert.equal(await Promise.all(blocks.map((b, i) => f.read(b.subarray(0, 1 << 20), ((i + 3) % 8) << 20))), blocks.map(() => 1 << 20));
        blocks.forEach((b, i) => assert.ok(Buffer.from(b.subarray(0, 1 << 20)).equals(data[(i + 3) % 8]), `${mode}: block ${i}`));
        assert.ok(e.info().workers?.every?.((w) => w.info.fixedBuffers) ?? e.info().contexts.every((c) => c.info.fixedBuffers), 'fixed buffers in use');
        for (const b of blocks) e.free(b);
        await f.close();
      } finally { await e.close(); }
    }
  } finally { scratch.cleanup(); }
});

test('alloc/free round trips: block sizes round up to powers of two pages; blockSize and used follow', () => {
  const pool = new BufferPool(1 * MiB);
  assert.is(pool.used, 0);
  for (const size of [1, 100, 4095, 4096, 4097, 8192, 8193, 12288, 65536, 65537, 300 * KiB, 1 * MiB]) {
    const off = pool.alloc(size);
    assert.ok(off >= 0, `alloc(${size})`);
    assert.is(off % PAGE, 0, `alloc(${size}) at ${off} is 4 KiB-aligned`);
    assert.is(pool.blockSize(off), expectedBlock(size), `blockSize after alloc(${size})`);
    assert.ok(off + pool.blockSize(off) <= pool.size, 'the block lies inside the pool');
    assert.is(pool.used, expectedBlock(size));
    // The block is usable memory: fill it and read it back.
    pool.bytes.fill(0xa5, off, off + size);
    assert.ok(pool.bytes.subarray(off, off + size).every((b) => b === 0xa5));
    pool.free(off);
    assert.is(pool.blockSize(off), -1, 'freed');
    assert.is(pool.used, 0);
  }
});

test('every block is 4096-aligned and inside the pool, for every size and pool size', () => {
  for (const pages of [1, 2, 3, 7, 10, 64, 100, 257]) {
    const pool = new BufferPool(pages * PAGE);
    const live = [];
    const r = rng(pages);
    for (let i = 0; i < 200; i++) {
      const size = 1 + (r() % (4 * PAGE));
      const off = pool.alloc(size);
      if (off === -1) { if (live.length) pool.free(live.splice(r() % live.length, 1)[0]); continue; }
      assert.is(off % PAGE, 0, `pool of ${pages} pages: offset ${off}`);
      assert.ok(off + pool.blockSize(off) <= pages * PAGE, `pool of ${pages} pages: block ${off}+${pool.blockSize(off)}`);
      live.push(off);
    }
    for (const off of live) pool.free(off);
    assert.is(pool.used, 0);
  }
});

test('buddies merge back: after freeing every page in any order, one maximal block is free again', () => {
  for (const [size, seed] of [[1 * MiB, 1], [1 * MiB, 2], [256 * KiB, 3]]) {
    const pool = new BufferPool(size);
    assert.is(pool.maxAlloc, size, 'a power-of-two pool is one maximal block');
    const pages = [];
    for (let i = 0; i < size / PAGE; i++) {
      const off = pool.alloc(PAGE);
      assert.ok(off >= 0, `page ${i}`);
      pages.push(off);
    }
    assert.is(new Set(pages).size, pages.length, 'every page handed out once');
    assert.is(pool.used, size);
    assert.is(pool.alloc(1), -1, 'full');
    // Free in a shuffled order.
    const r = rng(seed);
    for (let i = pages.length - 1; i > 0; i--) { const j = r() % (i + 1); [pages[i], pages[j]] = [pages[j], pages[i]]; }
    for (const off of pages) pool.free(off);
    assert.is(pool.used, 0);
    const whole = pool.alloc(size);
    assert.is(whole, 0, 'the whole pool is one block again');
    assert.is(pool.blockSize(whole), size);
    assert.is(pool.alloc(1), -1);
    pool.free(whole);
  }
  // A pool that is not a power of two: 10 pages = one 8-page and one 2-page maximal block.
  const pool = new BufferPool(10 * PAGE);
  assert.is(pool.maxAlloc, 8 * PAGE);
  const pages = Array.from({ length: 10 }, () => pool.alloc(PAGE));
  assert.ok(pages.every((o) => o >= 0));
  assert.is(pool.alloc(1), -1);
  for (const off of pages.reverse()) pool.free(off);
  const big = pool.alloc(8 * PAGE), small = pool.alloc(2 * PAGE);
  assert.ok(big >= 0 && small >= 0, 'both maximal blocks are whole again');
  assert.is(pool.blockSize(big), 8 * PAGE);
  assert.is(pool.blockSize(small), 2 * PAGE);
  assert.is(pool.alloc(1), -1);
});

test('exhaustion returns -1 and changes nothing', () => {
  const pool = new BufferPool(64 * KiB);
  assert.is(pool.alloc(64 * KiB + 1), -1, 'larger than the pool');
  assert.is(pool.alloc(pool.maxAlloc * 2), -1);
  assert.is(pool.used, 0);
  assert.is(pool.peak, 0, 'a refused allocation is not counted');
  const a = pool.alloc(32 * KiB), b = pool.alloc(16 * KiB), c = pool.alloc(8 * KiB), d = pool.alloc(4 * KiB), e = pool.alloc(4 * KiB);
  assert.ok([a, b, c, d, e].every((o) => o >= 0));
  assert.is(pool.used, 64 * KiB);
  assert.is(pool.alloc(1), -1, 'full');
  assert.is(pool.used, 64 * KiB);
  // Fragmented: 20 KiB free, as a 16 KiB block and a 4 KiB page, so no 32 KiB block.
  pool.free(d);
  pool.free(b);
  assert.is(pool.used, 44 * KiB);
  assert.is(pool.alloc(32 * KiB), -1, 'no 32 KiB block free');
  assert.is(pool.used, 44 * KiB);
  const again = pool.alloc(16 * KiB);
  assert.ok(again >= 0, 'the freed 16 KiB block is reused');
  assert.is(pool.alloc(8 * KiB), -1, 'only a single page is left');
  assert.ok(pool.alloc(PAGE) >= 0);
  assert.is(pool.alloc(1), -1);
});

test('double free and foreign offsets throw, and leave the pool as it was', () => {
  const pool = new BufferPool(64 * KiB);
  const a = pool.alloc(8 * KiB), b = pool.alloc(PAGE);
  const used = pool.used, peak = pool.peak;
  pool.free(b);
  throwsNotAllocated(() => pool.free(b), 'double free');
  const foreign = [a + PAGE /* inside a's block */, a + 1, 100, -PAGE, -1, 64 * KiB, 1 << 30, 0.5, NaN, Infinity];
  for (const off of foreign) throwsNotAllocated(() => pool.free(off), `free(${off})`);
  // Never allocated, though page-aligned and inside the pool.
  const never = [0, 16 * KiB, 32 * KiB, 60 * KiB].find((o) => o !== a && o !== b);
  throwsNotAllocated(() => pool.free(never), `free(${never}), never allocated`);
  assert.is(pool.used, used - PAGE, 'only the real free counted');
  assert.is(pool.peak, peak);
  assert.is(pool.blockSize(a), 8 * KiB, 'a is still allocated');
  pool.free(a);
  throwsNotAllocated(() => pool.free(a), 'double free of a');
  assert.is(pool.used, 0);
  assert.is(pool.alloc(64 * KiB), 0, 'nothing leaked or got corrupted');
});

test('blockSize: the block capacity at a block start, -1 anywhere else', () => {
  const pool = new BufferPool(64 * KiB);
  const a = pool.alloc(5000);
  assert.is(pool.blockSize(a), 8 * KiB);
  for (const off of [a + PAGE, a + 1, -PAGE, 64 * KiB, 1 << 30, 0.5, NaN]) assert.is(pool.blockSize(off), -1, `blockSize(${off})`);
  const free = [0, 8 * KiB, 16 * KiB, 32 * KiB].find((o) => o !== a);
  assert.is(pool.blockSize(free), -1, 'a free block');
  pool.free(a);
  assert.is(pool.blockSize(a), -1);
});

test('used is the sum of live block sizes; peak is its high-water mark', () => {
  const pool = new BufferPool(256 * KiB);
  assert.is(pool.peak, 0);
  const a = pool.alloc(100);          // 4 KiB
  const b = pool.alloc(10 * KiB);     // 16 KiB
  const c = pool.alloc(64 * KiB);     // 64 KiB
  assert.is(pool.used, 84 * KiB);
  assert.is(pool.peak, 84 * KiB);
  pool.free(b);
  assert.is(pool.used, 68 * KiB);
  assert.is(pool.peak, 84 * KiB, 'peak does not fall');
  const d = pool.alloc(8 * KiB);
  assert.is(pool.used, 76 * KiB);
  assert.is(pool.peak, 84 * KiB, 'below the old peak');
  const e = pool.alloc(128 * KiB);
  assert.is(pool.used, 204 * KiB);
  assert.is(pool.peak, 204 * KiB, 'a new high-water mark');
  for (const o of [a, c, d, e]) pool.free(o);
  assert.is(pool.used, 0);
  assert.is(pool.peak, 204 * KiB);
});

test('randomized alloc/free against a model: no overlapping live blocks, exact accounting, all free at the end', () => {
  for (const [pages, seed] of [[256, 11], [100, 12], [37, 13], [1024, 14]]) {
    const size = pages * PAGE;
    const pool = new BufferPool(size);
    const r = rng(seed);
    const live = new Map(); // offset -> { block, id }
    let used = 0, peak = 0, refusals = 0;
    const stamp = (off, id) => { new DataView(pool.bytes.buffer, off).setUint32(0, id); new DataView(pool.bytes.buffer, off + live.get(off).block - 4).setUint32(0, id); };
    const stamped = (off, id) => new DataView(pool.bytes.buffer, off).getUint32(0) === id && new DataView(pool.bytes.buffer, off + live.get(off).block - 4).getUint32(0) === id;
    for (let i = 0; i < 6000; i++) {
      const doAlloc = live.size === 0 || r() % 100 < 55;
      if (doAlloc) {
        // Mostly small, sometimes large (up to the whole pool).
        const sz = r() % 10 < 8 ? 1 + (r() % (4 * PAGE)) : 1 + (r() % pool.maxAlloc);
        const off = pool.alloc(sz);
        if (off === -1) {
          refusals++;
          assert.ok(sz > PAGE || used === size, `a single page is refused only when the pool is full (used ${used} of ${size})`);
          assert.ok(used > 0 || sz > pool.maxAlloc, 'an empty pool refuses nothing up to maxAlloc');
          continue;
        }
        const block = expectedBlock(sz);
        assert.is(off % PAGE, 0);
        assert.ok(off + block <= size, 'inside the pool');
        assert.is(pool.blockSize(off), block);
        assert.not.ok(live.has(off), `offset ${off} handed out twice`);
        for (const [o, v] of live) assert.ok(off + block <= o || o + v.block <= off, `[${off}, +${block}) overlaps live [${o}, +${v.block})`);
        live.set(off, { block, id: i + 1 });
        stamp(off, i + 1);
        used += block; peak = Math.max(peak, used);
      } else {
        const keys = [...live.keys()];
        const off = keys[r() % keys.length];
        const { block, id } = live.get(off);
        assert.ok(stamped(off, id), `block ${off} was not overwritten by another block`);
        pool.free(off);
        live.delete(off);
        used -= block;
        assert.is(pool.blockSize(off), -1);
      }
      assert.is(pool.used, used, `used after op ${i}`);
      assert.is(pool.peak, peak, `peak after op ${i}`);
    }
    for (const [off, { id }] of live) { assert.ok(stamped(off, id)); pool.free(off); }
    assert.is(pool.used, 0, 'everything free at the end');
    assert.is(pool.peak, peak);
    // Fully merged: the maximal blocks are whole again, in decreasing sizes.
    let left = size;
    while (left > 0) {
      let b = PAGE;
      while (b * 2 <= left && b * 2 <= pool.maxAlloc) b *= 2;
      assert.ok(pool.alloc(b) >= 0, `a ${b}-byte block after everything was freed (pool of ${pages} pages)`);
      left -= b;
    }
    assert.is(pool.alloc(1), -1);
    assert.ok(refusals > 0, 'the sequence reached exhaustion at least once');
  }
});

test.run();
