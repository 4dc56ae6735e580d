// Durability and shutdown.
//  1. A child writes, flush()es, prints "flushed", and is SIGKILLed: every acknowledged block
//     is there when the file is opened again.
//  2. As root, the same on a loop-mounted XFS volume that is shut down WITHOUT flushing its
//     log right after flush() resolves (xfs_io -x -c shutdown: a simulated power cut): the
//     blocks flushed before survive remounting.
//  3. A process that ends with an open engine (no close()) exits by itself.
//  4. engine.close() with requests in flight completes them, then later calls reject with
//     ERR_RINGFENCE_CLOSED.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readFileSync, existsSync } from 'node:fs';
import { Engine, RingfenceError } from '../dist/src/index.js';
import { makeXfsVolume } from '../dist/src/volume.js';
import { scratchDir, pattern, skipUnless, xfsVolumeUnavailable, engineOptions } from './helpers/env.mjs';

const scratch = scratchDir('rf-durable-');
test.after(() => scratch.cleanup());
const BS = 4096, BLOCKS = 256;
const helper = (name) => fileURLToPath(new URL(`./helpers/${name}`, import.meta.url));

/** Runs child-durable.mjs; calls onFlushed() synchronously on "flushed", then SIGKILLs it. */
function runAndKill(path, direct, onFlushed = () => {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [helper('child-durable.mjs'), path, direct ? '1' : '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '', killed = false;
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`child did not flush in 30 s: ${err}`)); }, 30000);
    child.stdout.on('data', (d) => {
      out += d;
      if (!killed && /flushed \d+/.test(out)) {
        killed = true;
        try { onFlushed(); } finally { child.kill('SIGKILL'); }
      }
    });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code, signal) => { clearTimeout(timer); killed ? resolve({ out, signal }) : reject(new Error(`child exited ${code} ${signal} before flushing: ${err}`)); });
  });
}

function countIntact(buf) {
  let ok = 0;
  for (let i = 0; i < BLOCKS; i++) if (buf.length >= (i + 1) * BS && buf.subarray(i * BS, (i + 1) * BS).equals(pattern(BS, i + 1))) ok++;
  return ok;
}

for (const direct of [true, false]) {
  test(`SIGKILL right after flush(): every acknowledged block reads back (${direct ? 'O_DIRECT' : 'buffered'})`, async () => {
    const path = join(scratch.dir, `kill-${direct}`);
    const { signal } = await runAndKill(path, direct);
    assert.is(signal, 'SIGKILL');
    const engine = await Engine.start(engineOptions({ workers: 1 }));
    try {
      const f = await engine.open(path, { direct: false });
      for (let i = 0; i < BLOCKS; i++) {
        const b = Buffer.alloc(BS);
        assert.is(await f.read(b, i * BS), BS, `block ${i} present`);
        assert.ok(b.equals(pattern(BS, i + 1)), `block ${i} intact`);
      }
      await f.close();
    } finally { await engine.close(); }
  });
}

// Root (loop-mounted XFS volume, xfs_io shutdown) and xfsprogs, decided before the test is defined.
skipUnless(test, xfsVolumeUnavailable(['mkfs.xfs', 'xfs_io']))('XFS shut down without log flush right after flush(): flushed blocks survive the "power cut"', async () => {
  const vol = makeXfsVolume(300 * 2 ** 20);
  try {
    const path = join(vol.dir, 'data'), control = join(vol.dir, 'control');
    // Control: the same data, written buffered WITHOUT flush, just before the shutdown.
    await runAndKill(path, false, () => {
      execFileSync(process.execPath, ['-e', `const fs=require('fs');const fd=fs.openSync(${JSON.stringify(control)},'w');for(let i=0;i<${BLOCKS};i++)fs.writeSync(fd,Buffer.alloc(${BS},1));`]);
      // Shut the filesystem down now, without flushing the log (a simulated crash).
      execFileSync('xfs_io', ['-x', '-c', 'shutdown', vol.dir]);
    });
    // A killed process's io_uring is torn down asynchronously and holds its files for a moment.
    for (let i = 0; ; i++) {
      try { execFileSync('umount', [vol.dir], { stdio: 'pipe' }); break; } catch (e) {
        if (i >= 100) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    execFileSync('mount', ['-o', 'loop', vol.image, vol.dir]);
    const data = existsSync(path) ? readFileSync(path) : Buffer.alloc(0);
    const ctl = existsSync(control) ? readFileSync(control).length : 0;
    console.log(`  after the shutdown and remount: ${countIntact(data)}/${BLOCKS} flushed blocks intact; unflushed control file has ${ctl}/${BLOCKS * BS} bytes`);
    assert.is(countIntact(data), BLOCKS, 'every block acknowledged before flush() resolved survived');
    if (ctl === BLOCKS * BS) console.log('  note: the unflushed control file survived too (the shutdown happened to lose nothing unflushed)');
  } finally { vol.cleanup(); }
});

test('a process that ends with an open engine (no close()) exits by itself within 5 s', () => {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [helper('child-noclose.mjs'), join(scratch.dir, 'noclose')], { encoding: 'utf8', timeout: 15000 });
  const secs = (performance.now() - t0) / 1000;
  assert.is(r.signal, null, `the child had to be killed after ${secs.toFixed(1)} s: it hangs without close() (${r.stderr})`);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /done without close/);
  assert.ok(secs < 5, `exited after ${secs.toFixed(1)} s`);
  const file = readFileSync(join(scratch.dir, 'noclose'));
  assert.is(file.length, 64 * 4096);
  assert.ok(file.every((b) => b === 0x42), 'its writes landed');
});

test('close() with requests in flight finishes them; later calls reject with ERR_RINGFENCE_CLOSED', async () => {
  const engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 4 }));
  const path = join(scratch.dir, 'closing');
  const f = await engine.open(path, { create: true, truncate: true });
  const g = await engine.open(path); // a second handle, left for close() to close
  const pooled = engine.alloc(4096);
  const reqs = [];
  for (let i = 0; i < 300; i++) reqs.push(f.write(pattern(BS, i + 1), i * BS));
  reqs.push(f.flush(), g.writeZeroes(300 * BS, 4 * BS), f.read(pooled, 0));
  const closing = engine.close();
  assert.ok(engine.isClosed, 'closed at once for new calls');
  const late = await f.write(Buffer.alloc(BS), 0).catch((e) => e);
  assert.instance(late, RingfenceError, 'a call made while close() drains is refused');
  const results = await Promise.allSettled(reqs);
  await closing;
  const failed = results.filter((r) => r.status === 'rejected');
  assert.is(failed.length, 0, `in-flight requests completed: ${failed.map((r) => r.reason?.code)}`);
  const disk = readFileSync(path);
  for (let i = 0; i < 300; i++) assert.ok(disk.subarray(i * BS, (i + 1) * BS).equals(pattern(BS, i + 1)), `block ${i}`);
  assert.is(disk.length, 304 * BS);
  assert.ok(Buffer.from(pooled).equals(pattern(BS, 1)) || Buffer.from(pooled).every((b) => b === 0), 'the read completed');
  const calls = [
    () => f.read(Buffer.alloc(BS), 0), () => f.write(Buffer.alloc(BS), 0), () => f.flush(), () => f.size(),
    () => g.read(Buffer.alloc(BS), 0), () => g.truncate(0), () => engine.open(path),
  ];
  for (const call of calls) {
    const e = await call().then(() => null, (x) => x);
    assert.instance(e, RingfenceError);
    assert.is(e.code, 'ERR_RINGFENCE_CLOSED', e.message);
    assert.match(e.message, /closed/);
  }
  assert.throws(() => engine.alloc(4096), (e) => e.code === 'ERR_RINGFENCE_CLOSED');
  await engine.close(); // twice is fine
  assert.is(engine.stats().inFlight, 0);
});

test.run();
