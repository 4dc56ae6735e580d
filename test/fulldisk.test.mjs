// A full filesystem (root only: a 300 MiB loop-mounted XFS volume). Filling it through the
// engine with 1 MiB writes: writes eventually fail with RingfenceError ENOSPC and a message
// that says the filesystem is full and what to do; every byte acknowledged before that reads
// back intact; after deleting a ballast file (and after truncating), writes succeed again.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { unlinkSync, statfsSync } from 'node:fs';
import { Engine, RingfenceError } from '../dist/src/index.js';
import { makeXfsVolume } from '../dist/src/volume.js';
import { pattern, skipUnless, xfsVolumeUnavailable, engineOptions } from './helpers/env.mjs';

const MiB = 1 << 20;
const base = pattern(MiB, 99);
/** The content of 1 MiB block k: a fixed pattern with k stamped into every 4 KiB page. */
function fillBlock(buf, k) {
  buf.set(base);
  for (let p = 0; p < MiB; p += 4096) { buf[p] = k & 0xff; buf[p + 1] = (k >> 8) & 0xff; buf[p + 2] = 0xee; }
}

skipUnless(test, xfsVolumeUnavailable())('filling an XFS volume: ENOSPC with advice, acknowledged data intact, writes work again after space is freed', async () => {
  const vol = makeXfsVolume(300 * MiB);
  let engine;
  try {
    engine = await Engine.start(engineOptions({ workers: 2, queueDepth: 16, bufferPoolBytes: 16 * MiB }));
    const ballastPath = join(vol.dir, 'ballast'), fillPath = join(vol.dir, 'fill');
    const ballast = await engine.open(ballastPath, { create: true, direct: true });
    const wbuf = Array.from({ length: 4 }, () => engine.alloc(MiB));
    for (let k = 0; k < 32; k++) { fillBlock(wbuf[0], 10000 + k); assert.is(await ballast.write(wbuf[0], k * MiB), MiB); }
    await ballast.close();

    const f = await engine.open(fillPath, { create: true, truncate: true, direct: true });
    const acked = new Map(); // block -> bytes acknowledged
    let enospc = null, next = 0;
    const shorts = []; // write() never resolves short: the rest is retried, and rejects if it fails
    // Four 1 MiB writes in flight at a time until the first failure.
    while (enospc === null && next < 400) {
      const batch = [];
      for (let j = 0; j < 4; j++, next++) {
        const k = next;
        fillBlock(wbuf[j], k);
        batch.push(f.write(wbuf[j], k * MiB).then((n) => { if (n > 0) acked.set(k, n); if (n !== MiB) shorts.push(`${k}: ${n}`); }, (e) => { enospc ??= e; }));
      }
      await Promise.all(batch);
    }
    const free = statfsSync(vol.dir);
    console.log(`  ${acked.size} MiB acknowledged before the first failure; ${free.bavail * free.bsize} bytes free`);
    assert.ok(enospc !== null, 'the volume filled up');
    assert.instance(enospc, RingfenceError);
    assert.is(enospc.code, 'ENOSPC', enospc.message);
    assert.is(enospc.op, 'write');
    assert.is(enospc.path, fillPath);
    assert.match(enospc.message, /filesystem is full/);
    assert.match(enospc.message, /free space|grow the volume/);
    assert.match(enospc.message, /retry/);
    assert.ok(acked.size > 150, `most of the volume was written (${acked.size} MiB)`);
    assert.equal(shorts, [], 'no write resolved with fewer bytes than asked');

    // Everything acknowledged reads back intact (through the engine, O_DIRECT: from the disk).
    const rbuf = engine.alloc(MiB), expect = Buffer.alloc(MiB);
    for (const [k, n] of acked) {
      assert.ok(await f.read(rbuf, k * MiB) >= n, `block ${k}: at least the ${n} acknowledged bytes read back`);
      fillBlock(expect, k);
      assert.ok(Buffer.from(rbuf.buffer, rbuf.byteOffset, n).equals(expect.subarray(0, n)), `acknowledged block ${k} intact`);
    }

    // Still full: another write fails the same way (nothing was silently half-done).
    const again = await f.write(wbuf[0], next * MiB).then(() => null, (e) => e);
    assert.ok(again !== null && again.code === 'ENOSPC', `still ENOSPC while full (${again?.code})`);

    // Free space by deleting the ballast: writes succeed again.
    unlinkSync(ballastPath);
    for (let k = next; k < next + 8; k++) {
      fillBlock(wbuf[0], k);
      assert.is(await f.write(wbuf[0], k * MiB), MiB, `write ${k} after deleting the ballast`);
      assert.is(await f.read(rbuf, k * MiB), MiB);
      fillBlock(expect, k);
      assert.ok(Buffer.from(rbuf).equals(expect), `block ${k} written after freeing space reads back`);
    }
    // Fill again, then free space by truncating the file itself.
    let full2 = null;
    for (let k = next + 8; full2 === null && k < 600; k++) { fillBlock(wbuf[0], k); await f.write(wbuf[0], k * MiB).catch((e) => { full2 = e; }); }
    assert.is(full2?.code, 'ENOSPC', 'full again');
    await f.truncate(64 * MiB);
    fillBlock(wbuf[0], 7);
    assert.is(await f.write(wbuf[0], 70 * MiB), MiB, 'a write succeeds after truncate() freed space');
    await f.flush();
    await f.close();
  } finally {
    await engine?.close();
    vol.cleanup();
  }
});

test.run();
