// Errors whose cause is the environment say that cause and what to do: a forced backend the kernel
// refuses (kernel.io_uring_disabled=2), a process out of file descriptors (ulimit -n), a
// locked-memory limit too low for registered buffers (ulimit -l), and EINVAL from a file that is
// not O_DIRECT (no alignment advice), including a flush (no offset).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Engine, RingfenceError } from '../dist/src/index.js';
import { isRoot, availableBackends } from './helpers/env.mjs';
import { loadAddon } from '../dist/src/addon.js';

const BACKENDS = availableBackends(loadAddon().probe());

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
    try { const e = await Engine.start({ workers: 16 }); await e.close(); console.log('started'); }
    catch (e) { console.log(JSON.stringify({ code: e.code, name: e.name, message: e.message })); }
  });`;
  const r = spawnSync('bash', ['-c', `ulimit -n 64 && exec "${process.execPath}" --input-type=module -e "$0"`, script], { encoding: 'utf8', timeout: 30000 });
  // 64 descriptors: enough for Node itself and for loading the package (the ESM loader reads
  // its modules concurrently), not for sixteen workers' threads, rings and doorbells.
  const line = r.stdout.trim().split('\n').pop() ?? '';
  assert.ok(line.startsWith('{'), `the child reported an error (stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr.slice(-300)})`);
  const e = JSON.parse(line);
  assert.is(e.code, 'EMFILE', line);
  assert.is(e.name, 'RingfenceError');
  assert.match(e.message, /out of file descriptors.*ulimit -n/);
});

// As root the child runs as nobody, which needs a node binary nobody may execute (a Node
// installed under /root is not).
const memlockRunnable = !isRoot || spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', '0']).status === 0;
if (!memlockRunnable) console.log(`  skip: the memlock test runs its child as nobody, who cannot execute ${process.execPath}`);
(BACKENDS.includes('io_uring') && memlockRunnable ? test : test.skip)('io_uring under a low RLIMIT_MEMLOCK: info() says why the pool is not registered, and what to raise', () => {
  const script = `const { Engine } = await import('${new URL('../dist/src/index.js', import.meta.url).href}');
    const e = await Engine.start({ backend: 'io_uring', workers: 1 });
    const f = await e.open('/proc/self/status', { direct: false, readOnly: true });
    const n = await f.read(Buffer.alloc(4096), 0);
    console.log(JSON.stringify({ info: e.info().workers[0].info, n }));
    await e.close();`;
  // Root has CAP_IPC_LOCK, which the limit does not bind: run the child as nobody then. 1 MiB
  // is enough for the rings (Node >= 22's own loop rings included), not for the 64 MiB pool.
  const drop = isRoot ? 'setpriv --reuid=65534 --regid=65534 --clear-groups ' : '';
  const r = spawnSync('bash', ['-c', `ulimit -l 1024 && cd / && exec ${drop}"${process.execPath}" --input-type=module -e "$0"`, script], { encoding: 'utf8', timeout: 30000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  assert.ok(line.startsWith('{'), `child output: ${r.stdout} ${r.stderr.slice(-400)}`);
  const { info, n } = JSON.parse(line);
  assert.is(info.fixedBuffers, false);
  assert.match(info.fixedBuffersReason ?? '', /RLIMIT_MEMLOCK, 1024 KiB.*ulimit -l/);
  assert.ok(n > 0, 'I/O still works without registered buffers');
});

test('EINVAL on a file that is not O_DIRECT gives no alignment advice; a failed flush names no offset', async () => {
  for (const backend of BACKENDS) {
    const e = await Engine.start({ backend, workers: 1 });
    try {
      const f = await e.open('/proc/self/status', { direct: false, readOnly: true });
      const fl = await f.flush().then(() => null, (x) => x);
      assert.ok(fl instanceof RingfenceError, `${backend}: fsync of a /proc file fails`);
      assert.is(fl.code, 'EINVAL');
      assert.not.match(fl.message, /offset/, `${backend}: ${fl.message}`);
      assert.not.match(fl.message, /multiples|alignment of|direct: false \}/, `${backend}: no O_DIRECT advice for a buffered file`);
      assert.match(fl.message, /not O_DIRECT/);
      if (backend === 'libaio') {
        // libaio cannot read /proc files asynchronously: EINVAL, with the same advice.
        const rd = await f.read(Buffer.alloc(4096), 0).then(() => null, (x) => x);
        assert.ok(rd instanceof RingfenceError && rd.code === 'EINVAL', String(rd));
        assert.match(rd.message, /not O_DIRECT, so alignment is not the cause/);
      }
      await f.close();
    } finally { await e.close(); }
  }
});

test('open() out of file descriptors says so and what to raise (EMFILE)', () => {
  const script = `const { Engine } = await import('${new URL('../dist/src/index.js', import.meta.url).href}');
    const e = await Engine.start({ workers: 1 });
    const files = [];
    let err = null;
    for (let i = 0; i < 200 && err === null; i++) {
      try { files.push(await e.open('/proc/self/status', { direct: false, readOnly: true })); } catch (x) { err = x; }
    }
    for (const f of files) await f.close();
    await e.close();
    console.log(JSON.stringify(err && { code: err.code, name: err.name, message: err.message }));`;
  const r = spawnSync('bash', ['-c', `ulimit -n 64 && exec "${process.execPath}" --input-type=module -e "$0"`, script], { encoding: 'utf8', timeout: 30000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  assert.ok(line.startsWith('{'), `the child ran out of descriptors (stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr.slice(-300)})`);
  const e = JSON.parse(line);
  assert.is(e.code, 'EMFILE');
  assert.is(e.name, 'RingfenceError');
  assert.match(e.message, /out of file descriptors.*ulimit -n/);
});

test.run();
