// The buffer pool's page-generation map (src/shm.ts poolRangeLive): what a worker checks a
// ring entry's SQ_GEN against.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BufferPool, PAGE } from '../dist/src/pool.js';
import { poolRangeLive } from '../dist/src/shm.js';

test('every page of a block carries its allocation generation; free pages carry 0', () => {
  const pool = new BufferPool(64 * PAGE);
  const map = new Int32Array(pool.pageGenSab);
  assert.is(map.length, 64);
  assert.ok(map.every((g) => g === 0), 'a new pool is all free');
  const a = pool.alloc(3 * PAGE); // a 4-page block
  const g = pool.genAt(a);
  assert.ok(g > 0);
  for (let p = 0; p < 4; p++) assert.is(pool.genAt(a + p * PAGE + 17), g);
  assert.ok(poolRangeLive(map, g, a, 4 * PAGE));
  assert.not.ok(poolRangeLive(map, g, a, 4 * PAGE + 1), 'one byte past the block');
  assert.not.ok(poolRangeLive(map, g + 1, a, PAGE));
  pool.free(a);
  for (let p = 0; p < 4; p++) assert.is(pool.genAt(a + p * PAGE), 0);
  assert.not.ok(poolRangeLive(map, g, a, PAGE), 'freed memory is not live');
  const b = pool.alloc(PAGE);
  assert.is(b, a, 'the buddy allocator hands the same page out again');
  assert.ok(pool.genAt(b) > 0 && pool.genAt(b) !== g, 'a new allocation of the same page draws a new generation');
  assert.not.ok(poolRangeLive(map, g, b, PAGE), 'an entry made for the old allocation is refused');
  assert.is(pool.genAt(-1), 0);
  assert.is(pool.genAt(64 * PAGE), 0);
});

test('neighbouring blocks carry different generations, so a range across two of them is not live', () => {
  const pool = new BufferPool(16 * PAGE);
  const map = new Int32Array(pool.pageGenSab);
  const x = pool.alloc(PAGE), y = pool.alloc(PAGE);
  assert.is(Math.abs(x - y), PAGE);
  const lo = Math.min(x, y);
  assert.not.ok(poolRangeLive(map, pool.genAt(lo), lo, 2 * PAGE));
  // Existing behaviour is unchanged.
  assert.is(pool.used, 2 * PAGE);
  assert.is(pool.blockSize(x), PAGE);
  pool.free(x); pool.free(y);
  assert.is(pool.used, 0);
  assert.ok(new Int32Array(pool.pageGenSab).every((g) => g === 0));
});

test.run();
