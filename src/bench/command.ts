// `ringfence bench`: ringfence next to fio, qemu-img and node:fs/promises, in one run.
import { writeFileSync, existsSync, statSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { availableParallelism, release } from 'node:os';
import { Command, Option } from 'commander';
import { Engine } from '../engine.js';
import type { BackendChoice } from '../types.js';
import { defaultVolume, dirVolume, makeXfsVolume, parseSize, type Volume } from '../volume.js';
import { prepareDataFile } from './data.js';
import { RW_VALUES, fio, nodeFs, qemuImg, ringfenceBatch, ringfencePerRequest, type BenchEngine, type Job, type Result, type Rw } from './engines.js';
import { renderChart } from './chart.js';
import { nbdBenchCommand } from './nbd.js';

export interface BenchOptions {
  rw: Rw[]; bs: number; qd: number[]; workers: number; backend: BackendChoice; direct: boolean; size: number; runtime: number;
  file?: string; xfs?: string; dir?: string; json: boolean; chart?: string; engines?: string[]; repeat: number;
}

export interface BenchReport {
  date: string; kernel: string; node: string; volume: string; fs: string;
  options: Omit<BenchOptions, 'json' | 'chart'>;
  skipped: { engine: string; rw: Rw; qd: number; why: string }[];
  results: Result[];
  ratios: { rw: Rw; qd: number; ringfence: string; peer: string; ratio: number }[];
}

function list<T>(v: string, parse: (s: string) => T): T[] { return String(v).split(',').map((s) => parse(s.trim())); }

export function registerBench(program: Command, usage: (msg: string) => never): void {
  program.command('bench')
    .description('fio-like benchmark: ringfence (per-request and batch APIs) side by side with fio (io_uring, libaio), qemu-img bench and node:fs/promises, measured in one run, interleaved')
    .option('--rw <list>', `workloads: ${RW_VALUES.join('|')}, comma-separated`, 'randread,randwrite')
    .option('--bs <size>', 'block size', '4k')
    .option('--qd <list>', 'queue depths, comma-separated (e.g. 1,4,16,32,64)', '1,32')
    .option('--workers <n>', 'ringfence worker threads (default: the engine default, min(4, cores - 1))')
    .addOption(new Option('--backend <name>', 'ringfence backend').choices(['auto', 'io_uring', 'libaio', 'sync']).default('auto'))
    .option('--no-direct', 'buffered I/O instead of O_DIRECT')
    .option('--size <size>', 'data file size', '512M')
    .option('--runtime <seconds>', 'seconds per engine and job', '3')
    .option('--repeat <n>', 'rounds of every engine per job (the best round is kept)', '1')
    .option('--engines <list>', 'only these engines (ringfence,ringfence-batch,node:fs,fio-io_uring,fio-libaio,qemu-img)')
    .option('--file <path>', 'benchmark this file (created with --size if missing)')
    .option('--xfs <size>', 'create a temporary loop-mounted XFS volume of this size (root)')
    .option('--dir <path>', 'put the data file in this directory')
    .option('--json', 'print one JSON object instead of the table')
    .option('--chart <file.svg>', 'draw IOPS and p99 latency against queue depth per engine')
    .option('--nbd', 'NBD servers instead: ringfence serve, qemu-nbd (io_uring, native), nbdkit file, each driven by fio\'s nbd engine (uses --size, --runtime, --repeat, --file, --dir, --json)')
    .addHelpText('after', `
Examples:
  ringfence bench --xfs 2G --rw randread,randwrite --qd 1,32 --json --chart perf.svg
  ringfence bench --dir /mnt/data --rw read --qd 1,4,16,32,64 --runtime 5
  ringfence bench --file /dev/shm/x --no-direct --engines ringfence,node:fs`)
    .action(async (o) => {
      if (o.nbd) return nbdBenchCommand(o, parseSize, usage);
      const opts: BenchOptions = {
        rw: list(o.rw, (s) => { if (!(RW_VALUES as readonly string[]).includes(s)) usage(`--rw: unknown workload "${s}" (use ${RW_VALUES.join(', ')})`); return s as Rw; }),
        bs: parseSize(o.bs), qd: list(o.qd, (s) => { const n = Number(s); if (!Number.isInteger(n) || n < 1 || n > 1024) usage(`--qd: "${s}" is not a queue depth 1..1024`); return n; }),
        workers: o.workers === undefined ? Math.max(1, Math.min(4, availableParallelism() - 1)) : Number(o.workers), backend: o.backend, direct: o.direct !== false, size: parseSize(o.size), runtime: Number(o.runtime),
        file: o.file, xfs: o.xfs, dir: o.dir, json: !!o.json, chart: o.chart, engines: o.engines ? list(o.engines, String) : undefined,
        repeat: Number(o.repeat),
      };
      if ([o.file, o.xfs, o.dir].filter(Boolean).length > 1) usage('--file, --xfs and --dir are mutually exclusive: pick one');
      if (!(opts.runtime > 0)) usage('--runtime must be a positive number of seconds');
      if (opts.bs % 512 !== 0) usage('--bs must be a multiple of 512');
      const report = await runBench(opts, (s) => { if (!opts.json) process.stderr.write(s); });
      if (opts.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      else process.stdout.write(formatReport(report));
      if (opts.chart) {
        writeFileSync(opts.chart, await renderChart(report));
        if (!opts.json) process.stdout.write(`chart: ${resolve(opts.chart)}\n`);
      }
    });
}

export async function runBench(opts: BenchOptions, progress: (s: string) => void): Promise<BenchReport> {
  let vol: Volume | null = null;
  let path: string;
  let created = false;
  if (opts.file) {
    path = resolve(opts.file);
    if (!existsSync(dirname(path))) throw new Error(`${dirname(path)} does not exist: create it or pick another --file`);
  } else {
    vol = opts.xfs ? makeXfsVolume(parseSize(opts.xfs)) : opts.dir ? dirVolume(opts.dir) : defaultVolume();
    path = join(vol.dir, 'ringfence-bench.dat');
  }
  let engine: Engine | null = null;
  try {
    const fresh = !existsSync(path) || statSync(path).size < opts.size;
    progress(`${fresh ? 'preparing' : 'warming up'} ${opts.size >> 20} MiB data file ${path}\n`);
    prepareDataFile(path, opts.size, fresh);
    created = fresh && !opts.file;
    const getEngine = async (): Promise<Engine> => {
      engine ??= await Engine.start({ workers: opts.workers, backend: opts.backend, queueDepth: Math.max(...opts.qd, 8), bufferPoolBytes: 64 << 20 });
      return engine;
    };
    const all: BenchEngine[] = [ringfencePerRequest(getEngine), fio('io_uring'), nodeFs(), ringfenceBatch(getEngine), fio('libaio'), qemuImg()];
    const engines = opts.engines ? all.filter((e) => opts.engines!.includes(e.name)) : all;
    const report: BenchReport = {
      date: new Date().toISOString(), kernel: release(), node: process.version, volume: vol?.note ?? path, fs: vol?.fs ?? '',
      options: { rw: opts.rw, bs: opts.bs, qd: opts.qd, workers: opts.workers, backend: opts.backend, direct: opts.direct, size: opts.size, runtime: opts.runtime, file: opts.file, xfs: opts.xfs, dir: opts.dir, engines: opts.engines, repeat: opts.repeat },
      skipped: [], results: [], ratios: [],
    };
    const jobs: Job[] = [];
    for (const rw of opts.rw) for (const qd of opts.qd) jobs.push({ rw, qd, bs: opts.bs, seconds: opts.runtime, path, size: opts.size, direct: opts.direct });
    const steps = jobs.length * engines.length * opts.repeat;
    let step = 0;
    const t0 = performance.now();
    for (const job of jobs) {
      const best = new Map<string, Result>();
      // Interleaved: every engine once per round, rounds repeated; the best round is kept.
      for (let round = 0; round < opts.repeat; round++) {
        for (const e of engines) {
          step++;
          const why = e.skip(job);
          if (why !== null) { if (round === 0) report.skipped.push({ engine: e.name, rw: job.rw, qd: job.qd, why }); continue; }
          const left = ((steps - step + 1) * job.seconds).toFixed(0);
          progress(`\r[${step}/${steps}] ${e.name.padEnd(15)} ${job.rw} QD${job.qd} ... (~${left}s left, ${((performance.now() - t0) / 1000).toFixed(0)}s elapsed)   `);
          try {
            const r = await e.run(job);
            if (!best.has(e.name) || best.get(e.name)!.iops < r.iops) best.set(e.name, r);
          } catch (err) {
            if (round === 0) report.skipped.push({ engine: e.name, rw: job.rw, qd: job.qd, why: `failed: ${(err as Error).message}` });
          }
        }
      }
      report.results.push(...best.values());
      for (const rf of ['ringfence', 'ringfence-batch']) {
        const mine = best.get(rf);
        if (!mine) continue;
        for (const [peer, r] of best) if (!peer.startsWith('ringfence')) report.ratios.push({ rw: job.rw, qd: job.qd, ringfence: rf, peer, ratio: mine.iops / r.iops });
      }
    }
    progress('\r' + ' '.repeat(90) + '\r');
    return report;
  } finally {
    if (engine) await (engine as Engine).close();
    if (created) rmSync(path, { force: true });
    vol?.cleanup();
  }
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const k = (n: number): string => (n >= 1e4 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0));

export function formatReport(r: BenchReport): string {
  const out: string[] = [];
  out.push(`ringfence bench ${r.date}  kernel ${r.kernel}  node ${r.node}`);
  out.push(`on ${r.volume}; bs ${r.options.bs}, ${r.options.direct ? 'O_DIRECT' : 'buffered'}, ${r.options.workers} workers (${r.options.backend}), ${r.options.runtime}s per engine`);
  out.push('');
  const head = ['workload', 'QD', 'engine', 'IOPS', 'MiB/s', 'p50 us', 'p99 us', 'p99.9 us', 'CPU us/IO', 'ringfence x'];
  const rows: string[][] = [head];
  for (const res of r.results) {
    const ratio = r.ratios.find((x) => x.rw === res.rw && x.qd === res.qd && x.ringfence === 'ringfence' && x.peer === res.engine);
    rows.push([res.rw, String(res.qd), res.engine, k(res.iops), f1(res.mibs), f1(res.p50us), f1(res.p99us), f1(res.p999us), f1(res.cpuUsPerIo), ratio ? `${ratio.ratio.toFixed(2)}x` : '']);
  }
  const widths = head.map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) out.push(row.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
  const batch = r.ratios.filter((x) => x.ringfence === 'ringfence-batch');
  if (batch.length) {
    out.push('');
    out.push('batch API against peers: ' + batch.map((x) => `${x.rw} QD${x.qd} vs ${x.peer} ${x.ratio.toFixed(2)}x`).join('; '));
  }
  if (r.skipped.length) {
    out.push('');
    for (const s of r.skipped) out.push(`skipped ${s.engine} ${s.rw} QD${s.qd}: ${s.why}`);
  }
  return out.join('\n') + '\n';
}
