// The quiet eventfd (native/uring_backend.cc, eventfd_back_on), measured on and off in one run.
// An inline io_uring context switches its registered eventfd off during its own enters, so the
// CQEs those enters post do not wake the loop a second time. This measures what that saves:
// loop wake-ups per request, CPU per request and IOPS, 4 KiB O_DIRECT random reads at QD1 and
// QD32 on a file in --dir (default /var/tmp), each case in a fresh child process, on and off
// interleaved, the median of --repeat rounds.
//   node bench/eventfd.mjs [--dir DIR | --xfs SIZE] [--runtime S] [--repeat N] [--json]
// --xfs SIZE (root) makes a temporary loop-mounted XFS volume for the file (a fast device: a
// completion about 20 us after its submit on this project's VMs) and removes it afterwards.
// The quiet eventfd is opt-in (RINGFENCE_QUIET_EVENTFD=1): "on" runs with it, "off" with
// RINGFENCE_QUIET_EVENTFD=0, the default. Build first (npm run build).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const BS = 4096;
const FILE_BYTES = 256 << 20;

if (process.argv[2] === '--child') {
  // The read loops of bench/threads.mjs (setup, readLoops, teardown), counted over one window.
  const { setup, readLoops, teardown, wallNow } = await import('./threads-worker.mjs');
  const [, , , path, qdS, secondsS] = process.argv;
  const qd = Number(qdS), seconds = Number(secondsS);
  const s = await setup(path, qd, { backend: 'io_uring' });
  const info = () => s.engine.info().workers[0].info;
  const blocks = FILE_BYTES / BS;
  await readLoops(s.f, s.bufs, blocks, 1, 0, wallNow() + 300); // warm-up
  const w0 = info().loopWakes, c0 = process.cpuUsage(), t0 = wallNow();
  const ops = await readLoops(s.f, s.bufs, blocks, 2, t0, t0 + seconds * 1000);
  const ms = wallNow() - t0, cpu = process.cpuUsage(c0), i = info();
  process.stdout.write(JSON.stringify({
    quiet: i.quietEventfd === true, iops: ops / (ms / 1000), wakesPerOp: (i.loopWakes - w0) / ops,
    cpuUsPerOp: (cpu.user + cpu.system) / ops,
  }));
  await teardown(s);
  process.exit(0);
}

const { values: o } = parseArgs({
  options: { dir: { type: 'string' }, xfs: { type: 'string' }, runtime: { type: 'string', default: '3' }, repeat: { type: 'string', default: '3' }, json: { type: 'boolean', default: false } },
});
if (o.dir !== undefined && o.xfs !== undefined) { process.stderr.write('--dir and --xfs are mutually exclusive: pick one\n'); process.exit(2); }
const runtime = Number(o.runtime), repeat = Number(o.repeat);
if (!(runtime > 0 && runtime <= 600)) { process.stderr.write(`--runtime ${o.runtime}: give seconds, more than 0 and at most 600\n`); process.exit(2); }
if (!(Number.isInteger(repeat) && repeat >= 1 && repeat <= 100)) { process.stderr.write(`--repeat ${o.repeat}: give a whole number from 1 to 100\n`); process.exit(2); }
const { mkdtempSync, rmSync } = await import('node:fs');
const { prepareDataFile } = await import('../dist/src/bench/data.js');
let vol = null;
if (o.xfs !== undefined) {
  const { makeXfsVolume, parseSize } = await import('../dist/src/volume.js');
  const { atExit } = await import('../dist/src/cleanup.js');
  let bytes;
  try { bytes = parseSize(o.xfs); } catch (e) { process.stderr.write(`--xfs: ${e.message}\n`); process.exit(2); }
  try { vol = makeXfsVolume(bytes, { log: (m) => process.stderr.write(m + '\n') }); } catch (e) { process.stderr.write(`--xfs: ${e.message}\n`); process.exit(2); }
  atExit(() => vol.cleanup());
}
const base = vol !== null ? vol.dir : (o.dir ?? '/var/tmp');
const dir = mkdtempSync(`${base}/rf-eventfd-bench-`);
const path = `${dir}/data`;
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
try {
  process.stderr.write(`preparing ${FILE_BYTES >> 20} MiB in ${dir}\n`);
  prepareDataFile(path, FILE_BYTES, true);
  const rows = [];
  for (const qd of [1, 32]) {
    const got = { on: [], off: [] };
    for (let round = 1; round <= repeat; round++) {
      for (const mode of ['on', 'off']) {
        process.stderr.write(`QD${qd} round ${round}/${o.repeat} quiet eventfd ${mode} ... `);
        const env = { ...process.env, RINGFENCE_QUIET_EVENTFD: mode === 'on' ? '1' : '0' };
        const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', path, String(qd), o.runtime], { encoding: 'utf8', env, timeout: 120000 });
        if (r.status !== 0) throw new Error(`child failed: ${r.stderr || r.error}`);
        const m = JSON.parse(r.stdout);
        if (mode === 'on' && !m.quiet) throw new Error('this machine does not use the quiet eventfd (io_uring inline on x86-64, Linux >= 6.8): nothing to compare');
        got[mode].push(m);
        process.stderr.write(`${Math.round(m.iops)} IOPS, ${m.wakesPerOp.toFixed(2)} wake-ups/op\n`);
      }
    }
    for (const mode of ['on', 'off']) {
      const g = got[mode];
      rows.push({ qd, mode, iops: median(g.map((x) => x.iops)), wakesPerOp: median(g.map((x) => x.wakesPerOp)), cpuUsPerOp: median(g.map((x) => x.cpuUsPerOp)) });
    }
  }
  if (o.json) console.log(JSON.stringify(rows, null, 2));
  else {
    console.log(`quiet eventfd on/off, 4 KiB O_DIRECT random reads, ${o.runtime} s per case, median of ${o.repeat} interleaved rounds (${vol !== null ? `a temporary ${o.xfs} XFS loop volume` : base})`);
    console.log('QD   eventfd  IOPS      loop wake-ups/op  CPU us/op');
    for (const r of rows) console.log(`${String(r.qd).padEnd(5)}${r.mode.padEnd(9)}${String(Math.round(r.iops)).padEnd(10)}${r.wakesPerOp.toFixed(3).padEnd(18)}${r.cpuUsPerOp.toFixed(2)}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
  vol?.cleanup();
}
