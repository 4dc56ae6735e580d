// Bad input at the API boundary: every public method, table-driven. Each bad call must fail
// with the documented error class and `code`, with a message that names the problem and says
// what to do; file methods must reject (never throw synchronously); and the engine that saw
// the whole matrix must still do verified I/O and hold no pool memory afterwards.
//
// Rows that the engine currently gets wrong are listed in KNOWN_BUGS (strict xfail): they are
// reported as "XFAIL", and the test FAILS if one of them starts passing, so the list is kept
// honest. Set RINGFENCE_STRICT=1 to make known bugs fail too.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Engine, RingfenceError } from '../dist/src/index.js';
import { scratchDir, pattern, engineOptions } from './helpers/env.mjs';

const scratch = scratchDir('rf-inputs-');
test.after(() => scratch.cleanup());
const STRICT = process.env.RINGFENCE_STRICT === '1';

/** Row name -> why it is a known bug (see docs/GUARANTEES.md, "Known gaps"). */
const KNOWN_BUGS = {
  // None open. Add a row here (name -> why) for a bug found but not yet fixed.
};

const TE = TypeError, RE = RangeError, RF = RingfenceError;
const ARG_TYPE = 'ERR_INVALID_ARG_TYPE', RANGE = 'ERR_OUT_OF_RANGE', ARG_VALUE = 'ERR_INVALID_ARG_VALUE';

function detached(n = 4096) {
  const ab = new ArrayBuffer(n);
  const view = new Uint8Array(ab);
  structuredClone(ab, { transfer: [ab] });
  assert.is(view.byteLength, 0, 'the view is detached');
  return view;
}

/**
 * Runs one bad call. mode 'reject': must return a promise that rejects (a synchronous throw
 * is a failure); 'throw': must throw synchronously.
 */
async function outcome(fn, mode) {
  if (mode === 'throw') {
    try { fn(); } catch (e) { return e; }
    return new Error('did not throw');
  }
  let p;
  try { p = fn(); } catch (e) { return Object.assign(new Error(`threw synchronously instead of rejecting: ${e?.message}`), { sync: true }); }
  if (!p || typeof p.then !== 'function') return new Error('did not return a promise');
  try { const v = await p; return new Error(`resolved with ${String(v)}`); } catch (e) { return e; }
}

function check(row, err) {
  const [cls, code, msg] = row.expect;
  const where = `${row.name}: got ${err?.constructor?.name} ${err?.code}: ${err?.message}`;
  if (!(err instanceof cls)) throw new assert.Assertion({ message: `${where} (want ${cls.name})`, generated: false });
  if (err.code !== code) throw new assert.Assertion({ message: `${where} (want code ${code})`, generated: false });
  // The message names the problem...
  if (!msg.test(err.message)) throw new assert.Assertion({ message: `${where} (want message ${msg})`, generated: false });
  // ...and says what to do: Node-style argument errors say what the value must be; ringfence
  // errors give advice after the diagnosis.
  const advice = cls === RF ? /(;|: ).*(open|start|align|pass|free|create|give|check|split|close|retry|use|see)/i : /must|is not|cannot|is empty|detached/i;
  if (!advice.test(err.message)) throw new assert.Assertion({ message: `${where} (the message gives no advice)`, generated: false });
}

let engine, f, ro, closedFile, deadEngine, deadFile, align, direct;

test.before(async () => {
  engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 8, bufferPoolBytes: 4 << 20 }));
  const path = join(scratch.dir, 'data');
  f = await engine.open(path, { create: true, truncate: true, direct: true });
  align = f.info().alignment;
  direct = f.info().direct;
  await f.write(pattern(65536, 1), 0);
  ro = await engine.open(path, { readOnly: true });
  closedFile = await engine.open(path);
  await closedFile.close();
  deadEngine = await Engine.start(engineOptions({ workers: 1, queueDepth: 4, bufferPoolBytes: 1 << 20 }));
  deadFile = await deadEngine.open(path);
  await deadEngine.close();
  mkdirSync(join(scratch.dir, 'adir'));
});

test.after(async () => { await engine?.close(); });

function rows() {
  const R = [];
  const add = (name, mode, fn, expect) => R.push({ name, mode, fn, expect });
  const B = () => Buffer.alloc(4096);

  // ---- Engine.start options ----
  const startBad = [
    ['options not an object', 5, TE, ARG_TYPE, /"options"/],
    ['options null', null, TE, ARG_TYPE, /"options"/],
    ['unknown option', { worker: 2 }, TE, ARG_VALUE, /options\.worker.*not a known option/],
    ['workers 0', { workers: 0 }, RE, RANGE, /options\.workers/],
    ['workers -1', { workers: -1 }, RE, RANGE, /options\.workers/],
    ['workers 1.5', { workers: 1.5 }, RE, RANGE, /options\.workers/],
    ['workers NaN', { workers: NaN }, RE, RANGE, /options\.workers/],
    ['workers Infinity', { workers: Infinity }, RE, RANGE, /options\.workers/],
    ['workers 2^53', { workers: 2 ** 53 }, RE, RANGE, /options\.workers/],
    ['workers string', { workers: '2' }, TE, ARG_TYPE, /options\.workers/],
    ['workers bigint', { workers: 2n }, TE, ARG_TYPE, /options\.workers/],
    ['backend bogus', { backend: 'uring' }, TE, ARG_VALUE, /options\.backend.*one of/],
    ['queueDepth 0', { queueDepth: 0 }, RE, RANGE, /options\.queueDepth/],
    ['queueDepth 4097', { queueDepth: 4097 }, RE, RANGE, /options\.queueDepth/],
    ['bufferPoolBytes 1000', { bufferPoolBytes: 1000 }, RE, RANGE, /options\.bufferPoolBytes/],
    ['bufferPoolBytes unaligned', { bufferPoolBytes: 4097 }, TE, ARG_VALUE, /options\.bufferPoolBytes.*multiple of 4096/],
    ['bufferPoolBytes 2^53', { bufferPoolBytes: 2 ** 53 }, RE, RANGE, /options\.bufferPoolBytes/],
    ['bufferPoolBytes negative', { bufferPoolBytes: -4096 }, RE, RANGE, /options\.bufferPoolBytes/],
    ['xfsWorkaround bogus', { xfsWorkaround: 'sometimes' }, TE, ARG_VALUE, /options\.xfsWorkaround/],
    ['tableCapacity 1', { tableCapacity: 1 }, RE, RANGE, /options\.tableCapacity/],
    ['tableCapacity 257', { tableCapacity: 257 }, RE, RANGE, /options\.tableCapacity/],
    ['trackRequests string', { trackRequests: 'yes' }, TE, ARG_TYPE, /options\.trackRequests/],
    ['emulate string', { emulateXfsFallocateBug: 'yes' }, TE, ARG_TYPE, /options\.emulateXfsFallocateBug/],
    ['emulate windowUs -1', { emulateXfsFallocateBug: { windowUs: -1 } }, RE, RANGE, /windowUs/],
    ['watchdogMs -1', { watchdogMs: -1 }, RE, RANGE, /options\.watchdogMs/],
    ['watchdogMs NaN', { watchdogMs: NaN }, RE, RANGE, /options\.watchdogMs/],
    ['faults number', { faults: 7 }, TE, ARG_TYPE, /options\.faults/],
    ['faults bad spec', { faults: '0:explode:1' }, RE, ARG_VALUE, /WORKER:exit\|throw\|hang/],
  ];
  for (const [n, o, c, code, m] of startBad) add(`Engine.start ${n}`, 'reject', () => Engine.start(o), [c, code, m]);

  // ---- engine.open ----
  const p = join(scratch.dir, 'data');
  add('open path number', 'reject', () => engine.open(5), [TE, ARG_TYPE, /"path"/]);
  add('open path undefined', 'reject', () => engine.open(), [TE, ARG_TYPE, /"path"/]);
  add('open path with a NUL byte', 'reject', () => engine.open(`${p}\0x`), [TE, ARG_VALUE, /"path".*null bytes/]);
  add('open a Buffer path with a NUL byte', 'reject', () => engine.open(Buffer.from(`${p}\0x`)), [TE, ARG_VALUE, /"path".*null bytes/]);
  add('open a non-file URL', 'reject', () => engine.open(new URL('http://example.com/x')), [TE, ARG_VALUE, /file: URL/]);
  add('open options string', 'reject', () => engine.open(p, 'r'), [TE, ARG_TYPE, /"options"/]);
  add('open unknown option', 'reject', () => engine.open(p, { readonly: true }), [TE, ARG_VALUE, /options\.readonly.*not a known option/]);
  add('open create not boolean', 'reject', () => engine.open(p, { create: 1 }), [TE, ARG_TYPE, /options\.create/]);
  add('open direct not boolean', 'reject', () => engine.open(p, { direct: 'yes' }), [TE, ARG_TYPE, /options\.direct/]);
  add('open readOnly+create', 'reject', () => engine.open(p, { readOnly: true, create: true }), [TE, ARG_VALUE, /readOnly with create/]);
  add('open readOnly+truncate', 'reject', () => engine.open(p, { readOnly: true, truncate: true }), [TE, ARG_VALUE, /readOnly with create or truncate/]);
  add('open xfsWorkaround bogus', 'reject', () => engine.open(p, { xfsWorkaround: 1 }), [TE, ARG_VALUE, /options\.xfsWorkaround/]);
  add('open missing file', 'reject', () => engine.open(join(scratch.dir, 'nope')), [RF, 'ENOENT', /does not exist.*create: true/]);
  add('open a directory', 'reject', () => engine.open(join(scratch.dir, 'adir')), [RF, 'EISDIR', /directory/]);
  add('open missing parent dir', 'reject', () => engine.open(join(scratch.dir, 'no', 'x'), { create: true }), [RF, 'ENOENT', /cannot open/]);

  // ---- engine.alloc / free (synchronous) ----
  for (const [n, v, c, code] of [
    ['0', 0, RE, RANGE], ['-1', -1, RE, RANGE], ['1.5', 1.5, RE, RANGE], ['NaN', NaN, RE, RANGE], ['Infinity', Infinity, RE, RANGE],
    ['2^53', 2 ** 53, RE, RANGE], ['string', '4096', TE, ARG_TYPE], ['bigint', 4096n, TE, ARG_TYPE], ['undefined', undefined, TE, ARG_TYPE],
    ['pool+1', (4 << 20) + 1, RE, RANGE],
  ]) add(`alloc ${n}`, 'throw', () => engine.alloc(v), [c, code, /"size"/]);
  add('alloc when the pool is exhausted', 'throw', () => {
    const held = [];
    try { for (;;) held.push(engine.alloc(1 << 20)); } finally { for (const b of held) engine.free(b); }
  }, [RF, 'ERR_RINGFENCE_POOL_EXHAUSTED', /no free block.*larger bufferPoolBytes/]);
  add('free a foreign Buffer', 'throw', () => engine.free(Buffer.alloc(4096)), [TE, ARG_VALUE, /"buf".*engine\.alloc/]);
  add('free null', 'throw', () => engine.free(null), [TE, ARG_VALUE, /"buf"/]);
  add('free a subarray of a pooled buffer', 'throw', () => {
    const b = engine.alloc(8192);
    try { engine.free(b.subarray(4096)); } finally { engine.free(b); }
  }, [TE, ARG_VALUE, /"buf"/]);
  add('free twice', 'throw', () => { const b = engine.alloc(4096); engine.free(b); engine.free(b); }, [TE, ARG_VALUE, /freed already/]);

  // ---- buffers for read/write ----
  const badBufs = [
    ['null', () => null, TE, ARG_TYPE, /"buf"/],
    ['undefined', () => undefined, TE, ARG_TYPE, /"buf"/],
    ['string', () => 'hello', TE, ARG_TYPE, /"buf"/],
    ['array', () => [1, 2, 3], TE, ARG_TYPE, /"buf"/],
    ['ArrayBuffer', () => new ArrayBuffer(4096), TE, ARG_TYPE, /"buf"/],
    ['Uint16Array', () => new Uint16Array(2048), TE, ARG_TYPE, /"buf"/],
    ['DataView', () => new DataView(new ArrayBuffer(4096)), TE, ARG_TYPE, /"buf"/],
    ['empty', () => Buffer.alloc(0), TE, ARG_VALUE, /"buf".*empty/],
    ['detached', () => detached(), TE, ARG_VALUE, /"buf".*detached/],
  ];
  const badOffsets = [
    ['-1', -1, RE, RANGE], ['-1n', -1n, RE, RANGE], ['NaN', NaN, RE, RANGE], ['1.5', 1.5, RE, RANGE], ['Infinity', Infinity, RE, RANGE],
    ['-Infinity', -Infinity, RE, RANGE], ['2^53 (unsafe number)', 2 ** 53, RE, RANGE], ['2^63 bigint', 1n << 63n, RE, RANGE],
    ['2^64 bigint', 1n << 64n, RE, RANGE], ['string', '0', TE, ARG_TYPE], ['null', null, TE, ARG_TYPE], ['undefined', undefined, TE, ARG_TYPE],
    ['object', {}, TE, ARG_TYPE],
  ];
  for (const op of ['read', 'write']) {
    for (const [n, mk, c, code, m] of badBufs) add(`${op} buf ${n}`, 'reject', () => f[op](mk(), 0), [c, code, m]);
    for (const [n, v, c, code] of badOffsets) add(`${op} offset ${n}`, 'reject', () => f[op](B(), v), [c, code, /"offset"/]);
    add(`${op} offset+length > 2^63-1`, 'reject', () => f[op](B(), (1n << 63n) - 1024n), [RE, RANGE, /offset \+ length/]);
    add(`${op} offset+length > 2^63-1 (rounding)`, 'reject', () => f[op](B(), (1n << 63n) - 3584n), [RE, RANGE, /offset \+ length/]);
    // Exactly 2^63: one byte past the largest offset + length (it used to reach the kernel as EINVAL).
    add(`${op} offset+length = 2^63`, 'reject', () => f[op](B(), (1n << 63n) - 4096n), [RE, RANGE, /offset \+ length/]);
    add(`${op} buffer > 2^31-1 bytes`, 'reject', () => f[op](new Uint8Array(2 ** 31), 0), [RE, RANGE, /byteLength.*split/]);
    add(`${op} closed file`, 'reject', () => closedFile[op](B(), 0), [RF, 'ERR_RINGFENCE_CLOSED', /is closed/]);
    add(`${op} file of a closed engine`, 'reject', () => deadFile[op](B(), 0), [RF, 'ERR_RINGFENCE_CLOSED', /closed/]);
  }
  add('write readOnly file', 'reject', () => ro.write(B(), 0), [RF, 'EBADF', /readOnly/]);

  // ---- readv / writev ----
  for (const op of ['readv', 'writev']) {
    const big = Buffer.alloc(32 << 20);
    for (const [n, mk, c, code, m] of [
      ['not an array', () => B(), TE, ARG_VALUE, /"bufs"/],
      ['empty array', () => [], TE, ARG_VALUE, /"bufs".*non-empty/],
      ['65 buffers', () => Array.from({ length: 65 }, () => B()), TE, ARG_VALUE, /"bufs".*at most 64/],
      ['null element', () => [B(), null], TE, ARG_TYPE, /bufs\[1\]/],
      ['string element', () => ['x'], TE, ARG_TYPE, /bufs\[0\]/],
      ['empty element', () => [B(), Buffer.alloc(0)], TE, ARG_VALUE, /bufs\[1\].*empty/],
      ['detached element', () => [detached()], TE, ARG_VALUE, /bufs\[0\].*detached/],
      ['total > 2^31-1', () => Array.from({ length: 64 }, () => big), RE, RANGE, /total length/],
    ]) add(`${op} ${n}`, 'reject', () => f[op](mk(), 0), [c, code, m]);
    for (const [n, v, c, code] of badOffsets) add(`${op} offset ${n}`, 'reject', () => f[op]([B()], v), [c, code, /"offset"/]);
    add(`${op} unaligned length on O_DIRECT`, 'reject', () => f[op]([B(), Buffer.alloc(100)], 0), [RF, 'ERR_RINGFENCE_UNALIGNED', /multiples of \d+.*direct: false/]);
    add(`${op} unaligned offset on O_DIRECT`, 'reject', () => f[op]([B()], 100), [RF, 'ERR_RINGFENCE_UNALIGNED', /multiples of \d+.*direct: false/]);
    add(`${op} closed file`, 'reject', () => closedFile[op]([B()], 0), [RF, 'ERR_RINGFENCE_CLOSED', /is closed/]);
    add(`${op} file of a closed engine`, 'reject', () => deadFile[op]([B()], 0), [RF, 'ERR_RINGFENCE_CLOSED', /closed/]);
  }
  add('writev readOnly file', 'reject', () => ro.writev([B()], 0), [RF, 'EBADF', /readOnly/]);

  // ---- writeZeroes / fallocate ----
  for (const op of ['writeZeroes', 'fallocate']) {
    for (const [n, v, c, code] of badOffsets) add(`${op} offset ${n}`, 'reject', () => f[op](v, 4096), [c, code, /"offset"/]);
    for (const [n, v, c, code] of [...badOffsets, ['0', 0, RE, RANGE], ['0n', 0n, RE, RANGE]]) {
      add(`${op} length ${n}`, 'reject', () => f[op](0, v), [c, code, /"length"/]);
    }
    add(`${op} offset+length > 2^63-1`, 'reject', () => f[op]((1n << 63n) - 4096n, 8192), [RE, RANGE, /length \+ offset/]);
    add(`${op} closed file`, 'reject', () => closedFile[op](0, 4096), [RF, 'ERR_RINGFENCE_CLOSED', /is closed/]);
    add(`${op} readOnly file`, 'reject', () => ro[op](0, 4096), [RF, 'EBADF', /readOnly/]);
    add(`${op} file of a closed engine`, 'reject', () => deadFile[op](0, 4096), [RF, 'ERR_RINGFENCE_CLOSED', /closed/]);
  }
  for (const [n, v] of [['3 (PUNCH_HOLE without KEEP_SIZE)', 2], ['0x40', 0x40], ['-1', -1], ['NaN', NaN], ['1.5', 1.5], ['string', '0'], ['null', null]]) {
    add(`fallocate mode ${n}`, 'reject', () => f.fallocate(0, 4096, v), [TE, ARG_VALUE, /"mode".*must be one of/]);
  }

  // ---- flush / truncate / size / close ----
  add('flush closed file', 'reject', () => closedFile.flush(), [RF, 'ERR_RINGFENCE_CLOSED', /is closed/]);
  add('flush file of a closed engine', 'reject', () => deadFile.flush(), [RF, 'ERR_RINGFENCE_CLOSED', /closed/]);
  for (const [n, v, c, code] of badOffsets) add(`truncate size ${n}`, 'reject', () => f.truncate(v), [c, code, /"size"/]);
  add('truncate readOnly file', 'reject', () => ro.truncate(0), [RF, 'EBADF', /readOnly/]);
  add('truncate closed file', 'reject', () => closedFile.truncate(0), [RF, 'ERR_RINGFENCE_CLOSED', /is closed/]);
  add('size closed file', 'reject', () => closedFile.size(), [RF, 'ERR_RINGFENCE_CLOSED', /is closed/]);
  add('size file of a closed engine', 'reject', () => deadFile.size(), [RF, 'ERR_RINGFENCE_CLOSED', /closed/]);

  // ---- submit ----
  for (const [n, ops, c, code, m] of [
    ['not an array', () => ({ op: 'flush' }), TE, ARG_VALUE, /"ops"/],
    ['null op', () => [null], TE, ARG_VALUE, /ops\[0\]/],
    ['unknown op', () => [{ op: 'trim' }], TE, ARG_VALUE, /ops\[0\]\.op.*one of/],
    ['read with null buffer', () => [{ op: 'read', buffer: null, offset: 0 }], TE, ARG_TYPE, /"ops\[0\]\.buffer"/],
    ['write with detached buffer', () => [{ op: 'write', buffer: detached(), offset: 0 }], TE, ARG_VALUE, /detached/],
    ['read with offset -1', () => [{ op: 'read', buffer: B(), offset: -1 }], RE, RANGE, /"ops\[0\]\.offset"/],
    ['writeZeroes length 0', () => [{ op: 'writeZeroes', offset: 0, length: 0 }], RE, RANGE, /ops\[0\]\.length/],
    ['writeZeroes offset NaN', () => [{ op: 'writeZeroes', offset: NaN, length: 4096 }], RE, RANGE, /ops\[0\]\.offset/],
  ]) add(`submit ${n}`, 'reject', () => f.submit(ops()), [c, code, m]);
  add('submit write on readOnly file', 'reject', () => ro.submit([{ op: 'write', buffer: B(), offset: 0 }]), [RF, 'EBADF', /readOnly/]);
  add('submit writeZeroes on readOnly file', 'reject', () => ro.submit([{ op: 'writeZeroes', offset: 0, length: 4096 }]), [RF, 'EBADF', /readOnly/]);
  add('submit closed file', 'reject', () => closedFile.submit([{ op: 'flush' }]), [RF, 'ERR_RINGFENCE_CLOSED', /is closed/]);

  // ---- a closed engine ----
  add('closed engine open', 'reject', () => deadEngine.open(p), [RF, 'ERR_RINGFENCE_CLOSED', /engine is closed.*Engine\.start/]);
  add('closed engine alloc', 'throw', () => deadEngine.alloc(4096), [RF, 'ERR_RINGFENCE_CLOSED', /engine is closed.*Engine\.start/]);
  return R;
}

test('every public method rejects bad input with the documented error, code and advice', async () => {
  const R = rows();
  const failures = [], xfail = [], xpass = [];
  for (const row of R) {
    const err = await outcome(row.fn, row.mode);
    let problem = null;
    try { check(row, err); } catch (e) { problem = e.message; }
    const known = KNOWN_BUGS[row.name];
    if (known && !STRICT) {
      if (problem) xfail.push(`${row.name}: ${known}`); else xpass.push(row.name);
    } else if (problem) failures.push(problem);
  }
  console.log(`  ${R.length} bad calls checked; ${xfail.length} known bugs:`);
  for (const x of xfail) console.log(`    XFAIL ${x}`);
  assert.equal(xpass, [], `known bugs that are now fixed (remove them from KNOWN_BUGS): ${xpass.join(', ')}`);
  assert.equal(failures, [], `\n${failures.join('\n')}`);
  assert.ok(R.length > 250, `the matrix is not trivially small (${R.length})`);
});

test('closing twice is harmless; close() of a closed file and engine resolve', async () => {
  await closedFile.close();
  await deadEngine.close();
});

test('after the whole matrix the same engine does verified I/O and holds no pool memory', async () => {
  // Nothing leaked from the rejected calls: no request in flight, no bounce block held.
  await engine.idle();
  const s = engine.stats();
  assert.is(s.inFlight, 0, 'no request left in flight');
  assert.is(s.pool.used, 0, 'no pool memory held by rejected requests');
  const data = pattern(8 * align, 77), back = Buffer.alloc(8 * align);
  assert.is(await f.write(data, 16 * align), data.length);
  assert.is(await f.read(back, 16 * align), back.length);
  assert.equal(back, data);
  const pooled = engine.alloc(4096); pooled.set(pattern(4096, 78));
  assert.is(await f.writev([pooled, pattern(4096, 79)], 0), 8192);
  const r1 = Buffer.alloc(4096), r2 = engine.alloc(4096);
  assert.is(await f.readv([r1, r2], 0), 8192);
  assert.equal(r1, pattern(4096, 78)); assert.equal(Buffer.from(r2), pattern(4096, 79));
  engine.free(pooled); engine.free(r2);
  // The read-only handle still reads, the unaligned (padded) path still works.
  const odd = Buffer.alloc(100);
  assert.is(await ro.read(odd, 16 * align + 3), 100);
  assert.equal(odd, data.subarray(3, 103));
  await f.flush();
  assert.equal(readFileSync(join(scratch.dir, 'data')).subarray(16 * align, 24 * align), data);
  assert.is(engine.stats().pool.used, 0);
  assert.is(direct, true);
});

test('a batch that fails validation performs none of its operations', async () => {
  // The documented contract of submit(): on failure the first error is reported and `results`
  // holds every outcome. A batch rejected for a bad argument must not have side effects the
  // caller cannot see.
  const path = join(scratch.dir, 'batch');
  writeFileSync(path, Buffer.alloc(8192));
  const g = await engine.open(path, { direct: false });
  const err = await g.submit([
    { op: 'write', buffer: Buffer.alloc(4096, 0xab), offset: 0 },
    { op: 'writeZeroes', offset: -1, length: 4096 },
  ]).catch((e) => e);
  assert.instance(err, RangeError);
  await engine.idle();
  const landed = readFileSync(path)[0] === 0xab;
  await g.close();
  const msg = 'submit() rejected with a RangeError for ops[1], but ops[0] (a write) was still executed';
  assert.not.ok(landed, msg);
});

test('detaching a bounced read buffer while the read is in flight does not crash the process', () => {
  // The caller breaks the rules (node:fs says: do not touch the buffer until the promise
  // settles), but the engine must fail that one request, not the whole process.
  const child = fileURLToPath(new URL('./helpers/child-detach.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [child, scratch.dir], { encoding: 'utf8', timeout: 30000 });
  const ok = r.status === 0 && /survived/.test(r.stdout);
  const msg = `child exited ${r.status} ${r.signal ?? ''}: ${(r.stderr || '').split('\n').filter(Boolean).slice(0, 3).join(' | ')}`;
  assert.ok(ok, msg);
});

test.run();
