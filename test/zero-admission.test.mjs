// The XFS workaround decides at registration whether a zero-write ends past EOF (and so must
// be serialising). A zero-write that then parks behind a shrinking truncate ends past EOF by
// the time it is admitted: the worker must decide again at admission, or a write past it runs
// while the (emulated, pre-5.5 XFS) zero-write sets the size, and the write is lost.
//
// Deterministic, with the bug emulated (native/emulate.cc: sample the size, allocate with
// KEEP_SIZE, sleep for the window, then truncate to the size computed from the sample):
//   1. the file holds 4 blocks;
//   2. in one tick: truncate(0), a request to another file, writeZeroes(0, BS). With two
//      workers the truncate and the zero-write reach the same worker, which pulls both at once
//      and registers both before either runs: the zero-write, inside [0, 4 BS) then, is
//      registered non-serialising and parks behind the truncate;
//   3. once the zero-write is inside its window (the truncate has completed and the file has
//      blocks again: the emulation allocates after it sampled the size), write(BS) on the other
//      worker, beyond the zero-write's end;
//   4. the write must survive: size 2 BS, its data at BS.
// The only timing assumed is the emulation window (200 ms) being longer than one 4 KiB write.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { fstatSync, openSync, closeSync, readFileSync } from 'node:fs';
import { Engine } from '../dist/src/index.js';
import { loadAddon } from '../dist/src/addon.js';
import { scratchDir, pattern, availableBackends, engineOptions } from './helpers/env.mjs';

const BACKENDS = availableBackends(loadAddon().probe());
const scratch = scratchDir('rf-zadm-');
test.after(() => scratch.cleanup());
const BS = 4096;

for (const backend of BACKENDS) {
  test(`${backend}: a zero-write that parked behind a shrinking truncate is re-checked at admission: the write past it survives`, async () => {
    const engine = await Engine.start(engineOptions({ backend, workers: 2, queueDepth: 8, xfsWorkaround: 'always', emulateXfsFallocateBug: { windowUs: 200000 } }));
    const path = join(scratch.dir, `zadm-${backend}`);
    const f = await engine.open(path, { create: true, truncate: true });
    const other = await engine.open(join(scratch.dir, `zadm-other-${backend}`), { create: true, truncate: true });
    const fd = openSync(path, 'r');
    try {
      assert.ok(f.info().xfsWorkaround.enabled, 'the workaround is on for the file');
      const data = engine.alloc(BS);
      data.set(pattern(BS, 41));
      const old = engine.alloc(4 * BS);
      old.set(pattern(4 * BS, 40));
      await f.write(old, 0);
      // Step 2: one tick. Requests go round-robin over the two workers.
      const t = f.truncate(0);
      const d = other.flush();
      const z = f.writeZeroes(0, BS);
      await t;
      // Step 3: the zero-write has sampled the size (0) once it has allocated its block.
      for (let i = 0; fstatSync(fd).blocks === 0; i++) {
        assert.ok(i < 5000, 'the zero-write started');
        await new Promise((r) => setTimeout(r, 1));
      }
      const w = f.write(data, BS);
      await Promise.all([d, z, w]);
      const size = await f.size();
      const disk = readFileSync(path);
      assert.ok(disk.subarray(BS, 2 * BS).equals(Buffer.from(data)), `the write at ${BS} was lost (file size ${size})`);
      assert.is(size, BigInt(2 * BS));
      assert.ok(disk.subarray(0, BS).every((b) => b === 0), 'the zero-write zeroed its block');
      assert.ok(f.stats().serialising >= 2, 'the truncate and the re-registered zero-write were serialising');
    } finally {
      closeSync(fd);
      await f.close(); await other.close(); await engine.close();
    }
  });
}

test.run();
