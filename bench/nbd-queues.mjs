// Where a deep queue's requests are, for `ringfence serve` and qemu-nbd in the same run, with fio
// directly on the same file as the reference: is the device kept busy, or are the requests
// somewhere else? fio's nbd engine does 4 KiB random reads (or, with --rw randwrite, writes) at
// --qd (default 32) over a Unix socket; fio's io_uring engine does the same job on the file with
// O_DIRECT ("fio direct", no NBD at all). Over a --window of each job, after a --ramp, the block
// layer's counters for the file's device (/proc/diskstats, src/bench/diskstats.ts) give:
//   device IOPS       requests the device completed per second
//   device us         mean time of a request from its arrival in the block layer to its
//                     completion (the I/O scheduler's queue and the device)
//   at the device     mean number of requests in flight there (its weighted time over the window)
//   elsewhere         --qd minus that: fio's requests not in the block layer (at fio, in the
//                     socket, in the server, or in the kernel above the block layer)
//   busy              share of the window the device had a request in flight
//   device / fio      the device's IOPS over fio's: 1.00 when the device did fio's requests and
//                     nothing else (the file is on a shared disk: another program's I/O shows here)
// and /proc/stat and /proc/PID/stat the CPU: the server's (all its threads, % of one core),
// fio's own (its usr_cpu + sys_cpu, % of one core), and the share of all the machine's CPUs
// that was idle. Reading the counters costs two reads of proc files per window, so unlike
// tracing or sampling it does not move the run.
//
// With fio direct at the same queue depth as the reference: if a server's "at the device" is
// far below fio direct's, its requests wait outside the block layer. Which CPU is busy, and
// whether the machine has idle CPU, narrows down where; it does not prove it (a request can
// also wait while no CPU is busy).
//
// --trace (root: tracefs) also records 0.3 s of the block layer's issue, requeue and completion
// events after each window and gives the share of that time the device held 0, 1-4, 5-15,
// 16-24 and 25+ reads and writes, and the stretches it held none (src/bench/inflight.ts): a
// mean in flight cannot tell a steady queue from waves. Recording is off during the counted
// window (the events are enabled before fio starts, which patches kernel code), but fio's IOPS
// cover the whole run, traced part included. For a file on a partition the trace counts the
// whole disk's I/O.
//
// Needs fio and qemu-nbd; build first (npm run build). --dir must be on a block device.
//   node bench/nbd-queues.mjs [--rw randread|randwrite] [--qd 32] [--repeat 3] [--ramp 1] [--window 2] [--size 256M] [--dir DIR] [--servers 'ringfence,qemu-nbd io_uring'] [--trace] [--json]
import { parseArgs } from 'node:util';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { prepareDataFile } from '../dist/src/bench/data.js';
import { fioTime } from '../dist/src/bench/fio-time.js';
import { diskCountersFor, diskWindow } from '../dist/src/bench/diskstats.js';
import { INFLIGHT_BUCKETS, inflightReport } from '../dist/src/bench/inflight.js';
import { NBD_SERVERS, stop, waitForSocket } from '../dist/src/bench/nbd.js';
import { Tracer, tracefsUnavailable } from '../dist/src/bench/tracefs.js';
import { clockTicks, processCpuSeconds } from '../dist/src/procstat.js';
import { haveCommand, parseSize } from '../dist/src/volume.js';
import { atExit, onStopSignal } from '../dist/src/cleanup.js';

const { values: o } = parseArgs({ options: {
  rw: { type: 'string', default: 'randread' }, qd: { type: 'string', default: '32' }, repeat: { type: 'string', default: '3' },
  ramp: { type: 'string', default: '1' }, window: { type: 'string', default: '2' }, size: { type: 'string', default: '256M' },
  dir: { type: 'string', default: '/var/tmp' }, servers: { type: 'string', default: 'ringfence,qemu-nbd io_uring' },
  json: { type: 'boolean', default: false }, trace: { type: 'boolean', default: false },
} });
const fail = (m) => { process.stderr.write(`nbd-queues: ${m}\n`); process.exit(2); };
const qd = Number(o.qd), repeat = Number(o.repeat), rampS = Number(o.ramp), windowS = Number(o.window);
if (o.rw !== 'randread' && o.rw !== 'randwrite') fail(`--rw ${o.rw}: use randread or randwrite`);
if (!(Number.isInteger(qd) && qd >= 1 && qd <= 256)) fail(`--qd ${o.qd}: give a whole number from 1 to 256`);
if (!(Number.isInteger(repeat) && repeat >= 1 && repeat <= 100)) fail(`--repeat ${o.repeat}: give a whole number from 1 to 100`);
if (!(rampS >= 0.2 && rampS <= 60)) fail(`--ramp ${o.ramp}: give seconds from 0.2 to 60 (the first requests of a connection are not counted)`);
if (!(windowS >= 0.5 && windowS <= 600)) fail(`--window ${o.window}: give seconds from 0.5 to 600`);
let size;
try { size = parseSize(o.size); } catch (e) { fail(`--size ${o.size}: ${e.message}`); }
if (!(size >= 1 << 20 && size % 4096 === 0)) fail(`--size ${o.size}: give at least 1M, a multiple of 4K (e.g. 256M)`);
const servers = o.servers.split(',').map((n) => n.trim());
for (const n of servers) if (!NBD_SERVERS.some((s) => s.name === n)) fail(`--servers: no server "${n}"; choose from ${NBD_SERVERS.map((s) => `"${s.name}"`).join(', ')}`);
for (const c of ['fio', ...new Set(servers.map((n) => NBD_SERVERS.find((s) => s.name === n).need))]) {
  if (!haveCommand(c)) fail(`${c} is not installed: run scripts/setup.sh (or apt-get install fio qemu-utils nbdkit)`);
}
if (!existsSync(o.dir)) fail(`--dir ${o.dir} does not exist`);
if (o.trace) { const why = tracefsUnavailable(); if (why !== null) fail(`--trace ${why}`); }
const TRACE_S = 0.3;
const tracer = o.trace ? new Tracer(['block/block_rq_issue', 'block/block_rq_requeue', 'block/block_rq_complete']) : null;
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'src', 'cli.js');
if (!existsSync(cli)) fail(`${cli} is missing: build first (npm run build)`);

const log = (s) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const median = (a) => { const v = a.filter((x) => Number.isFinite(x)).sort((x, y) => x - y), h = v.length >> 1; return v.length === 0 ? NaN : v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : '-');

/** Idle and total jiffies of the whole machine (the "cpu" line of /proc/stat; iowait counts as idle). */
function machineTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  return { idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0) };
}

/** One fio run; resolves with its IOPS and its own CPU share (usr + sys, % of a core, as fio reports it). */
function fio(target, out, seconds) {
  const args = ['--name=q', `--rw=${o.rw}`, '--bs=4k', `--iodepth=${qd}`, `--size=${size}`, '--time_based',
    `--ramp_time=${fioTime(rampS)}`, `--runtime=${fioTime(seconds)}`, '--output-format=json', `--output=${out}`, ...target];
  return new Promise((res, rej) => {
    execFile('fio', args, { timeout: (rampS + seconds + 30) * 1000, encoding: 'utf8' }, (err, _stdout, stderr) => {
      try {
        const j = JSON.parse(readFileSync(out, 'utf8')).jobs[0];
        res({ iops: (o.rw === 'randread' ? j.read : j.write).iops, fioCpu: (j.usr_cpu + j.sys_cpu) / 100 });
      } catch { rej(new Error(`fio failed: ${err?.message ?? ''} ${stderr.slice(0, 300)}`)); }
    });
  });
}

/**
 * fio's job on `target`, with the device's counters and the CPU read around the window. The ramp
 * is timed from the job's first I/O at the device (fio's start-up, and its nbd connection, come
 * before it), and fio runs 0.5 s past the window, so the window lies inside fio's measured time.
 */
async function measure(target, tmp, pid, disk) {
  // Before fio starts: enabling the events patches kernel code (src/bench/tracefs.ts).
  tracer?.prepare();
  const job = fio(target, join(tmp, 'fio.json'), windowS + 0.5 + (tracer ? TRACE_S + 0.2 : 0));
  let failed = false, ended = false;
  job.then(() => { ended = true; }, () => { failed = ended = true; }); // awaited below; until then a failure only ends the waits
  const base = disk.read(), moved = (c) => c.reads + c.writes > base.reads + base.writes;
  for (const t = Date.now(); !failed && !moved(disk.read()); await sleep(10)) {
    if (Date.now() - t > 20000) throw new Error('fio did no I/O on the device within 20 s');
  }
  await sleep(rampS * 1000);
  const d0 = disk.read(), t0 = performance.now(), m0 = machineTicks(), c0 = processCpuSeconds(pid);
  await sleep(windowS * 1000);
  const d1 = disk.read(), t1 = performance.now(), m1 = machineTicks(), c1 = processCpuSeconds(pid);
  let q = null;
  if (tracer) {
    tracer.start();
    await sleep(TRACE_S * 1000);
    tracer.stop();
    if (ended) log('  fio ended before the trace did: its tail is in the trace (give a longer --window or --ramp?)');
  }
  const f = await job;
  // Read once fio has finished: reading the trace takes a CPU for a while.
  if (tracer) {
    q = inflightReport(tracer.take(), disk.disk);
    tracer.restore();
    if (q.lost > 0) { log(`  the trace lost ${q.lost} events: its figures for this job are left out`); q = null; }
  }
  const w = diskWindow(d0, d1, t1 - t0);
  return {
    iops: f.iops, fioCpu: f.fioCpu, device: w.iops, deviceUs: w.latencyUs, atDevice: w.inFlight, elsewhere: qd - w.inFlight, busy: w.busy,
    deviceOverFio: w.iops / f.iops, flushes: w.flushes,
    serverCpu: (c1 - c0) / ((t1 - t0) / 1000), idle: (m1.idle - m0.idle) / (m1.total - m0.total),
    ...(tracer ? q === null ? { traced: NaN } : { traced: q.completed, ...Object.fromEntries(INFLIGHT_BUCKETS.map((b) => [`in${b}`, q.share[b]])), tracedMean: q.mean, gapsPerMs: q.gaps / (q.spanUs / 1000), gapUs: q.gapMeanUs } : {}),
  };
}

// The device is that of --dir, checked before anything is created (the data file goes there).
let disk;
try { disk = diskCountersFor(o.dir); } catch (e) { fail(e.message); }
const tmp = mkdtempSync(join(o.dir, 'ringfence-nbd-queues-'));
const file = join(tmp, 'data.raw');
const names = ['fio direct', ...servers];
const got = Object.fromEntries(names.map((n) => [n, []]));
let stopping = false, live = null;
onStopSignal((sig) => { stopping = true; log(`${sig}: stopping after this job (a second one exits at once)`); });
// At any exit (a second signal included) the server running, if any, is killed and the data removed.
atExit(() => { tracer?.restore(); if (live !== null && live.exitCode === null && live.signalCode === null) live.kill('SIGKILL'); rmSync(tmp, { recursive: true, force: true }); });
clockTicks(); // its getconf runs now, not inside a window
try {
  log(`preparing ${size >> 20} MiB data file ${file}`);
  prepareDataFile(file, size, true);
  log(`device ${disk.name}; 4 KiB ${o.rw} at QD${qd}; ${repeat} rounds of ${names.join(', ')}; ${rampS} s ramp, ${windowS} s window each`);
  for (let r = 1; r <= repeat && !stopping; r++) {
    const round = [];
    for (const n of names) {
      if (stopping) break;
      let st;
      if (n === 'fio direct') {
        st = await measure(['--ioengine=io_uring', '--direct=1', `--filename=${file}`], tmp, undefined, disk);
      } else {
        const sock = join(tmp, 'nbd.sock');
        const child = live = NBD_SERVERS.find((s) => s.name === n).start(file, sock);
        child.stderr.resume(); // drained, so that a chatty server never blocks on a full pipe
        try {
          await waitForSocket(sock, child, 10000);
          st = await measure(['--ioengine=nbd', `--uri=nbd+unix:///?socket=${sock}`], tmp, child.pid, disk);
        } finally {
          await stop(child); // SIGTERM, SIGKILL after 15 s
          live = null;
          rmSync(sock, { force: true });
        }
      }
      round.push([n, st]);
      log(`round ${r}/${repeat} ${n}: fio ${st.iops.toFixed(0)} IOPS; device ${st.device.toFixed(0)} IOPS (${st.deviceOverFio.toFixed(2)} of fio's), ${st.deviceUs.toFixed(0)} us, ${st.atDevice.toFixed(1)} at the device, busy ${pct(st.busy)}, ${st.flushes} flushes; CPU (of one core): server ${pct(st.serverCpu)}, fio ${pct(st.fioCpu)}; machine idle ${pct(st.idle)}`);
      if (tracer && Number.isFinite(st.traced)) log(`  traced ${st.traced} requests: in flight ${INFLIGHT_BUCKETS.map((b) => `${b} ${pct(st[`in${b}`])}`).join(', ')} of the time (mean ${st.tracedMean.toFixed(1)}); ${st.gapsPerMs.toFixed(2)} empty stretches per ms, ${Number.isFinite(st.gapUs) ? st.gapUs.toFixed(0) : '-'} us each`);
      if (Math.abs(st.deviceOverFio - 1) > 0.05) log(`  the device did ${st.deviceOverFio.toFixed(2)} times fio's IOPS: another program used the disk in this window, or fio's IOPS (over its whole run) moved`);
    }
    if (!stopping && round.length === names.length) for (const [n, st] of round) got[n].push(st);
  }
} finally {
  tracer?.restore();
  rmSync(tmp, { recursive: true, force: true });
}

if (got[names[0]].length === 0) { log('no complete round: nothing to report'); process.exit(stopping ? 130 : 1); }
const KEYS = ['iops', 'device', 'deviceOverFio', 'deviceUs', 'atDevice', 'elsewhere', 'busy', 'flushes', 'serverCpu', 'fioCpu', 'idle',
  ...(o.trace ? ['traced', ...INFLIGHT_BUCKETS.map((b) => `in${b}`), 'tracedMean', 'gapsPerMs', 'gapUs'] : [])];
const res = { rw: o.rw, qd, repeat, ramp: rampS, window: windowS, size, device: disk.name, rounds: got[names[0]].length, servers: {} };
for (const n of names) res.servers[n] = Object.fromEntries(KEYS.map((k) => [k, median(got[n].map((x) => x[k]))]));
// ringfence's fio IOPS over each other server's, round by round, and their median.
if (servers.includes('ringfence')) {
  res.ratios = Object.fromEntries(servers.filter((n) => n !== 'ringfence').map((n) => {
    const v = got.ringfence.map((x, i) => x.iops / got[n][i].iops);
    return [n, { rounds: v, median: median(v) }];
  }));
}
if (o.json) console.log(JSON.stringify(res, null, 2));
else {
  const num = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  console.log(`4 KiB random ${o.rw === 'randread' ? 'reads' : 'writes'} at QD${qd} on ${disk.name}, medians of ${res.rounds} interleaved rounds (${windowS} s windows after ${rampS} s); device figures from /proc/diskstats; "elsewhere" = ${qd} - "at the device"; CPU: server and fio % of one core, idle % of all ${availableParallelism()}`);
  const cols = ['', 'fio IOPS', 'device IOPS', 'device/fio', 'device us', 'at the device', 'elsewhere', 'busy', 'server CPU', 'fio CPU', 'machine idle'];
  const w = [18, 9, 12, 10, 10, 14, 10, 6, 11, 8, 13];
  console.log(cols.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' '));
  for (const n of names) {
    const s = res.servers[n];
    const row = [n, num(s.iops), num(s.device), num(s.deviceOverFio, 2), num(s.deviceUs), num(s.atDevice, 1), num(s.elsewhere, 1), pct(s.busy), n === 'fio direct' ? '-' : pct(s.serverCpu), pct(s.fioCpu), pct(s.idle)];
    console.log(row.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' '));
  }
  if (o.trace) {
    console.log(`traced ${TRACE_S} s after each window (block_rq_issue, requeue, complete): share of the time with N reads and writes at the device, and the stretches with none (at least 20 us); medians of the rounds, so a row need not add up to 100%`);
    console.log(['', ...INFLIGHT_BUCKETS.map((b) => `N=${b}`), 'mean', 'empty/ms', 'empty us'].map((c, i) => (i === 0 ? c.padEnd(18) : c.padStart(9))).join(' '));
    for (const n of names) {
      const s = res.servers[n];
      console.log([n, ...INFLIGHT_BUCKETS.map((b) => pct(s[`in${b}`])), num(s.tracedMean, 1), num(s.gapsPerMs, 2), num(s.gapUs)].map((c, i) => (i === 0 ? c.padEnd(18) : c.padStart(9))).join(' '));
    }
  }
  for (const [n, r] of Object.entries(res.ratios ?? {})) {
    console.log(`ringfence / ${n}, fio IOPS, same round: ${r.rounds.map((x) => x.toFixed(2)).join(', ')}; median ${r.median.toFixed(2)}x`);
  }
}
