// `ringfence bench` end to end, short: every engine that is installed runs, the JSON carries
// results and ratios, and --chart writes an SVG drawn by vega.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { scratchDir } from './helpers/env.mjs';

const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const scratch = scratchDir('rf-bench-');
test.after(() => scratch.cleanup());
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

test('bench --json --chart: every engine measured in one run, ratios against each peer', () => {
  const chart = join(scratch.dir, 'perf.svg');
  const r = spawnSync(process.execPath, [cli, 'bench', '--dir', scratch.dir, '--rw', 'randread,read', '--qd', '1,4', '--runtime', '0.4',
    '--size', '32M', '--json', '--chart', chart], { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  const engines = new Set(j.results.map((x) => x.engine));
  for (const e of ['ringfence', 'ringfence-batch', 'node:fs']) assert.ok(engines.has(e), `${e} measured`);
  if (have('fio')) assert.ok(engines.has('fio-io_uring') && engines.has('fio-libaio'), 'fio engines measured');
  if (have('qemu-img')) assert.ok(j.results.some((x) => x.engine === 'qemu-img' && x.rw === 'read'), 'qemu-img measured on the sequential job');
  for (const x of j.results) {
    assert.ok(x.ios > 0 && x.iops > 0, `${x.engine} ${x.rw} did I/O`);
    if (x.engine !== 'qemu-img') assert.ok(x.p50us > 0 && x.p99us >= x.p50us, `${x.engine} latency percentiles`);
  }
  assert.ok(j.ratios.some((x) => x.ringfence === 'ringfence' && x.peer === 'node:fs' && x.ratio > 0));
  assert.ok(j.skipped.some((s) => s.engine === 'ringfence-batch' && s.qd === 1), 'batch skipped at QD1, with a reason');
  assert.ok(existsSync(chart));
  const svg = readFileSync(chart, 'utf8');
  assert.match(svg, /^<svg/);
  assert.match(svg, /IOPS/);
  assert.match(svg, /p99 latency/);
});

test('bench rejects bad arguments with exit 2 and says what to do', () => {
  const r = spawnSync(process.execPath, [cli, 'bench', '--dir', scratch.dir, '--rw', 'sideways'], { encoding: 'utf8' });
  assert.is(r.status, 2);
  assert.match(r.stderr, /--rw: unknown workload "sideways" \(use read, write, randread, randwrite, randrw\)/);
});

// fio reads a bare number of seconds as whole seconds and drops the fraction silently: the NBD
// bench's `--ramp_time=0.5` was no ramp at all, and `--runtime 1.5` ran for one second.
(have('fio') ? test : test.skip)('fio gets durations it reads exactly: a 1.5 s run after a 0.5 s ramp runs 1.5 s, not 1', async () => {
  const { fioTime } = await import('../dist/src/bench/fio-time.js');
  assert.is(fioTime(0.5), '500ms');
  assert.is(fioTime(0.0001), '1ms', 'above 0 is never 0 (fio reads a runtime of 0 as no limit)');
  assert.is(fioTime(0), '0ms');
  assert.throws(() => fioTime(-1), /not a duration/);
  // The null engine at a capped rate: no file, little CPU.
  const t0 = Date.now();
  const r = spawnSync('fio', ['--name=t', '--ioengine=null', '--size=1G', '--rw=read', '--bs=4k', '--rate_iops=2000', '--time_based',
    `--runtime=${fioTime(1.5)}`, `--ramp_time=${fioTime(0.5)}`, '--output-format=json'], { encoding: 'utf8', timeout: 30_000 });
  const wall = Date.now() - t0;
  assert.is(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  assert.ok(j.job_runtime >= 1400 && j.job_runtime <= 1800, `measured for 1.5 s after the ramp, got ${j.job_runtime} ms`);
  // Without the ramp fio would be done after about 1.5 s.
  assert.ok(wall >= 1950, `the 0.5 s ramp ran before the 1.5 s measured (fio took ${wall} ms)`);
});

test('bench --warmup: only with --nbd, and 0 or 1 to 600 seconds; refused before any work', () => {
  let r = spawnSync(process.execPath, [cli, 'bench', '--dir', scratch.dir, '--warmup', '2'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /--warmup 2: the warm-up of freshly started NBD servers applies only with --nbd; drop it/);
  r = spawnSync(process.execPath, [cli, 'bench', '--nbd', '--dir', scratch.dir, '--warmup', '0.5'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /--warmup must be 0 \(no warm-up: each server measured cold\) or a number of seconds from 1 to 600, e\.g\. --warmup 2; got "0\.5"/);
  assert.not.match(r.stderr, /preparing|round/, 'nothing was started');
  for (const bad of ['601', '-1', '', ' ', '2s', '1e1']) {
    r = spawnSync(process.execPath, [cli, 'bench', '--nbd', '--dir', scratch.dir, '--warmup', bad], { encoding: 'utf8', timeout: 30_000 });
    assert.is(r.status, 2, `--warmup '${bad}': ${r.stderr}`);
    assert.match(r.stderr, /--warmup must be 0 \(no warm-up/, `--warmup '${bad}'`);
  }
});

test('bench --nbd checks --runtime, --repeat and --engines as bench does, and --json reports a bad flag as JSON', () => {
  // Before 2026-12-03, --nbd took a server named twice in --engines, and with --json wrote a bad
  // flag's error as text only.
  for (const [flag, value, message] of [
    ['--runtime', '5000', /--runtime must be a number of seconds above 0 and at most 3600/],
    ['--repeat', '101', /--repeat must be an integer from 1 to 100/],
    ['--engines', 'ringfence,ringfence', /--engines must be a list that names each of .* at most once/],
    ['--engines', 'ringfence,fio-io_uring', /--engines: unknown server "fio-io_uring" \(use ringfence, qemu-nbd io_uring, qemu-nbd native, nbdkit file\)/],
  ]) {
    const r = spawnSync(process.execPath, [cli, 'bench', '--nbd', '--dir', scratch.dir, flag, value], { encoding: 'utf8', timeout: 30_000 });
    assert.is(r.status, 2, `${flag} ${value}: ${r.stderr}`);
    assert.match(r.stderr, message, `${flag} ${value}`);
    assert.not.match(r.stderr, /preparing|round/, 'nothing was started');
  }
  const r = spawnSync(process.execPath, [cli, 'bench', '--nbd', '--dir', scratch.dir, '--warmup', '0.5', '--json'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 2, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal({ ok: j.ok, exitCode: j.exitCode }, { ok: false, exitCode: 2 });
  assert.match(j.error, /--warmup must be 0/);
});

test('--cpus SERVER:CLIENT of the NBD benches: two CPU lists this machine has, or a message saying what is wrong', async () => {
  const { parseCpus, pinned } = await import('../dist/src/bench/cpus.js');
  const { availableParallelism } = await import('node:os');
  assert.equal(parseCpus(undefined), {});
  if (have('taskset')) {
    assert.equal(parseCpus('0:0'), { server: '0', client: '0' });
    const last = availableParallelism() - 1;
    assert.equal(parseCpus(`0-${last}:0`), { server: `0-${last}`, client: '0' });
    assert.match(parseCpus(`${last + 1}:0`), `is not a range of CPUs from 0 to ${last}`);
    assert.match(parseCpus('1-0:0'), 'is not a range of CPUs');
  }
  for (const bad of ['1', '0:', ':0', '0:0:0', 'a:0', '0:-1', '0 :0']) assert.match(parseCpus(bad), 'give SERVER:CLIENT', bad);
  assert.equal(pinned(['fio', '--x'], undefined), ['fio', '--x']);
  assert.equal(pinned(['fio', '--x'], '1'), ['taskset', '-c', '1', 'fio', '--x']);
});

test('bench --nbd same-round ratios: a round either server missed is null, the median is over the rest', async () => {
  const { sameRoundRatios } = await import('../dist/src/bench/nbd.js');
  let x = sameRoundRatios([100, NaN, 300, 200], [100, 100, 100, NaN]);
  assert.equal(x.ratios, [1, null, 3, null], 'positions kept: round i is ratios[i]');
  assert.is(x.median, 2);
  x = sameRoundRatios([90, 110, 100], [100, 100, 100]);
  assert.is(x.median, 1, 'odd count: the middle one');
  assert.ok(Number.isNaN(sameRoundRatios([NaN], [1]).median), 'no round: no median');
});

test('procstat: processCpuSeconds reads a process\'s CPU time from /proc/PID/stat (user + system, all threads)', async () => {
  const { processCpuSeconds } = await import('../dist/src/procstat.js');
  const c0 = processCpuSeconds(process.pid), t0 = performance.now();
  let x = 0;
  while (performance.now() - t0 < 400) x += Math.sqrt(x + 1);
  const c1 = processCpuSeconds(process.pid), wall = (performance.now() - t0) / 1000;
  assert.ok(x > 0);
  // A busy loop of 0.4 s: this thread's CPU time grew by about that (other threads may add a little).
  assert.ok(c1 - c0 >= 0.25 && c1 - c0 <= wall * 2 + 0.05, `CPU ${c0} -> ${c1} over ${wall.toFixed(3)} s of wall time`);
  assert.ok(Number.isNaN(processCpuSeconds(undefined)), 'no pid: NaN');
  assert.ok(Number.isNaN(processCpuSeconds(2 ** 30)), 'no such process: NaN');
});

test('procstat: fields are counted after the last ")" of the command name, which may hold spaces and parentheses', async () => {
  const { statFields, statComm, cpuSecondsOf, clockTicks, STAT } = await import('../dist/src/procstat.js');
  // proc(5) fields 1..22 of a process named "a) b (c", then a newline as the kernel writes it.
  const nums = Array.from({ length: 20 }, (_, i) => String(i + 3));
  nums[0] = 'S';
  const text = `4242 (a) b (c) ${nums.join(' ')}\n`;
  const f = statFields(text);
  assert.is(statComm(text), 'a) b (c');
  assert.is(f[0], 'S', 'field 3: state');
  assert.is(Number(f[STAT.utime]), 14);
  assert.is(Number(f[STAT.stime]), 15);
  assert.is(Number(f[STAT.starttime]), 22, 'the trailing newline is not part of the last field');
  assert.is(cpuSecondsOf(f), (14 + 15) / clockTicks(), 'own time: utime + stime');
  assert.is(cpuSecondsOf(f, true), (16 + 17) / clockTicks(), 'children: cutime + cstime');
  assert.ok(Number.isNaN(cpuSecondsOf(['S'])), 'a short text: NaN, not 0');
});

test('bench --nbd refuses the flags it would ignore (its jobs are fixed), naming them, before any work', () => {
  const r = spawnSync(process.execPath, [cli, 'bench', '--nbd', '--dir', scratch.dir, '--rw', 'randread', '--qd', '1', '--no-direct'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /--rw, --qd, --no-direct do not apply with --nbd, which runs fixed fio jobs .*: drop them/);
  assert.not.match(r.stderr, /preparing|round/, 'nothing was started');
});

// bench --nbd: our server and qemu-nbd driven by the same fio nbd jobs; needs fio and qemu-nbd
// (installed by scripts/setup.sh), otherwise reported as skipped.
const nbdPeers = have('fio') && have('qemu-nbd');
(nbdPeers ? test : test.skip)('bench --nbd: ringfence serve and qemu-nbd in one run, each warmed up first; the report has ratios, same-round ratios and the QD1 latencies', async () => {
  const r = spawnSync(process.execPath, [cli, 'bench', '--nbd', '--dir', scratch.dir, '--size', '16M', '--runtime', '1', '--repeat', '2',
    '--warmup', '1', '--engines', 'ringfence,qemu-nbd io_uring', '--json'], { encoding: 'utf8', timeout: 180_000 });
  assert.is(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.skipped, [], 'every server ran every round');
  // The warm-up ran on each server in each round, both jobs, before the measured ones.
  for (const server of ['ringfence', 'qemu-nbd io_uring']) {
    for (const round of [1, 2]) {
      const w = report.warmups.filter((x) => x.server === server && x.round === round);
      assert.is(w.length, 2, `${server} round ${round} warmed up with both jobs: ${JSON.stringify(report.warmups)}`);
      for (const x of w) assert.ok(x.iops > 0, `${server} did I/O while warming up: ${JSON.stringify(x)}`);
    }
  }
  assert.is(report.roundRatios.length, 5, 'a same-round ratio per job against the one peer');
  for (const x of report.roundRatios) {
    assert.is(x.ratios.length, 2, 'one per round');
    assert.ok(x.ratios.every((v) => v > 0) && x.median > 0, JSON.stringify(x));
  }
  const { formatNbdReport } = await import('../dist/src/bench/nbd.js');
  const text = formatNbdReport(report);
  const lines = text.split('\n');
  assert.match(text, /each server warmed up for 1s after it starts/, 'the report says how the servers were warmed up');
  for (const job of ['4k randread QD1', '4k randread QD32', '4k randwrite QD1', '4k randwrite QD32', '1M read QD8']) {
    const row = lines.find((l) => l.startsWith(job + ' '));
    assert.ok(row, `a row for ${job}:\n${text}`);
    assert.match(row, /\d\.\d\dx/, `${job} has a ratio against qemu-nbd`);
  }
  const at = lines.findIndex((l) => l.startsWith('QD1 completion latency'));
  assert.ok(at > 0, `the QD1 latency section:\n${text}`);
  const end = lines.findIndex((l, i) => i > at && l === '');
  const lat = lines.slice(at + 1, end < 0 ? undefined : end).filter((l) => /QD1/.test(l));
  assert.is(lat.length, 4, 'two QD1 jobs x two servers');
  for (const l of lat) {
    const [p50, p90, p99, mean] = l.split('/').map((x) => Number(x.trim().split(/\s+/).pop()));
    assert.ok(p50 > 0 && p90 >= p50 && p99 >= p90 && mean > 0, `latencies in order: ${l}`);
  }
  // Every measured job has the server's and fio's CPU share, and the report prints them.
  for (const x of report.results) {
    assert.ok(x.serverCpu > 0 && x.serverCpu < 2.5, `${x.server} ${x.job}: server CPU share ${x.serverCpu}`);
    assert.ok(x.fioCpu > 0 && x.fioCpu < 2.5, `${x.server} ${x.job}: fio CPU share ${x.fioCpu}`);
  }
  const cpuAt = lines.findIndex((l) => l.startsWith('CPU in the same rounds'));
  assert.ok(cpuAt > 0, `the CPU section:\n${text}`);
  const cpuLines = lines.slice(cpuAt + 1).filter((l) => /^  \S.* us +\d+%$/.test(l));
  assert.is(cpuLines.length, report.results.length, `a CPU line per job and server:\n${text}`);
  // The same-round lines print what the JSON holds.
  const rr = lines.slice(lines.findIndex((l) => l.startsWith('ringfence / peer in the same round')) + 1).filter((l) => / vs qemu-nbd io_uring /.test(l));
  assert.is(rr.length, 5, `a same-round line per job:\n${text}`);
  for (const [i, l] of rr.entries()) {
    const x = report.roundRatios[i];
    assert.ok(l.includes(`${x.median.toFixed(2)}x (${x.ratios.map((v) => v.toFixed(2)).join(', ')})`), `${l} against ${JSON.stringify(x)}`);
  }
});

test.run();
