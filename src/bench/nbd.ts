// `ringfence bench --nbd`: one data file served in turn by `ringfence serve`, qemu-nbd
// (--cache=none, --aio=io_uring and --aio=native) and nbdkit's file plugin, each on a Unix
// socket, each driven by the same fio nbd-engine jobs. Rounds are interleaved (every server
// once per round). Each server, once started, is warmed up (NBD_WARMUP_JOBS) before its measured
// jobs. The best round per server and job is kept (the machine may be shared), and so is, per
// job, ringfence's ratio to each qemu-nbd peer round by round, whose median is the steadier figure.
import { pinned } from './cpus.js';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { haveCommand } from '../volume.js';
import { processCpuSeconds } from '../procstat.js';
import { prepareDataFile } from './data.js';
import { fioTime } from './fio-time.js';

export interface NbdJob { name: string; rw: 'randread' | 'randwrite' | 'read' | 'randrw'; bs: number; qd: number }
export const NBD_JOBS: NbdJob[] = [
  { name: '4k randread QD1', rw: 'randread', bs: 4096, qd: 1 },
  { name: '4k randread QD32', rw: 'randread', bs: 4096, qd: 32 },
  { name: '4k randwrite QD1', rw: 'randwrite', bs: 4096, qd: 1 },
  { name: '4k randwrite QD32', rw: 'randwrite', bs: 4096, qd: 32 },
  { name: '1M read QD8', rw: 'read', bs: 1 << 20, qd: 8 },
];

/**
 * One server. `start` runs it; with `cpus` (a CPU list as taskset takes it), under `taskset -c
 * cpus`, which execs it, so that every thread it ever starts has that mask from its first
 * instruction (the kernel's io_uring worker threads, if it needs any, take theirs from io-wq).
 */
export interface NbdServerSpec { name: string; need: string; start(file: string, sock: string, cpus?: string): ChildProcess }

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');

/** A server whose command line is `argv(file, socket)`. */
function server(name: string, need: string, argv: (f: string, s: string) => string[]): NbdServerSpec {
  return {
    name, need,
    start: (f, s, cpus) => {
      const [cmd, ...args] = pinned(argv(f, s), cpus);
      return spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    },
  };
}

/** The servers `bench --nbd` compares (bench/nbd-stages.mjs starts two of them the same way). */
export const NBD_SERVERS: readonly NbdServerSpec[] = [
  server('ringfence', 'node', (f, s) => [process.execPath, CLI, 'serve', f, '--socket', s, '--max-connections', '64']),
  server('qemu-nbd io_uring', 'qemu-nbd', (f, s) => ['qemu-nbd', '-t', '-f', 'raw', '--cache=none', '--aio=io_uring', '-e', '64', '-k', s, f]),
  server('qemu-nbd native', 'qemu-nbd', (f, s) => ['qemu-nbd', '-t', '-f', 'raw', '--cache=none', '--aio=native', '-e', '64', '-k', s, f]),
  server('nbdkit file', 'nbdkit', (f, s) => ['nbdkit', '-f', '-U', s, 'file', f]),
];

export interface NbdBenchOptions {
  size: number; runtime: number; repeat: number; file?: string; dir?: string; json: boolean; servers?: string[];
  /** Seconds each freshly started server is driven before its measured jobs (0: measured cold). */
  warmup: number;
}

/**
 * Seconds at the start of each measured fio job that are not counted: the connection is new (the
 * server's per-connection code paths warm up; fio's own start-up).
 */
export const NBD_RAMP_S = 0.5;

/** The default of `--warmup`, seconds. */
export const NBD_WARMUP_S = 2;

/**
 * The warm-up, run on every server after it starts and before its measured jobs, the same for
 * each: half of `warmup` seconds of 4 KiB random reads and writes at QD1, half at QD32, no ramp.
 * A server written in JavaScript runs its first few thousand requests, and the first requests of
 * each code path (the first write), before V8 has compiled them; a C server has no such phase.
 * Without the warm-up the first measured job (4k randread QD1) times that start-up, and the
 * first write job the write path's; `--warmup 0` measures it so.
 */
export const NBD_WARMUP_JOBS: NbdJob[] = [
  { name: 'warm-up 4k randrw QD1', rw: 'randrw', bs: 4096, qd: 1 },
  { name: 'warm-up 4k randrw QD32', rw: 'randrw', bs: 4096, qd: 32 },
];
/**
 * One fio job against one server (its best round); latencies are fio's completion latency (clat), in us.
 * `serverCpu`: the server process's CPU time (user + system, all its threads, from
 * /proc/PID/stat) over the whole fio run (ramp included), as a share of one core of that run's
 * wall time; `fioCpu`: fio's own (its usr_cpu + sys_cpu), the same way over its measured time.
 * Both are NaN (null in JSON) where they could not be read. `serverCpu * 1e6 / iops` is the
 * server's CPU time per request, us.
 */
export interface NbdResult { server: string; job: string; iops: number; mibs: number; p50us: number; p90us: number; p99us: number; meanUs: number; serverCpu: number; fioCpu: number }
export interface NbdReport {
  date: string; kernel: string; node: string; file: string; options: NbdBenchOptions;
  results: NbdResult[]; skipped: { server: string; why: string }[];
  /**
   * ringfence's IOPS over each peer's in the same round, per job, in round order (null for a
   * round that either server missed). The device's speed on this kind of VM moves by 10-20%
   * over minutes, and "best of N" can pair one server's fast phase with the other's slow one;
   * the median of these same-round ratios is the steadier figure.
   */
  roundRatios: { job: string; peer: string; ratios: (number | null)[]; median: number }[];
  /** The warm-up jobs run (not counted), per server and round. */
  warmups: { server: string; round: number; job: string; iops: number }[];
}

/**
 * ringfence's IOPS over a peer's, round by round (`mine[i]`, `theirs[i]`: round i, NaN where that
 * round failed): the ratios (null where either is missing) and the median of those present
 * (NaN if none is).
 */
export function sameRoundRatios(mine: number[], theirs: number[]): { ratios: (number | null)[]; median: number } {
  const ratios = mine.map((x, i) => { const v = x / theirs[i]; return Number.isFinite(v) && v > 0 ? v : null; });
  const present = ratios.filter((v): v is number => v !== null);
  return { ratios, median: present.length > 0 ? median(present) : NaN };
}

/** fioJob, with the server's CPU share over the run (see NbdResult). */
async function measuredJob(job: NbdJob, uri: string, size: number, seconds: number, server: ChildProcess, rampS = NBD_RAMP_S): Promise<NbdResult & { error?: string }> {
  const c0 = processCpuSeconds(server.pid), t0 = performance.now();
  const r = await fioJob(job, uri, size, seconds, rampS);
  const c1 = processCpuSeconds(server.pid), t1 = performance.now();
  r.serverCpu = (c1 - c0) / ((t1 - t0) / 1000);
  return r;
}

function fioJob(job: NbdJob, uri: string, size: number, seconds: number, rampS = NBD_RAMP_S): Promise<NbdResult & { error?: string }> {
  const args = ['--name=nbd', '--ioengine=nbd', `--uri=${uri}`, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.qd}`, `--size=${size}`,
    '--time_based', `--runtime=${fioTime(seconds)}`, `--ramp_time=${fioTime(rampS)}`, '--output-format=json'];
  return new Promise((res) => {
    execFile('fio', args, { timeout: (seconds + 30) * 1000, maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      try {
        const j = JSON.parse(stdout.slice(stdout.indexOf('{')));
        const d = job.rw === 'randwrite' ? j.jobs[0].write : j.jobs[0].read;
        const pct = d.clat_ns?.percentile ?? {};
        res({ server: '', job: job.name, iops: d.iops, mibs: d.bw_bytes / 2 ** 20, p50us: (pct['50.000000'] ?? 0) / 1000, p90us: (pct['90.000000'] ?? 0) / 1000, p99us: (pct['99.000000'] ?? 0) / 1000, meanUs: (d.clat_ns?.mean ?? 0) / 1000, serverCpu: NaN, fioCpu: (Number(j.jobs[0].usr_cpu) + Number(j.jobs[0].sys_cpu)) / 100, error: j.jobs[0].error ? `fio error ${j.jobs[0].error}` : undefined });
      } catch {
        res({ server: '', job: job.name, iops: 0, mibs: 0, p50us: 0, p90us: 0, p99us: 0, meanUs: 0, serverCpu: NaN, fioCpu: NaN, error: `fio failed: ${String(err?.message ?? '')} ${stderr.slice(0, 300)}` });
      }
    });
  });
}

/** Resolves once `sock` is a listening socket; rejects if `child` exits first or after `ms`. */
export async function waitForSocket(sock: string, child: ChildProcess, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    if (existsSync(sock)) { try { if (statSync(sock).isSocket()) return; } catch { /* racing */ } }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no socket ${sock} after ${ms} ms`);
}

/** Stops a server: SIGTERM, then SIGKILL after 15 s; resolves once it has exited. */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 15000);
  await exited;
  clearTimeout(t);
}

export async function runNbdBench(o: NbdBenchOptions, progress: (s: string) => void): Promise<NbdReport> {
  if (!haveCommand('fio')) throw new Error('--nbd needs fio (with its nbd engine): apt-get install fio');
  const tmp = mkdtempSync(join(o.dir ?? '/var/tmp', 'ringfence-nbd-bench-'));
  const file = o.file ? resolve(o.file) : join(tmp, 'data.raw');
  const report: NbdReport = { date: new Date().toISOString(), kernel: release(), node: process.version, file, options: o, results: [], skipped: [], roundRatios: [], warmups: [] };
  const servers = NBD_SERVERS.filter((s) => !o.servers || o.servers.includes(s.name));
  try {
    const fresh = !existsSync(file) || statSync(file).size < o.size;
    progress(`${fresh ? 'preparing' : 'warming up'} ${o.size >> 20} MiB data file ${file}\n`);
    prepareDataFile(file, o.size, fresh);
    const best = new Map<string, NbdResult>();
    /** Per server and job: IOPS of each round (NaN where that round failed). */
    const byRound = new Map<string, number[]>();
    const usable = servers.filter((s) => {
      if (s.need === 'node' || haveCommand(s.need)) return true;
      report.skipped.push({ server: s.name, why: `${s.need} is not installed` });
      return false;
    });
    const total = usable.length * o.repeat * NBD_JOBS.length;
    let step = 0;
    for (let round = 0; round < o.repeat; round++) {
      for (const s of usable) {
        const sock = join(tmp, 'nbd.sock');
        rmSync(sock, { force: true });
        const child = s.start(file, sock);
        let stderr = '';
        child.stderr?.on('data', (d) => { stderr += d; });
        try {
          await waitForSocket(sock, child, 20000);
          const uri = `nbd+unix:///?socket=${sock}`;
          if (o.warmup > 0) {
            for (const job of NBD_WARMUP_JOBS) {
              progress(`\r[${step}/${total}] ${s.name.padEnd(18)} ${job.name.padEnd(22)} round ${round + 1}/${o.repeat}   `);
              // No ramp of its own: the warm-up is exactly --warmup seconds.
              const r = await fioJob(job, uri, o.size, o.warmup / NBD_WARMUP_JOBS.length, 0);
              if (r.error !== undefined) throw new Error(`${job.name}: ${r.error}`);
              report.warmups.push({ server: s.name, round: round + 1, job: job.name, iops: r.iops });
            }
          }
          for (const job of NBD_JOBS) {
            step++;
            progress(`\r[${step}/${total}] ${s.name.padEnd(18)} ${job.name.padEnd(18)} round ${round + 1}/${o.repeat}   `);
            const r = await measuredJob(job, uri, o.size, o.runtime, child);
            if (r.error !== undefined) {
              report.skipped.push({ server: s.name, why: `round ${round + 1}, ${job.name}: ${r.error}` });
              continue;
            }
            r.server = s.name;
            const key = `${s.name}\0${job.name}`;
            if (!best.has(key) || best.get(key)!.iops < r.iops) best.set(key, r);
            if (!byRound.has(key)) byRound.set(key, Array<number>(o.repeat).fill(NaN));
            byRound.get(key)![round] = r.iops;
          }
        } catch (err) {
          report.skipped.push({ server: s.name, why: `round ${round + 1}: ${(err as Error).message} ${stderr.slice(0, 300)}` });
        } finally {
          await stop(child);
          rmSync(sock, { force: true });
          // A server that writes through the page cache (nbdkit's file plugin) leaves dirty pages;
          // written back now, they do not slow the next server down.
          syncFile(file);
        }
      }
    }
    progress('\r' + ' '.repeat(80) + '\r');
    for (const job of NBD_JOBS) for (const s of servers) { const r = best.get(`${s.name}\0${job.name}`); if (r) report.results.push(r); }
    for (const job of NBD_JOBS) {
      const mine = byRound.get(`ringfence\0${job.name}`);
      for (const s of servers) {
        const theirs = byRound.get(`${s.name}\0${job.name}`);
        // Against the qemu-nbd peers only: nbdkit's file plugin serves from the page cache.
        if (!s.name.startsWith('qemu-nbd') || mine === undefined || theirs === undefined) continue;
        const rr = sameRoundRatios(mine, theirs);
        if (!Number.isNaN(rr.median)) report.roundRatios.push({ job: job.name, peer: s.name, ...rr });
      }
    }
    return report;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function syncFile(path: string): void {
  let fd = -1;
  try { fd = openSync(path, 'r'); fsyncSync(fd); } catch { /* gone, or not ours to sync: nothing to wait for */ } finally { if (fd >= 0) closeSync(fd); }
}

function median(v: number[]): number {
  const a = [...v].sort((x, y) => x - y), h = a.length >> 1;
  return a.length % 2 ? a[h] : (a[h - 1] + a[h]) / 2;
}

const k = (n: number): string => (n >= 1e4 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0));

export function formatNbdReport(r: NbdReport): string {
  const names = [...new Set(r.results.map((x) => x.server))];
  const out: string[] = [];
  out.push(`ringfence bench --nbd ${r.date}  kernel ${r.kernel}  node ${r.node}`);
  const warm = r.options.warmup > 0
    ? `each server warmed up for ${r.options.warmup}s after it starts (4k randrw at QD1, then QD32)`
    : `no warm-up: each server's first job (4k randread QD1) is measured from ${NBD_RAMP_S}s after it starts`;
  out.push(`${r.file} (${r.options.size >> 20} MiB), fio nbd engine on a Unix socket, ${r.options.runtime}s per job, best of ${r.options.repeat} interleaved rounds, ${warm}; IOPS (MiB/s for 1M)`);
  out.push('');
  const head = ['job', ...names, 'vs qemu-nbd io_uring', 'vs qemu-nbd native'];
  const rows: string[][] = [head];
  for (const job of NBD_JOBS) {
    const get = (n: string): NbdResult | undefined => r.results.find((x) => x.server === n && x.job === job.name);
    const mine = get('ringfence');
    const cell = (x: NbdResult | undefined): string => (x === undefined ? '-' : job.bs >= 1 << 20 ? `${x.mibs.toFixed(0)} MiB/s` : k(x.iops));
    const ratio = (peer: string): string => { const p = get(peer); return mine && p && p.iops > 0 ? `${(mine.iops / p.iops).toFixed(2)}x` : '-'; };
    rows.push([job.name, ...names.map((n) => cell(get(n))), ratio('qemu-nbd io_uring'), ratio('qemu-nbd native')]);
  }
  const widths = head.map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) out.push(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
  // At QD1 IOPS is 1 / mean latency: the percentiles say whether a gap is in every request
  // (the median moves) or in some of them (only the mean and the upper percentiles do).
  const qd1 = NBD_JOBS.filter((j) => j.qd === 1);
  if (qd1.some((j) => r.results.some((x) => x.job === j.name))) {
    out.push('');
    out.push('QD1 completion latency in the same rounds, us: p50 / p90 / p99 / mean');
    for (const job of qd1) {
      for (const n of names) {
        const x = r.results.find((y) => y.server === n && y.job === job.name);
        if (x !== undefined) out.push(`  ${job.name.padEnd(18)} ${n.padEnd(18)} ${[x.p50us, x.p90us, x.p99us, x.meanUs].map((v) => v.toFixed(0).padStart(5)).join(' / ')}`);
      }
    }
  }
  // CPU per request says whether a server is short of CPU (a share near 100%) or waiting, and
  // what each request costs it: at QD1 on a shared core that cost adds to every round trip.
  const cpu = (v: number | null | undefined): string => (typeof v === 'number' && Number.isFinite(v) ? `${(v * 100).toFixed(0)}%` : '-');
  const withCpu = r.results.filter((x) => typeof x.serverCpu === 'number' && Number.isFinite(x.serverCpu));
  if (withCpu.length > 0) {
    out.push('');
    out.push('CPU in the same rounds: the server (all its threads, % of one core), its CPU time per request (us), fio (% of one core)');
    for (const job of NBD_JOBS) {
      for (const n of names) {
        const x = withCpu.find((y) => y.server === n && y.job === job.name);
        if (x !== undefined) out.push(`  ${job.name.padEnd(18)} ${n.padEnd(18)} ${cpu(x.serverCpu).padStart(5)} ${(x.iops > 0 ? (x.serverCpu * 1e6 / x.iops).toFixed(1) : '-').padStart(7)} us ${cpu(x.fioCpu).padStart(5)}`);
      }
    }
  }
  if (r.roundRatios.length > 0 && r.options.repeat > 1) {
    out.push('');
    out.push('ringfence / peer in the same round: median (each round in order)');
    for (const x of r.roundRatios) {
      out.push(`  ${x.job.padEnd(18)} vs ${x.peer.padEnd(18)} ${x.median.toFixed(2)}x (${x.ratios.map((v) => (v === null ? '-' : v.toFixed(2))).join(', ')})`);
    }
  }
  if (r.skipped.length) { out.push(''); for (const s of r.skipped) out.push(`skipped ${s.server}: ${s.why}`); }
  return out.join('\n') + '\n';
}

/** The `bench --nbd` action, with flags already checked (src/bench/command.ts, checkNbdBenchFlags). */
export async function nbdBenchCommand(o: NbdBenchOptions): Promise<void> {
  const report = await runNbdBench(o, (s) => { if (!o.json) process.stderr.write(s); });
  process.stdout.write(o.json ? JSON.stringify(report, null, 2) + '\n' : formatNbdReport(report));
}
