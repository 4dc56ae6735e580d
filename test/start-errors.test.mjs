// Engine.start() failures are RingfenceErrors with a code and advice: a forced backend the kernel
// refuses (kernel.io_uring_disabled=2), and a process out of file descriptors (ulimit -n).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Engine, RingfenceError } from '../dist/src/index.js';
import { isRoot } from './helpers/env.mjs';

const SYSCTL = '/proc/sys/kernel/io_uring_disabled';
const canToggle = isRoot && existsSync(SYSCTL);
if (!canToggle) console.log(`  skip: toggling ${SYSCTL} needs root`);

(canToggle ? test : test.skip)("backend: 'io_uring' with io_uring disabled by sysctl rejects with ERR_RINGFENCE_BACKEND_UNAVAILABLE and the reason", async () => {
  const before = readFileSync(SYSCTL, 'utf8').trim();
  writeFileSync(SYSCTL, '2');
  try {
    let err;
    try { const e = await Engine.start({ backend: 'io_uring', workers: 1 }); await e.close(); } catch (x) { err = x; }
    assert.ok(err instanceof RingfenceError, `a RingfenceError, got ${err}`);
    assert.is(err.code, 'ERR_RINGFENCE_BACKEND_UNAVAILABLE');
    assert.match(err.message, /io_uring/);
    assert.match(err.message, /backend: 'auto'/);
    // 'auto' falls back and says why io_uring was refused.
    const auto = await Engine.start({ backend: 'auto', workers: 1 });
    try {
      const w = auto.info().workers[0];
      assert.is.not(w.backend, 'io_uring');
      assert.ok(w.refused.io_uring, 'the refusal reason is reported');
    } finally { await auto.close(); }
  } finally { writeFileSync(SYSCTL, before); }
});

test('Engine.start() with too few file descriptors says the process is out of them and what to raise', () => {
  const script = `import('${new URL('../dist/src/index.js', import.meta.url).href}').then(async ({ Engine }) => {
    try { const e = await Engine.start({ workers: 4 }); await e.close(); console.log('started'); }
    catch (e) { console.log(JSON.stringify({ code: e.code, name: e.name, message: e.message })); }
  });`;
  const r = spawnSync('bash', ['-c', `ulimit -n 32 && exec "${process.execPath}" --input-type=module -e "$0"`, script], { encoding: 'utf8', timeout: 30000 });
  // 32 descriptors: enough for Node itself, not for four workers' threads, rings and doorbells.
  const line = r.stdout.trim().split('\n').pop() ?? '';
  assert.ok(line.startsWith('{'), `the child reported an error (stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr.slice(-300)})`);
  const e = JSON.parse(line);
  assert.is(e.code, 'EMFILE', line);
  assert.is(e.name, 'RingfenceError');
  assert.match(e.message, /out of file descriptors.*ulimit -n/);
});

test.run();
