// Where one QD1 request's time goes through `ringfence serve`, against qemu-nbd, in one run.
// fio's nbd engine does 4 KiB random reads (or, with --rw randwrite, writes) at QD1 over a Unix
// socket against:
//   ringfence: serveNbd() in this process, on an engine of its own; File.prototype.read (or
//              .write) is timed, so each request's time splits into the engine's part (submit, device,
//              completion, up to the promise settling) and the rest (the socket, the server's
//              JavaScript, the reply, the client);
//   qemu-nbd:  --cache=none --aio=io_uring, the peer;
// and fio's io_uring engine on the file itself (O_DIRECT, QD1) gives the device's own latency
// (submission, slat, plus completion, clat). Rounds interleaved; medians over the rounds.
//
// Build first (npm run build); needs fio and qemu-nbd (scripts/setup.sh installs them):
//   node bench/nbd-qd1.mjs [--rw randread|randwrite] [--runtime S] [--repeat N] [--size 256M] [--dir DIR] [--json]
import { parseArgs } from 'node:util';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, File, serveNbd } from '../dist/src/index.js';
import { prepareDataFile } from '../dist/src/bench/data.js';
import { fioTime } from '../dist/src/bench/fio-time.js';
import { waitForSocket } from '../dist/src/bench/nbd.js';
import { haveCommand, parseSize } from '../dist/src/volume.js';

const { values: o } = parseArgs({ options: {
  runtime: { type: 'string', default: '3' }, repeat: { type: 'string', default: '3' }, size: { type: 'string', default: '256M' },
  dir: { type: 'string', default: '/var/tmp' }, json: { type: 'boolean', default: false }, rw: { type: 'string', default: 'randread' },
} });
const runtime = Number(o.runtime), repeat = Number(o.repeat), size = parseSize(o.size);
if (!(Number.isInteger(runtime) && runtime >= 1 && runtime <= 600)) throw new Error(`--runtime ${o.runtime}: give whole seconds from 1 to 600`);
if (!(Number.isInteger(repeat) && repeat >= 1 && repeat <= 100)) throw new Error(`--repeat ${o.repeat}: give a whole number from 1 to 100`);
for (const c of ['fio', 'qemu-nbd']) if (!haveCommand(c)) throw new Error(`${c} is not installed: run scripts/setup.sh (or apt-get install fio qemu-utils)`);
if (o.rw !== 'randread' && o.rw !== 'randwrite') throw new Error(`--rw ${o.rw}: use randread or randwrite`);
const rw = o.rw, op = rw === 'randread' ? 'read' : 'write';
if (!existsSync(o.dir)) throw new Error(`--dir ${o.dir} does not exist`);

const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
const log = (s) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);

/** fio's JSON for one job: IOPS and latency (us) of its reads or writes. */
function fio(args) {
  return new Promise((res, rej) => {
    execFile('fio', [...args, `--rw=${rw}`, '--bs=4k', '--iodepth=1', `--size=${size}`, '--time_based', `--runtime=${fioTime(runtime)}`, `--ramp_time=${fioTime(0.5)}`, '--output-format=json'],
      { timeout: (runtime + 30) * 1000, maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
        try {
          const d = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0][op];
          const p = d.clat_ns.percentile ?? {}, lp = d.lat_ns.percentile ?? {};
          res({ iops: d.iops, clatP50: p['50.000000'] / 1000, clatP90: p['90.000000'] / 1000, clatMean: d.clat_ns.mean / 1000,
            slatMean: (d.slat_ns?.mean ?? 0) / 1000, latMean: d.lat_ns.mean / 1000, latP50: lp['50.000000'] / 1000, latP90: lp['90.000000'] / 1000 });
        } catch { rej(new Error(`fio failed: ${err?.message ?? ''} ${stderr.slice(0, 300)}`)); }
      });
  });
}

// The engine's part of each request: File.prototype.read (or .write) from call to settling.
// Samples go into a preallocated array.
const samples = new Float64Array(1 << 22);
let nSamples = 0, timing = false;
const orig = File.prototype[op];
File.prototype[op] = function timed(buf, off) {
  if (!timing) return orig.call(this, buf, off);
  const t0 = performance.now();
  const p = orig.call(this, buf, off);
  p.then(() => { if (nSamples < samples.length) samples[nSamples++] = performance.now() - t0; }, () => {});
  return p;
};

const tmp = mkdtempSync(join(o.dir, 'ringfence-nbd-qd1-'));
const file = join(tmp, 'data.raw');
const got = { ringfence: [], qemu: [], device: [] };
try {
  log(`preparing ${size >> 20} MiB data file ${file}`);
  prepareDataFile(file, size, true);
  for (let r = 1; r <= repeat; r++) {
    // ringfence serve, in this process.
    {
      const sock = join(tmp, 'rf.sock');
      const engine = await Engine.start({ queueDepth: 256 });
      const server = await serveNbd({ engine, path: file, socket: sock });
      try {
        nSamples = 0; timing = true;
        const f = await fio(['--name=q', '--ioengine=nbd', `--uri=nbd+unix:///?socket=${sock}`]);
        timing = false;
        const e = samples.slice(0, nSamples).sort();
        f.engineP50 = pct(e, 0.5) * 1000; f.engineP90 = pct(e, 0.9) * 1000;
        f.engineMean = (e.reduce((a, x) => a + x, 0) / e.length) * 1000;
        got.ringfence.push(f);
        log(`round ${r}/${repeat} ringfence: ${f.iops.toFixed(0)} IOPS, clat mean ${f.clatMean.toFixed(1)} us, of which in engine.${op} ${f.engineMean.toFixed(1)} us`);
      } finally { timing = false; await server.close(); await engine.close(); }
    }
    // qemu-nbd.
    {
      const sock = join(tmp, 'qemu.sock');
      const child = spawn('qemu-nbd', ['-t', '-f', 'raw', '--cache=none', '--aio=io_uring', '-e', '8', '-k', sock, file], { stdio: 'ignore' });
      try {
        await waitForSocket(sock, child, 10000);
        const f = await fio(['--name=q', '--ioengine=nbd', `--uri=nbd+unix:///?socket=${sock}`]);
        got.qemu.push(f);
        log(`round ${r}/${repeat} qemu-nbd: ${f.iops.toFixed(0)} IOPS, clat mean ${f.clatMean.toFixed(1)} us`);
      } finally { child.kill(); rmSync(sock, { force: true }); }
    }
    // The device alone.
    {
      const f = await fio(['--name=q', '--ioengine=io_uring', '--direct=1', '--lat_percentiles=1', `--filename=${file}`]);
      got.device.push(f);
      log(`round ${r}/${repeat} device (fio io_uring on the file): slat ${f.slatMean.toFixed(1)} us + clat ${f.clatMean.toFixed(1)} us`);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const m = (k, key) => median(got[k].map((x) => x[key]));
const res = {
  runtime, repeat, size,
  ringfence: { iops: m('ringfence', 'iops'), clatP50: m('ringfence', 'clatP50'), clatP90: m('ringfence', 'clatP90'), clatMean: m('ringfence', 'clatMean'),
    engineP50: m('ringfence', 'engineP50'), engineP90: m('ringfence', 'engineP90'), engineMean: m('ringfence', 'engineMean') },
  qemu: { iops: m('qemu', 'iops'), clatP50: m('qemu', 'clatP50'), clatP90: m('qemu', 'clatP90'), clatMean: m('qemu', 'clatMean') },
  device: { slatMean: m('device', 'slatMean'), clatMean: m('device', 'clatMean'), latMean: m('device', 'latMean'), latP50: m('device', 'latP50'), latP90: m('device', 'latP90') },
};
if (o.json) console.log(JSON.stringify(res, null, 2));
else {
  const f = (x) => x.toFixed(1).padStart(6);
  const R = res.ringfence, Q = res.qemu, D = res.device;
  console.log(`4 KiB random ${op}s at QD1, fio nbd engine on a Unix socket, ${runtime} s per job, medians of ${repeat} interleaved rounds (us)`);
  console.log(`                     IOPS   clat p50   p90    mean`);
  console.log(`ringfence serve   ${R.iops.toFixed(0).padStart(6)}   ${f(R.clatP50)} ${f(R.clatP90)} ${f(R.clatMean)}`);
  console.log(`qemu-nbd io_uring ${Q.iops.toFixed(0).padStart(6)}   ${f(Q.clatP50)} ${f(Q.clatP90)} ${f(Q.clatMean)}`);
  console.log(`ringfence / qemu-nbd: ${(R.iops / Q.iops).toFixed(2)}x IOPS; clat p50 +${(R.clatP50 - Q.clatP50).toFixed(1)} us, p90 +${(R.clatP90 - Q.clatP90).toFixed(1)} us, mean +${(R.clatMean - Q.clatMean).toFixed(1)} us`);
  console.log(`inside ringfence, File.${op} from call to settle: p50 ${R.engineP50.toFixed(1)}, p90 ${R.engineP90.toFixed(1)}, mean ${R.engineMean.toFixed(1)} us; the rest of its mean (socket, server, reply, client): ${(R.clatMean - R.engineMean).toFixed(1)} us`);
  console.log(`the device alone (fio io_uring, O_DIRECT, QD1), submission to completion: p50 ${D.latP50.toFixed(1)}, p90 ${D.latP90.toFixed(1)}, mean ${D.latMean.toFixed(1)} us (of which submission ${D.slatMean.toFixed(1)})`);
}
