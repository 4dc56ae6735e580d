// Shared memory is untrusted input. Thousands of random and adversarial 8-word entries go
// through the real submission rings (engine.submitRaw, an internal test hook) on every
// backend. An entry that this file's own reference validator (written from the wire format in
// src/protocol.ts / native/ops.h and the pool-generation rule in src/shm.ts, not from the
// engine's code) deems invalid must complete with a negative errno; valid-looking entries may
// do I/O on the fuzz files only, inside a fuzz region of the pool. The engine stamps each entry
// with the allocation generation of the pool memory it names, so entries whose memory lies in
// one live allocation go on to the addon's validation; some entries get a hostile generation
// word instead (with a matching check value, as a stale entry would have) and must fail.
// Meanwhile good writes to another file must complete and verify, a canary filling the rest of
// the pool must be unchanged at the end, no worker may die, and the process must survive.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { entrySum, RING_HDR_WORDS, SQ_ENTRY, SQ_GEN, SQ_SUM } from '../dist/src/shm.js';
import { scratchDir, rng, pattern, availableBackends } from './helpers/env.mjs';

const { EBADF } = constants.errno;
const probe = loadAddon().probe();
const BACKENDS = availableBackends(probe);
const scratch = scratchDir('rf-fuzz-');
test.after(() => scratch.cleanup());

const N = Number(process.env.RINGFENCE_FUZZ_N ?? 10000); // entries per backend
const POOL = 8 << 20, FUZZ_BYTES = 1 << 20, DATA = FUZZ_BYTES - (64 << 10), MAX_FILES = 4096;
const READ = 1, WRITE = 2, READV = 3, WRITEV = 4, FALLOCATE = 5, FSYNC = 6, TRUNCATE = 7, NOP = 8;
const EMULATE = 0x100, RMW = 0x200;
const INT64_MAX = (1n << 63n) - 1n;
const MODES_OK = new Set([0, 0x01, 0x03, 0x10, 0x11]);

const join64 = (lo, hi) => BigInt.asIntN(64, (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0));

/**
 * The reference validator, from the documented wire format. Returns
 * { valid, ebadf, writesPool: [start, end) | null, readsPool: [[s, e]...] }.
 * "valid" means the addon must hand it to the kernel (which may still fail it).
 * live(s, e): [s, e) lies in one live pool allocation (the engine refuses memory that does not).
 */
function judge(w, openIds, iovTables, live) {
  const word0 = w[0] >>> 0, op = word0 & 0xff, flags = word0 & ~0xff;
  const file = w[1];
  const bad = { valid: false };
  if (!openIds.has(file)) return { valid: false, ebadf: true };
  const off = join64(w[2], w[3]);
  if (flags & RMW) {
    // A padded unaligned write (worker-side read-modify-write). Only WRITE, no other flag.
    if (op !== WRITE || (flags & ~RMW) !== 0) return bad;
    const align = w[7], len = w[4], buf = w[5] >>> 0;
    if (align < 512 || align > 65536 || (align & (align - 1)) !== 0 || len < 1 || off < 0n) return bad;
    if (off > INT64_MAX - BigInt(len)) return bad;
    const a0 = off - (off % BigInt(align)), a1 = ((off + BigInt(len) + BigInt(align) - 1n) / BigInt(align)) * BigInt(align);
    const span = Number(a1 - a0) + 2 * align;
    if (buf % 512 !== 0 || buf + span > POOL || !live(buf, buf + span)) return bad;
    return { valid: true, writesPool: [buf, buf + span] };
  }
  if (op < 1 || op > 8) return bad;
  if (flags & ~EMULATE) return bad;
  if ((flags & EMULATE) && op !== FALLOCATE) return bad;
  if (op === NOP) return { valid: true, writesPool: null };
  if (off < 0n) return bad;
  switch (op) {
    case READ: case WRITE: {
      const len = w[4], buf = w[5] >>> 0;
      if (len < 1 || off > INT64_MAX - BigInt(len)) return bad;
      if (buf + len > POOL || !live(buf, buf + len)) return bad;
      return { valid: true, writesPool: op === READ ? [buf, buf + len] : null };
    }
    case READV: case WRITEV: {
      const len = w[4], table = w[5] >>> 0, count = w[7] >>> 0;
      if (len < 1 || off > INT64_MAX - BigInt(len)) return bad;
      if (count < 1 || count > 64 || table % 8 !== 0 || table + count * 8 > POOL || !live(table, table + count * 8)) return bad;
      const descs = iovTables.get(table);
      if (descs === undefined) return { valid: 'unknown' }; // random table contents: cannot judge
      let sum = 0, lo = Infinity, hi = -Infinity;
      for (let i = 0; i < count; i++) {
        const [o, l] = descs[i] ?? [0, 0];
        if (l === 0 || o + l > POOL || !live(o, o + l)) return bad;
        sum += l; lo = Math.min(lo, o); hi = Math.max(hi, o + l);
      }
      if (sum !== len) return bad;
      return { valid: true, writesPool: op === READV ? [lo, hi] : null };
    }
    case FALLOCATE: {
      const len = join64(w[4], w[5]);
      if (len <= 0n || off > INT64_MAX - len || !MODES_OK.has(w[7])) return bad;
      if (len > (1n << 40n) && len < (1n << 45n)) return { valid: 'unsafe' }; // could fill the disk
      return { valid: true, writesPool: null };
    }
    case FSYNC: return w[7] === 0 || w[7] === 1 ? { valid: true, writesPool: null } : bad;
    case TRUNCATE: return { valid: true, writesPool: null };
  }
  return bad;
}

/**
 * Entries that once killed a worker (registered in the table before validation: negative
 * offsets, negative fallocate lengths) and RMW writes with extra flag bits are part of the
 * random stream; the dedicated test below checks the first kind directly.
 */
const STRICT = process.env.RINGFENCE_STRICT === '1';

function makeGenerator(seed, ids, fuzzOff) {
  const r = rng(seed);
  const pick = (a) => a[r() % a.length];
  const i32 = () => r() | 0;
  // Data buffers live in the first DATA bytes of the fuzz region; iovec tables after it.
  const fuzzBuf = (len) => (fuzzOff + (r() % Math.max(1, DATA - len))) & ~511;
  const hugeOffsets = [[0, 0x80000000], [-1, -1], [0, 0x7fffffff], [-1, 0x7fffffff], [-4096, 0x7fffffff], [0, -1], [0, 0x40000000]];
  const badIds = () => pick([-2, -4096, -(2 ** 31), MAX_FILES, MAX_FILES + 1, 2 ** 31 - 1, 1000 + (r() % 3000), ...[...Array(8)].map((_, i) => 50 + i)]);
  const goodOffset = () => { const o = (r() % 4096) * 512 + (r() % 4 === 0 ? r() % 512 : 0); return [o, 0]; };
  return (iovTables, pool, k) => {
    const w = new Int32Array(8);
    const kind = r() % 16;
    const fileId = r() % 10 === 0 ? badIds() : pick(ids);
    w[1] = fileId;
    if (kind === 0) {
      // Entirely random words.
      for (let i = 0; i < 8; i++) w[i] = i32();
      if (r() % 2) w[1] = pick(ids);
      if (r() % 2) w[0] = (w[0] & ~0xff) | (1 + (r() % 8));
      return w;
    }
    const op = kind === 1 ? r() % 256 : 1 + (r() % 8);
    const flagBits = r() % 5 === 0 ? pick([EMULATE, RMW, 0x400, 0x8000, 1 << 16, 1 << 31, EMULATE | RMW, RMW | 0x400]) : 0;
    w[0] = op | flagBits;
    const [olo, ohi] = r() % 6 === 0 ? pick(hugeOffsets) : goodOffset();
    w[2] = olo; w[3] = ohi;
    const lenChoice = r() % 8;
    const len = lenChoice === 0 ? pick([0, -1, -(2 ** 31), 2 ** 31 - 1, POOL, POOL + 1])
      : lenChoice === 1 ? 1 + (r() % 700) : 512 * (1 + (r() % 64));
    w[4] = len;
    const bufChoice = r() % 8;
    const L = Math.max(1, len);
    w[5] = bufChoice === 0 ? pick([POOL, POOL + 4096, POOL - 512, -1, -4096, 2 ** 31 - 1, POOL - (L >>> 1)])
      : fuzzBuf(Math.min(L, FUZZ_BYTES));
    if ((op & 0xff) === READV || (op & 0xff) === WRITEV) {
      // An iovec table inside the fuzz region, with good or bad descriptors.
      const count = r() % 10 === 0 ? pick([0, 65, -1, 1000]) : 1 + (r() % 8);
      // One table slot per entry of a chunk (entries of a chunk are in flight together).
      const table = fuzzOff + DATA + k * 1024 + (r() % 8 === 0 ? 4 : 0); // sometimes misaligned
      const descs = [];
      let sum = 0;
      const n = Math.max(0, Math.min(count, 64));
      for (let i = 0; i < n; i++) {
        const l = r() % 8 === 0 ? pick([0, POOL, 2 ** 32 - 1]) : 512 * (1 + (r() % 8));
        const o = r() % 8 === 0 ? pick([POOL, POOL - 256, 2 ** 32 - 512, fuzzOff]) : fuzzBuf(l);
        descs.push([o >>> 0, l >>> 0]); sum += l;
      }
      const dv = new DataView(pool.buffer, pool.byteOffset);
      descs.forEach(([o, l], i) => { if (table + i * 8 + 8 <= POOL) { dv.setUint32(table + i * 8, o, true); dv.setUint32(table + i * 8 + 4, l, true); } });
      iovTables.set(table >>> 0, descs);
      w[5] = table; w[7] = count;
      w[4] = r() % 6 === 0 ? sum + pick([-512, 512, 1]) : sum;
    } else if ((op & 0xff) === FALLOCATE) {
      const mode = r() % 6 === 0 ? pick([2, 4, 8, 0x20, 0x40, -1, 0x12, 0x13]) : pick([0, 1, 3, 0x10, 0x11]);
      w[7] = mode;
      const lenKind = r() % 6;
      if (lenKind === 0) { w[4] = 0; w[5] = 0; }                       // zero length
      else if (lenKind === 1) { w[4] = i32(); w[5] = -1 - (r() % 4); }   // negative
      else if (lenKind === 2) { w[4] = 0; w[5] = 0x7fffffff; }          // enormous
      else { w[4] = 512 * (1 + (r() % 256)); w[5] = 0; }               // small
    } else if ((op & 0xff) === FSYNC) {
      w[7] = r() % 4 === 0 ? pick([2, -1, 1 << 20]) : r() % 2;
    } else if (flagBits & RMW) {
      w[7] = r() % 3 === 0 ? pick([0, 1, 3, 256, 511, 513, 1 << 17, -512, 2 ** 31 - 1]) : pick([512, 1024, 4096]);
      if (r() % 3 === 0) w[5] = (w[5] | 0) + pick([1, 256, 4]);                 // misaligned bounce
    } else {
      w[7] = r() % 3 === 0 ? i32() : 0;
    }
    return w;
  };
}

for (const backend of BACKENDS) {
  test(`${backend}: ${N} hostile ring entries fail with -errno; good I/O and the rest of the pool are untouched`, async () => {
    const engine = await Engine.start({ backend, workers: 2, queueDepth: 32, bufferPoolBytes: POOL });
    try {
      assert.is(engine.pool.size, POOL);
      const good = await engine.open(join(scratch.dir, `good-${backend}`), { create: true, truncate: true, direct: true });
      const fd = await engine.open(join(scratch.dir, `fuzz-direct-${backend}`), { create: true, truncate: true, direct: true });
      const fb = await engine.open(join(scratch.dir, `fuzz-buffered-${backend}`), { create: true, truncate: true, direct: false });
      await fb.write(pattern(1 << 16, 5), 0);
      const fro = await engine.open(join(scratch.dir, `fuzz-buffered-${backend}`), { readOnly: true, direct: false });
      const fuzzIds = [fd.id, fb.id, fro.id];
      assert.not.ok(fuzzIds.includes(good.id));
      const openIds = new Set(fuzzIds);

      // Pool layout: the fuzz region, 16 good-write blocks, one verify block; all the rest is canary.
      const region = engine.alloc(FUZZ_BYTES);
      const goodBufs = Array.from({ length: 16 }, () => engine.alloc(4096));
      const verify = engine.alloc(4096);
      // Pool offsets: each engine.alloc() buffer is a view of its own ArrayBuffer (byteOffset 0).
      const poolAt = (b) => engine.poolOffset(b);
      const F = poolAt(region);
      const excluded = [[F, F + FUZZ_BYTES], ...goodBufs.map((b) => [poolAt(b), poolAt(b) + 4096]), [poolAt(verify), poolAt(verify) + 4096]]
        .sort((a, b) => a[0] - b[0]);
      const pool = engine.pool.bytes;
      const canary = pattern(POOL, 0xc0ffee);
      const canaryRanges = [];
      let at = 0;
      for (const [s, e] of excluded) { if (s > at) canaryRanges.push([at, s]); at = Math.max(at, e); }
      if (at < POOL) canaryRanges.push([at, POOL]);
      for (const [s, e] of canaryRanges) pool.set(canary.subarray(s, e), s);
      const canaryBytes = canaryRanges.reduce((a, [s, e]) => a + e - s, 0);
      assert.ok(canaryBytes >= POOL - FUZZ_BYTES - 18 * 4096, `canary covers ${canaryBytes} bytes`);

      const gen = makeGenerator(backend.length * 1000 + 17, fuzzIds, F);
      const iovTables = new Map();
      // The live allocations (whole blocks): the fuzz region, the good buffers, the verify block.
      const allocs = [region, ...goodBufs, verify].map((b) => [poolAt(b), poolAt(b) + engine.pool.blockSize(poolAt(b))]);
      const live = (s, e) => allocs.some(([a, z]) => s >= a && e <= z && e > s);
      // Hostile generation words: an entry written by the engine gets a wrong SQ_GEN with a
      // matching check value (what a stale entry for an earlier allocation looks like).
      const hr = rng(backend.length * 7 + 3);
      const otherGen = engine.pool.genAt(poolAt(goodBufs[0]));
      const slots = engine['lane']['workers'];
      const stampHostile = (words) => {
        const before = slots.map((s) => s.sqp.tail);
        return (k) => {
          const s = slots.find((x, i) => ((x.sqp.tail - before[i]) | 0) === 1);
          if (s === undefined) return false; // queued in the overflow, not in the ring: leave it
          const at = RING_HDR_WORDS + (((s.sqp.tail - 1) | 0) & (s.sqCap - 1)) * SQ_ENTRY;
          for (const i of [0, 1, 2, 3, 4, 5, 7]) if (s.sq[at + i] !== (words[i] | 0)) return false;
          const right = s.sq[at + SQ_GEN];
          const choices = [0, right + 1, right - 1, otherGen, 0x7fffffff, -1, hr() | 0].filter((g) => (g | 0) !== right);
          s.sq[at + SQ_GEN] = choices[k % choices.length];
          s.sq[at + SQ_SUM] = entrySum(s.sq, at, SQ_SUM);
          return true;
        };
      };
      const stats = { knownBug: 0, invalid: 0, valid: 0, unknown: 0, skipped: 0, ebadf: 0, validOk: 0, hostileGen: 0 };
      const problems = [];
      const goodWrites = new Map();
      let goodSeq = 0;
      const CHUNK = 64;
      for (let done = 0; done < N; done += CHUNK) {
        const pending = [];
        iovTables.clear();
        for (let k = 0; k < CHUNK; k++) {
          const w = gen(iovTables, pool, k);
          let v = judge(w, openIds, iovTables, live);
          if (v.valid === true && v.writesPool && (v.writesPool[0] < F || v.writesPool[1] > F + FUZZ_BYTES)) { stats.skipped++; continue; }
          if (v.valid === 'unsafe' || v.valid === 'unknown') { stats.skipped++; continue; }
          const words = Array.from(w);
          const hostile = (w[0] & 0xff) >= READ && (w[0] & 0xff) <= WRITEV && hr() % 8 === 0 ? stampHostile(words) : null;
          const p = engine.submitRaw(fb, words);
          if (hostile !== null && hostile(hr())) {
            // The pool memory it names is not the allocation its generation word says: refused.
            stats.hostileGen++;
            if (!v.ebadf) v = { valid: false };
          }
          pending.push(p.then((res) => {
            if (!Number.isInteger(res)) problems.push(`non-integer result ${res} for [${words}]`);
            if (v.valid === false) {
              stats.invalid++;
              if (!(res < 0)) problems.push(`invalid entry [${words.map((x) => '0x' + (x >>> 0).toString(16))}] completed with ${res}, want -errno`);
              if (v.ebadf) { stats.ebadf++; if (res !== -EBADF) problems.push(`bad file id ${words[1]}: ${res}, want -EBADF`); }
            } else if (v.valid === true) {
              stats.valid++;
              // A plain write to the buffered fuzz file at a modest offset must be accepted.
              const op = words[0] & 0xffff;
              if (words[1] === fb.id && op === WRITE && words[3] === 0) {
                if (res !== words[4]) problems.push(`valid buffered write [${words}] returned ${res}, want ${words[4]}`);
                else stats.validOk++;
              }
            } else stats.unknown++;
          }));
        }
        // Interleaved good writes to the other file, with known data.
        for (let k = 0; k < 4; k++) {
          const slot = goodSeq % 16, block = goodSeq % 256, seed = 1000 + goodSeq;
          const b = goodBufs[slot];
          pending.push((async () => {
            b.set(pattern(4096, seed));
            const n = await good.write(b, block * 4096);
            if (n !== 4096) problems.push(`good write ${seed} returned ${n}`);
            goodWrites.set(block, seed);
          })());
          goodSeq++;
        }
        let timer;
        const stuck = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`chunk at entry ${done} did not complete in 20 s: ${JSON.stringify(engine.stats().inFlight)} requests in flight, ${engine.stats().workerLosses} worker losses (the engine hangs)`)), 20000); });
        await Promise.race([Promise.all(pending), stuck]).finally(() => clearTimeout(timer));
      }
      await engine.idle();
      console.log(`  ${backend}: ${JSON.stringify(stats)}`);
      assert.equal(problems.slice(0, 20), [], `${problems.length} problems`);
      assert.ok(stats.invalid > N / 4, 'a good share of entries were invalid');
      assert.ok(stats.ebadf > 50, 'bad file ids were exercised');
      assert.ok(stats.valid > 100 && stats.validOk > 20, 'valid entries were exercised');
      assert.ok(stats.hostileGen > N / 40, 'hostile generation words were exercised');

      // Every good write reads back, through the engine and through node:fs.
      const disk = readFileSync(join(scratch.dir, `good-${backend}`));
      for (const [block, seed] of goodWrites) {
        assert.is(await good.read(verify, block * 4096), 4096);
        assert.ok(Buffer.from(verify).equals(pattern(4096, seed)), `good block ${block} (engine read)`);
        assert.ok(disk.subarray(block * 4096, block * 4096 + 4096).equals(pattern(4096, seed)), `good block ${block} (node:fs)`);
      }
      // The canary: no byte of the pool outside the fuzz region and the good buffers changed.
      for (const [s, e] of canaryRanges) {
        if (!Buffer.from(pool.buffer, s, e - s).equals(canary.subarray(s, e))) {
          let i = s; while (pool[i] === canary[i]) i++;
          assert.unreachable(`pool byte ${i} outside the fuzz region was modified`);
        }
      }
      const st = engine.stats();
      assert.is(st.workerLosses, 0, 'no worker died');
      assert.is(st.inFlight, 0);
      for (const f of [good, fd, fb, fro]) await f.close();
      // Freed only now: until here the region must stay allocated (a region the GC collected
      // mid-run would make the engine refuse the raw entries that name it, rightly, with EFAULT).
      engine.free(region);
    } finally {
      // A hung engine must fail the test, not hang it.
      let t;
      const ok = await Promise.race([engine.close().then(() => true), new Promise((r) => { t = setTimeout(() => r(false), 10000); })]);
      clearTimeout(t);
      if (!ok) { console.log(`  ${backend}: engine.close() did not finish in 10 s (${engine.stats().inFlight} requests never completed)`); process.exitCode = 1; }
    }
  });
}

test('a negative offset or length in a ring entry fails that entry only (no worker dies, no innocent request is lost)', async () => {
  const engine = await Engine.start({ workers: 2, queueDepth: 32, bufferPoolBytes: 1 << 20 });
  try {
    const f = await engine.open(join(scratch.dir, 'neg'), { create: true, truncate: true, direct: false });
    const hostile = [
      [READ, f.id, 0, -1, 4096, 0, 0, 0],                 // offset < 0
      [WRITE, f.id, 0, -(2 ** 31), 4096, 0, 0, 0],        // offset < 0
      [TRUNCATE, f.id, 0, -1, 0, 0, 0, 0],                // new size < 0
      [FALLOCATE, f.id, 0, 0, 0, -1, 0, 0x10],            // length < 0
    ];
    const innocent = [], raw = [];
    for (const w of hostile) {
      for (let i = 0; i < 8; i++) innocent.push(f.write(Buffer.alloc(4096, i + 1), i * 4096).then(() => 'ok', (e) => e.code));
      raw.push(engine.submitRaw(f, w));
    }
    const res = await Promise.all(raw), inn = await Promise.all(innocent);
    const losses = engine.stats().workerLosses, lost = inn.filter((x) => x !== 'ok').length;
    const broken = losses > 0 || lost > 0 || res.some((r) => r !== -22);
    const msg = `results ${res} (want -22 each), ${losses} worker losses, ${lost} innocent requests lost: ` +
      'a hostile entry must fail alone (workers/worker.ts route() validates the range before the table sees it)';
    assert.not.ok(broken, msg);
    // Either way the engine still works afterwards.
    assert.is(await f.write(Buffer.alloc(4096, 9), 0), 4096);
    await f.close();
  } finally { await engine.close(); }
});

test.run();
