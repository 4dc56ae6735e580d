// Where one QD1 NBD request's time goes, stage by stage, from the kernel's own trace, for
// `ringfence serve` and qemu-nbd in the same run. fio's nbd engine does 4 KiB random reads (or,
// with --rw randwrite, writes) at QD1 over a Unix socket; while it runs, the kernel's tracefs
// records --window seconds of system calls and block-layer events, and each request
// (fio's 28-byte request header sent, to its next one) is split into:
//   client sends       fio's send of the request, until it waits in poll()
//   server wakes       fio waits -> the server's waiting call (epoll_pwait, ppoll) returns
//   server submits     the server runs -> the block layer issues the I/O (parse, engine, enter)
//   device             issue -> the device's completion interrupt (includes the kick, below)
//   server woken       completion -> the server's waiting call returns again
//   server replies     the server runs -> its reply write(2)/sendmsg(2)/sendto(2) starts (reap, settle, reply)
//   client wakes       the reply's write starts -> fio runs
//   client reads       fio runs -> its next request's send (reading the reply)
// and, off the request's path, "server after its reply": the reply call's return -> the
// server's next waiting call (the rest of the server's work for the request, ringfence's
// JavaScript settling it, plus fio's run if fio preempted it), and the share of replies fio
// woke for on the server's own CPU; with --sched (the scheduler's wake-up and switch events
// recorded too, which costs more tracing, in both servers), how the client got a CPU after the
// reply: the reply -> its wake-up, the wake-up -> its switch-in, and what its CPU ran until
// then (the server, preempted or asleep, the idle task, or another task);
// and, inside "device", the kick: issue -> the submitting io_uring_enter returns (the virtio
// notify, a VM exit on this machine). src/bench/stages.ts parses the trace. "server submits" and
// "server replies" are the server's own user-space work plus a few short system calls: that is
// where two servers on one device and one client differ. Tracing costs about 1 us per traced
// system call, in both servers (which make different numbers of them).
// p50: the median over the traced requests of each round, then the median of the rounds; mean:
// the average of the rounds' means (so that the stages add up to the whole request).
//
// "same CPU" is the share of the requests that the server took up on the CPU that fio had sent
// them from (where the server's first event for the request was: the return of its wait, or the
// block layer's issue). The scheduler places the threads; --cpus SERVER:CLIENT starts each server
// under taskset -c SERVER and fio under taskset -c CLIENT (CPU lists: 0, 1, 0-1), the same for
// both servers, to measure one placement rather than the scheduler's (e.g. --cpus 0:0, 1:0).
//
// Needs root (tracefs at /sys/kernel/tracing), fio and qemu-nbd; build first (npm run build):
//   node bench/nbd-stages.mjs [--rw randread|randwrite] [--repeat N] [--window S] [--size 256M] [--dir DIR] [--cpus S:C] [--sched] [--json]
import { parseArgs } from 'node:util';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareDataFile } from '../dist/src/bench/data.js';
import { fioTime } from '../dist/src/bench/fio-time.js';
import { parseCpus, pinned } from '../dist/src/bench/cpus.js';
import { NBD_SERVERS, waitForSocket } from '../dist/src/bench/nbd.js';
import { CLIENT_CPU_FROM, stageReport } from '../dist/src/bench/stages.js';
import { Tracer, tracefsUnavailable } from '../dist/src/bench/tracefs.js';
import { haveCommand, parseSize } from '../dist/src/volume.js';
import { atExit, onStopSignal } from '../dist/src/cleanup.js';

const { values: o } = parseArgs({ options: {
  repeat: { type: 'string', default: '3' }, window: { type: 'string', default: '0.3' }, size: { type: 'string', default: '256M' },
  dir: { type: 'string', default: '/var/tmp' }, json: { type: 'boolean', default: false }, rw: { type: 'string', default: 'randread' },
  cpus: { type: 'string' }, sched: { type: 'boolean', default: false },
} });
const repeat = Number(o.repeat), windowS = Number(o.window), size = parseSize(o.size);
const fail = (m) => { process.stderr.write(`nbd-stages: ${m}\n`); process.exit(2); };
if (!(Number.isInteger(repeat) && repeat >= 1 && repeat <= 100)) fail(`--repeat ${o.repeat}: give a whole number from 1 to 100`);
if (!(windowS > 0 && windowS <= 5)) fail(`--window ${o.window}: give seconds, more than 0 and at most 5 (the trace buffer holds about 5 s)`);
if (o.rw !== 'randread' && o.rw !== 'randwrite') fail(`--rw ${o.rw}: use randread or randwrite`);
for (const c of ['fio', 'qemu-nbd']) if (!haveCommand(c)) fail(`${c} is not installed: run scripts/setup.sh (or apt-get install fio qemu-utils)`);
const why = tracefsUnavailable();
if (why !== null) fail(why);
if (!existsSync(o.dir)) fail(`--dir ${o.dir} does not exist`);
const cpus = parseCpus(o.cpus);
if (typeof cpus === 'string') fail(cpus);
const { server: serverCpus, client: clientCpus } = cpus;
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'src', 'cli.js');
if (!existsSync(cli)) fail(`${cli} is missing: build first (npm run build)`);

const log = (s) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const median = (a) => { const v = [...a].sort((x, y) => x - y), h = v.length >> 1; return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2; };
const average = (a) => a.reduce((x, y) => x + y, 0) / a.length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const EVENTS = [
  'block/block_rq_issue', 'block/block_rq_complete', ...(o.sched ? ['sched/sched_wakeup', 'sched/sched_switch'] : []),
  ...['io_uring_enter', 'epoll_pwait', 'epoll_wait', 'ppoll', 'poll', 'read', 'write', 'writev', 'recvfrom', 'recvmsg', 'sendto', 'sendmsg']
    .flatMap((s) => [`syscalls/sys_enter_${s}`, `syscalls/sys_exit_${s}`]),
];

function fioRun(uri, seconds) {
  return new Promise((res, rej) => {
    const fio = ['fio', '--name=q', '--ioengine=nbd', `--uri=${uri}`, `--rw=${o.rw}`, '--bs=4k', '--iodepth=1', `--size=${size}`,
      '--time_based', `--runtime=${fioTime(seconds)}`, '--output-format=json'];
    // taskset execs fio, so the client's command name stays "fio".
    const [cmd, ...args] = pinned(fio, clientCpus);
    execFile(cmd, args, { timeout: (seconds + 30) * 1000, maxBuffer: 16 << 20, encoding: 'utf8' },
    (err, stdout, stderr) => {
      try {
        const j = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0];
        res((o.rw === 'randread' ? j.read : j.write).iops);
      } catch { rej(new Error(`fio failed: ${err?.message ?? ''} ${stderr.slice(0, 300)}`)); }
    });
  });
}

const SERVERS = ['ringfence', 'qemu-nbd io_uring'].map((n) => NBD_SERVERS.find((x) => x.name === n));

const tracer = new Tracer(EVENTS);
const tmp = mkdtempSync(join(o.dir, 'ringfence-nbd-stages-'));
const file = join(tmp, 'data.raw');
const got = Object.fromEntries(SERVERS.map((s) => [s.name, []]));
// The first Ctrl-C (or SIGTERM) stops after the round in progress, which is not counted; a second
// one exits at once. Either way, and at any exit, tracefs is put back and the data file removed.
let stopping = false;
onStopSignal((sig) => { stopping = true; log(`${sig}: stopping (a second one exits at once)`); });
atExit(() => { tracer.restore(); rmSync(tmp, { recursive: true, force: true }); });
try {
  log(`preparing ${size >> 20} MiB data file ${file}`);
  prepareDataFile(file, size, true);
  for (let r = 1; r <= repeat && !stopping; r++) {
    const round = [];
    for (const s of SERVERS) {
      if (stopping) break;
      const sock = join(tmp, 'nbd.sock');
      // Before the server and the client start: enabling the events patches kernel code, and the
      // buffer is allocated (src/bench/tracefs.ts). Recording starts 1.5 s into fio's run.
      tracer.prepare();
      // Under taskset when pinned: it execs the server, so the pid (the server's main thread,
      // which the parser follows) is the server's.
      const child = s.start(file, sock, serverCpus);
      child.stderr.resume(); // drained, so that a chatty server never blocks on a full pipe
      try {
        await waitForSocket(sock, child, 10000);
        const seconds = Math.ceil(windowS + 3);
        const job = fioRun(`nbd+unix:///?socket=${sock}`, seconds);
        await sleep(1500);
        tracer.start();
        await sleep(windowS * 1000);
        tracer.stop();
        // fio finishes before the trace is read: reading it takes a CPU for a while.
        const iops = await job;
        const text = tracer.take();
        const st = stageReport(text, child.pid);
        st.iops = iops;
        round.push([s.name, st]);
        log(`round ${r}/${repeat} ${s.name}: ${iops.toFixed(0)} IOPS (${seconds} s, traced ${windowS} s); ${st.requests} requests traced, p50 ${st.p50['whole request'].toFixed(0)} us, server submits ${st.p50['server submits'].toFixed(0)}, replies ${st.p50['server replies'].toFixed(0)}, same CPU ${(100 * st.sameCpu).toFixed(0)}%, reply on fio's CPU ${(100 * st.replySameCpu).toFixed(0)}%, after the reply ${st.afterReply.p50.toFixed(0)}${o.sched ? `; fio's CPU after the reply (${st.clientWake.requests} requests): ${Object.entries(st.clientWake.from).map(([k, v]) => `${k} ${Number.isFinite(v) ? (100 * v).toFixed(0) : '-'}%`).join(', ')}` : ''}`);
      } finally {
        tracer.restore();
        child.kill('SIGTERM');
        await new Promise((res) => { if (child.exitCode !== null || child.signalCode !== null) res(); else child.once('exit', res); });
        rmSync(sock, { force: true });
      }
    }
    // A round that a signal cut short is not counted (its servers and fio saw the signal too).
    if (!stopping && round.length === SERVERS.length) for (const [n, st] of round) got[n].push(st);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
  tracer.restore();
}

const names = SERVERS.map((s) => s.name);
if (names.some((n) => got[n].length === 0)) { log('no complete round: nothing to report'); process.exit(stopping ? 130 : 1); }
const keys = Object.keys(got[names[0]][0].p50);
const res = { rw: o.rw, repeat, window: windowS, size, cpus: o.cpus ?? null, sched: o.sched, servers: {} };
for (const n of names) {
  res.servers[n] = {
    iops: median(got[n].map((x) => x.iops)), requests: median(got[n].map((x) => x.requests)),
    // A round with no counted request has no share (NaN): left out.
    sameCpu: median(got[n].map((x) => x.sameCpu).filter((x) => Number.isFinite(x))),
    replySameCpu: median(got[n].map((x) => x.replySameCpu).filter((x) => Number.isFinite(x))),
    p50: Object.fromEntries(keys.map((k) => [k, median(got[n].map((x) => x.p50[k]))])),
    // Means: the average of the rounds' means, so that the stages add up to the whole request.
    mean: Object.fromEntries(keys.map((k) => [k, average(got[n].map((x) => x.mean[k]))])),
    // Off the request's path: the server's run from its reply's return to its next wait.
    afterReply: {
      p50: median(got[n].map((x) => x.afterReply.p50).filter((x) => Number.isFinite(x))),
      mean: average(got[n].map((x) => x.afterReply.mean).filter((x) => Number.isFinite(x))),
    },
    // How fio got a CPU after the reply (with --sched): the shares pooled over the rounds' requests
    // (so that they add up), the p50s the median of the rounds that had such requests.
    ...(o.sched ? { clientWake: ((w) => {
      const total = w.reduce((a, x) => a + x.requests, 0);
      const count = (k) => w.reduce((a, x) => a + x.from[k] * x.requests, 0);
      const med = (v) => median(v.filter((x) => Number.isFinite(x)));
      return {
        requests: total, wokenP50: med(w.map((x) => x.wokenP50)), switchedInP50: med(w.map((x) => x.switchedInP50)),
        from: Object.fromEntries(CLIENT_CPU_FROM.map((k) => [k, total === 0 ? NaN : count(k) / total])),
        count: Object.fromEntries(CLIENT_CPU_FROM.map((k) => [k, Math.round(count(k))])),
        byFrom: Object.fromEntries(CLIENT_CPU_FROM.map((k) => [k, Object.fromEntries(['clientWakes', 'afterReply'].map((f) =>
          [f, med(w.filter((x) => x.from[k] > 0).map((x) => x.byFrom[k][f]))]))])),
      };
    })(got[n].map((x) => x.clientWake).filter((x) => x.requests > 0)) } : {}),
  };
}
if (o.json) console.log(JSON.stringify(res, null, 2));
else {
  const [a, b] = names.map((n) => res.servers[n]);
  const f = (x) => x.toFixed(1).padStart(7);
  console.log(`4 KiB random ${o.rw === 'randread' ? 'reads' : 'writes'} at QD1 (fio nbd, Unix socket), stages from the kernel trace, us; p50: median of ${got[names[0]].length} interleaved rounds' medians; mean: average of their means; ${a.requests} and ${b.requests} requests traced per round`);
  console.log(`${'stage'.padEnd(22)} ${'ringfence p50'.padStart(13)} ${'qemu-nbd p50'.padStart(13)} ${'ringfence mean'.padStart(14)} ${'qemu-nbd mean'.padStart(14)}   mean difference`);
  for (const k of keys) {
    console.log(`${k.padEnd(22)} ${f(a.p50[k]).padStart(13)} ${f(b.p50[k]).padStart(13)} ${f(a.mean[k]).padStart(14)} ${f(b.mean[k]).padStart(14)}   ${(a.mean[k] - b.mean[k] >= 0 ? '+' : '') + (a.mean[k] - b.mean[k]).toFixed(1)}`);
  }
  console.log(`${'server after its reply'.padEnd(22)} ${f(a.afterReply.p50).padStart(13)} ${f(b.afterReply.p50).padStart(13)} ${f(a.afterReply.mean).padStart(14)} ${f(b.afterReply.mean).padStart(14)}   (off the request's path: the reply's return to the server's next wait)`);
  console.log(`requests the server took up on fio's CPU (median of the rounds): ringfence ${(100 * a.sameCpu).toFixed(0)}%, qemu-nbd ${(100 * b.sameCpu).toFixed(0)}%${o.cpus === undefined ? ' (placed by the scheduler)' : ` (pinned: --cpus ${o.cpus}, server:fio)`}`);
  console.log(`replies fio woke for on the server's CPU (median of the rounds): ringfence ${(100 * a.replySameCpu).toFixed(0)}%, qemu-nbd ${(100 * b.replySameCpu).toFixed(0)}%`);
  const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : '-');
  if (o.sched) {
    const us = (x) => (Number.isFinite(x) ? x.toFixed(0) : '-');
    const [x, y] = [a.clientWake, b.clientWake];
    if (x.requests === 0 || y.requests === 0) log('--sched: no request with fio\'s wake-up after the reply was traced for a server (does this kernel have sched/sched_wakeup and sched/sched_switch?)');
    console.log(`after the reply, fio (p50, median of the rounds; ringfence / qemu-nbd): woken ${us(x.wokenP50)} / ${us(y.wokenP50)} us after the reply's start, switched in ${us(x.switchedInP50)} / ${us(y.switchedInP50)} us after its wake-up; ${x.requests} / ${y.requests} requests over the rounds`);
    console.log(`  what fio's CPU ran until fio ran    requests (share, over the rounds)    client wakes p50    server after its reply p50   (ringfence / qemu-nbd)`);
    for (const k of CLIENT_CPU_FROM) {
      console.log(`  ${k.padEnd(35)} ${`${x.count[k]} (${pct(x.from[k])}) / ${y.count[k]} (${pct(y.from[k])})`.padStart(33)} ${`${us(x.byFrom[k].clientWakes)} / ${us(y.byFrom[k].clientWakes)}`.padStart(19)} ${`${us(x.byFrom[k].afterReply)} / ${us(y.byFrom[k].afterReply)}`.padStart(29)}`);
    }
  }
  console.log(`IOPS over each whole fio run (traced part included): ringfence ${a.iops.toFixed(0)}, qemu-nbd ${b.iops.toFixed(0)}, ${(a.iops / b.iops).toFixed(2)}x`);
}
