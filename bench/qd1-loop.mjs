// One QD1 read loop on the engine (`await file.read()` of 4 KiB at random offsets, O_DIRECT), and
// the same loop in C with the engine's wake-up design, on the same file: what the design costs
// against what the engine's code costs. The C side (bench/qd1-loop.c, built here with gcc and
// liburing) runs three ways:
//   A: fio's way: submit, then wait inside io_uring_enter for the completion;
//   B: the engine's way: a DEFER_TASKRUN ring with a registered eventfd, epoll on the eventfd,
//      read the eventfd, an enter to run the completion work, reap;
//   C: QEMU's way: a plain ring, epoll on the ring's fd, reap.
// Prints us per read and CPU us per read for each (the engine's also split into user and
// system time), interleaved over --repeat rounds.
// --buffered runs the engine's loop alone, without O_DIRECT, on a file read into the page cache
// first: each read completes inside its submit, so the thread need not sleep (the loop wake-ups
// per read say whether it did), and what is left is the engine's own cost per request.
//   node bench/qd1-loop.mjs [--file PATH (default: a new 256 MiB file in /var/tmp)] [--runtime S] [--repeat N] [--buffered]
// For a profile: perf record -F 5000 -g node --perf-basic-prof bench/qd1-loop.mjs --engine-only --file PATH
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from '../dist/src/index.js';
import { prepareDataFile } from '../dist/src/bench/data.js';

const { values: o } = parseArgs({ options: {
  file: { type: 'string' }, runtime: { type: 'string', default: '3' }, repeat: { type: 'string', default: '2' },
  'engine-only': { type: 'boolean', default: false }, buffered: { type: 'boolean', default: false },
} });
const runtime = Number(o.runtime), repeat = Number(o.repeat);
if (!(runtime > 0 && runtime <= 600)) throw new Error(`--runtime ${o.runtime}: give seconds above 0, at most 600`);
if (!(Number.isInteger(repeat) && repeat >= 1 && repeat <= 100)) throw new Error(`--repeat ${o.repeat}: give a whole number from 1 to 100`);
const SIZE = 256 << 20;
// The data file (unless --file) and the C loop's binary live here; removed at the end.
const tmp = mkdtempSync('/var/tmp/ringfence-qd1-');
const file = o.file ?? join(tmp, 'data.raw');

async function engineLoop() {
  const engine = await Engine.start({ queueDepth: 256 });
  const f = await engine.open(file, { readOnly: true, direct: !o.buffered });
  const buf = engine.alloc(4096);
  const nblk = Math.floor(statSync(file).size / 4096);
  let n = 0, seed = 1;
  const c0 = process.cpuUsage(), t0 = performance.now(), end = t0 + runtime * 1000;
  while (performance.now() < end) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    await f.read(buf, (seed % nblk) * 4096);
    n++;
  }
  const t = performance.now() - t0, c = process.cpuUsage(c0);
  // Times the thread's event loop was woken for the engine (its eventfd): per read, whether it slept.
  const wakes = (engine.info().workers?.[0]?.info?.loopWakes ?? NaN) / n;
  await f.close(); await engine.close();
  return `engine${o.buffered ? ' (buffered, cached)' : ''}: ${(t * 1000 / n).toFixed(1)} us/read, cpu ${((c.user + c.system) / n).toFixed(1)} us/read (user ${(c.user / n).toFixed(1)}, system ${(c.system / n).toFixed(1)}), loop wake-ups per read ${wakes.toFixed(2)}`;
}

try {
  if (!o.file) { process.stderr.write(`preparing ${file}\n`); prepareDataFile(file, SIZE, true); }
  let bin = null;
  if (o.buffered) { // read it once into the page cache, 1 MiB at a time
    const fd = openSync(file, 'r'), chunk = Buffer.allocUnsafe(1 << 20);
    try { while (readSync(fd, chunk) > 0); } finally { closeSync(fd); }
  }
  if (!o['engine-only'] && !o.buffered) {
    bin = join(tmp, 'qd1-loop');
    const src = join(fileURLToPath(new URL('.', import.meta.url)), 'qd1-loop.c');
    try { execFileSync('gcc', ['-O2', src, '-o', bin, '-luring'], { stdio: 'inherit' }); }
    catch { throw new Error('building bench/qd1-loop.c failed: it needs gcc and liburing-dev (scripts/setup.sh installs them)'); }
  }
  for (let r = 1; r <= repeat; r++) {
    console.log(`round ${r}/${repeat}: ${await engineLoop()}`);
    if (bin) for (const m of ['A', 'B', 'C']) console.log(`round ${r}/${repeat}: ${execFileSync(bin, [m, file, String(runtime)], { encoding: 'utf8' }).trim()}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
