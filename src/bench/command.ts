// `ringfence bench`: ringfence next to fio, qemu-img and node:fs/promises, in one run.
import { writeFileSync, existsSync, statSync, statfsSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { availableParallelism, release } from 'node:os';
import type { Command } from 'commander';
import { BACKEND_CHOICES } from '../backends.js';
import { Engine } from '../engine.js';
import { MAX_WORKERS } from '../shm.js';
import type { BackendChoice } from '../types.js';
import { UsageError, bad, enumArg, enumListArg, exclusive, formatSize, intArg, intListArg, numberArg, outputFileArg, sizeArg, zeroOrNumberArg } from '../args.js';
import { atExit, haveCommand, isRoot, reportDeadRuns } from '../cleanup.js';
import { checkVolumeFlags, defaultVolume, dirVolume, makeXfsVolume, parseSize, tempVolumeBase, xfsFreeEstimate, type Volume } from '../volume.js';
import { prepareDataFile } from './data.js';
import { RW_VALUES, fio, nodeFs, nodeFsUring, qemuImg, ringfenceBatch, ringfencePerRequest, type BenchEngine, type Job, type Result, type Rw } from './engines.js';
import { nbdBenchCommand, NBD_SERVERS, NBD_WARMUP_S, type NbdBenchOptions } from './nbd.js';

export interface BenchOptions {
  rw: Rw[]; bs: number; qd: number[]; workers: number; backend: BackendChoice; direct: boolean; size: number; runtime: number; pollUs: number;
  file?: string; xfs?: string; dir?: string; json: boolean; chart?: string; engines?: string[]; repeat: number;
}

export interface BenchReport {
  date: string; kernel: string; node: string; volume: string; fs: string;
  options: Omit<BenchOptions, 'json' | 'chart'>;
  skipped: { engine: string; rw: Rw; qd: number; why: string }[];
  results: Result[];
  ratios: { rw: Rw; qd: number; ringfence: string; peer: string; ratio: number }[];
}

export const ENGINE_NAMES = [
  'ringfence', 'ringfence-batch', 'ringfence-workers', 'node:fs', 'node:fs-uring', 'fio-io_uring', 'fio-io_uring-fixed', 'fio-libaio', 'qemu-img',
] as const;
const BACKENDS = BACKEND_CHOICES;

export const BENCH_LIMITS = {
  bs: { min: 512, max: 16 << 20, multipleOf: 512 },
  qd: { min: 1, max: 1024 },
  workers: { min: 1, max: MAX_WORKERS },
  size: { min: 1 << 20, max: 2 ** 40, multipleOf: 512 },
  runtimeS: { max: 3600 },
  repeat: { min: 1, max: 100 },
  /** --bs times the largest --qd: the I/O buffers ringfence allocates at once. */
  bufferBytes: 128 << 20,
} as const;

interface RawBench {
  rw: string; bs: string; qd: string; workers?: string; backend?: string; direct?: boolean; size: string; runtime: string; pollUs?: string;
  repeat: string; engines?: string; file?: string; xfs?: string; dir?: string; json?: boolean; chart?: string; warmup?: string;
}

/** Free bytes in `dir` (statfs), or Infinity when it cannot be told. */
function freeIn(dir: string): number {
  try { const st = statfsSync(dir); return Number(st.bavail) * Number(st.bsize); } catch { return Infinity; }
}

/** Options `ringfence bench --nbd` does not use (commander key, flag), refused when given. */
const NBD_IGNORES: [string, string][] = [
  ['rw', '--rw'], ['bs', '--bs'], ['qd', '--qd'], ['workers', '--workers'], ['backend', '--backend'],
  ['pollUs', '--poll-us'], ['direct', '--no-direct'], ['xfs', '--xfs'], ['chart', '--chart'],
];

/** Every flag of `ringfence bench`, checked; throws UsageError naming the flag. Creates nothing. */
export function checkBenchFlags(o: RawBench): BenchOptions {
  const L = BENCH_LIMITS;
  const rw = enumListArg('--rw', o.rw, RW_VALUES, 'workload');
  const bs = sizeArg('--bs', o.bs, { ...L.bs, example: '4k' })!;
  const qd = intListArg('--qd', o.qd, { ...L.qd, example: '1,4,16,32' });
  const workers = intArg('--workers', o.workers, { ...L.workers, example: 2, maxWhy: 'the engine\'s maximum, MAX_WORKERS' }) ?? Math.max(1, Math.min(4, availableParallelism() - 1));
  const backend = enumArg('--backend', o.backend, BACKENDS, 'auto');
  const pollUs = intArg('--poll-us', o.pollUs, { min: 0, max: 1_000_000, example: 20 }) ?? 0;
  const size = sizeArg('--size', o.size, { ...L.size, example: '512M' })!;
  if (size < 16 * bs) bad('--size', o.size, `smaller than 16 blocks of --bs ${o.bs}`, `give --size ${formatSize(Math.max(16 * bs, L.size.min))} or more, or a smaller --bs`);
  const runtime = numberArg('--runtime', o.runtime, { above: 0, max: L.runtimeS.max, unit: 'seconds', example: 3 })!;
  const repeat = intArg('--repeat', o.repeat, { ...L.repeat, example: 3 })!;
  const engines = o.engines === undefined ? undefined : enumListArg('--engines', o.engines, ENGINE_NAMES, 'engine');
  if (bs * Math.max(...qd) > L.bufferBytes) {
    throw new UsageError(`--bs ${o.bs} with --qd ${Math.max(...qd)} needs ${formatSize(bs * Math.max(...qd))} of I/O buffers at once, more than ${formatSize(L.bufferBytes)}: lower --bs or the largest --qd`);
  }
  if (o.warmup !== undefined) throw new UsageError(`--warmup ${o.warmup}: the warm-up of freshly started NBD servers applies only with --nbd; drop it`);
  exclusive({ '--file': o.file, '--xfs': o.xfs, '--dir': o.dir });
  const need = { bytes: size, what: `the data file (--size ${o.size})` };
  let file: string | undefined;
  if (o.file !== undefined) {
    file = outputFileArg('--file', o.file, { allowExisting: true })!;
    const have = existsSync(file) ? statSync(file).size : 0;
    if (have < size && freeIn(dirname(file)) < size - have) bad('--file', o.file, `${dirname(file)} has ${formatSize(freeIn(dirname(file)))} free, but --size ${o.size} needs ${formatSize(size - have)} more`, 'free some space, or give a smaller --size or another --file');
  } else if (o.xfs !== undefined || o.dir !== undefined) {
    const existing = o.dir !== undefined && existsSync(join(resolve(o.dir), 'ringfence-bench.dat')) ? statSync(join(resolve(o.dir), 'ringfence-bench.dat')).size : 0;
    checkVolumeFlags({ xfs: o.xfs, dir: o.dir }, existing >= size ? {} : { need });
  } else if (isRoot() && haveCommand('mkfs.xfs')) {
    if (size > xfsFreeEstimate(1024 ** 3)) bad('--size', o.size, `the default volume (a 1 GiB XFS loop volume) has about ${formatSize(Math.floor(xfsFreeEstimate(1024 ** 3) / 2 ** 20) * 2 ** 20)} free`, 'give a smaller --size, or --xfs SIZE (larger), --dir DIR or --file PATH');
  } else if (freeIn(tempVolumeBase()) < size) {
    bad('--size', o.size, `the default volume (a temporary directory in ${tempVolumeBase()}) has ${formatSize(freeIn(tempVolumeBase()))} free`, 'give a smaller --size, or --dir DIR or --file PATH');
  }
  const chart = outputFileArg('--chart', o.chart, { allowExisting: true });
  return {
    rw, bs, qd, workers, backend, direct: o.direct !== false, size, runtime, pollUs, file: o.file, xfs: o.xfs, dir: o.dir,
    json: o.json === true, chart, engines, repeat,
  };
}

/** The limits of `bench --nbd --warmup`, seconds (0 turns it off). */
export const NBD_WARMUP_LIMITS = { min: 1, max: 600 };

/**
 * Every flag of `ringfence bench --nbd`, checked; throws UsageError naming the flag. Creates
 * nothing. `given(key)` says whether the user gave that option: a flag that --nbd would ignore is
 * refused (before its value is judged), not silently dropped.
 */
export function checkNbdBenchFlags(o: RawBench, given: (key: string) => boolean): NbdBenchOptions {
  const ignored = NBD_IGNORES.filter(([key]) => given(key)).map(([, flag]) => flag);
  if (ignored.length > 0) {
    throw new UsageError(`${ignored.join(', ')} ${ignored.length > 1 ? 'do' : 'does'} not apply with --nbd, which runs fixed fio jobs ` +
      '(4k randread and randwrite at QD1 and QD32, 1M sequential read at QD8) and uses only --size, --runtime, --repeat, --warmup, --engines, --file, --dir and --json: drop ' +
      (ignored.length > 1 ? 'them' : 'it'));
  }
  // --size, --runtime, --repeat, --file and --dir mean the same as without --nbd.
  const b = checkBenchFlags({ ...o, engines: undefined, warmup: undefined });
  const warmup = zeroOrNumberArg('--warmup', o.warmup, { ...NBD_WARMUP_LIMITS, unit: 'seconds', zeroMeans: 'no warm-up: each server measured cold', example: NBD_WARMUP_S }) ?? NBD_WARMUP_S;
  const servers = o.engines === undefined ? undefined : enumListArg('--engines', o.engines, NBD_SERVERS.map((x) => x.name), 'server');
  return { size: b.size, runtime: b.runtime, repeat: b.repeat, file: b.file, dir: b.dir, json: b.json, servers, warmup };
}

export function registerBench(program: Command): void {
  const L = BENCH_LIMITS;
  program.command('bench')
    .description('fio-like benchmark: ringfence (per-request and batch APIs) side by side with fio (io_uring, libaio), qemu-img bench and node:fs/promises, measured in one run, interleaved')
    .option('--rw <list>', `workloads: ${RW_VALUES.join('|')}, comma-separated`, 'randread,randwrite')
    .option('--bs <size>', `block size: a multiple of 512 from 512 to ${formatSize(L.bs.max)}`, '4k')
    .option('--qd <list>', `queue depths ${L.qd.min} to ${L.qd.max}, comma-separated (e.g. 1,4,16,32,64); --bs times the largest at most ${formatSize(L.bufferBytes)}`, '1,32')
    .option('--workers <n>', `ringfence worker threads, ${L.workers.min} to ${L.workers.max} (default: the engine default, min(4, cores - 1))`)
    .option('--backend <name>', `ringfence backend: ${BACKENDS.join(', ')} (default auto)`)
    .option('--poll-us <us>', 'inline mode: busy-poll completions this many microseconds after each submit (engine option pollUs; default 0)')
    .option('--no-direct', 'buffered I/O instead of O_DIRECT')
    .option('--size <size>', `data file size: a multiple of 512 from 1M (and 16 blocks) to 1T that fits the volume`, '512M')
    .option('--runtime <seconds>', `seconds per engine and job, above 0 and at most ${L.runtimeS.max}`, '3')
    .option('--repeat <n>', `rounds of every engine per job, ${L.repeat.min} to ${L.repeat.max} (the best round is kept)`, '1')
    .option('--engines <list>', `only these engines (${ENGINE_NAMES.join(',')}); with --nbd, only these servers (ringfence,"qemu-nbd io_uring","qemu-nbd native","nbdkit file")`)
    .option('--file <path>', 'benchmark this regular file (created with --size if missing; its directory must exist)')
    .option('--xfs <size>', 'create a temporary loop-mounted XFS volume of this size (root), 300M to 1T')
    .option('--dir <path>', 'put the data file in this existing, writable directory')
    .option('--json', 'print one JSON object instead of the table')
    .option('--chart <file.svg>', 'draw IOPS and p99 latency against queue depth per engine (the directory must exist and be writable)')
    .option('--nbd', 'NBD servers instead: ringfence serve, qemu-nbd (io_uring, native), nbdkit file, each driven by fio\'s nbd engine (uses --size, --runtime, --repeat, --warmup, --file, --dir, --json)')
    .option('--warmup <seconds>', `with --nbd: drive each freshly started server this long (4k randrw, QD1 then QD32) before its measured jobs; 0 measures it cold (default ${NBD_WARMUP_S})`)
    .addHelpText('after', `
Examples:
  ringfence bench --xfs 2G --rw randread,randwrite --qd 1,32 --json --chart perf.svg
  ringfence bench --dir /mnt/data --rw read --qd 1,4,16,32,64 --runtime 5
  ringfence bench --file /dev/shm/x --no-direct --engines ringfence,node:fs

Every flag is checked before anything is created: a bad value exits 2 with a message.
`)
    .action(async (o: RawBench & { nbd?: boolean }, cmd: Command) => {
      // The flags both modes share are checked the same way, before any work. With --json, a bad
      // flag is also reported as one JSON object on stdout (and exits 2 as usual).
      let opts: BenchOptions | undefined, nbdOpts: NbdBenchOptions | undefined;
      try {
        if (o.nbd) nbdOpts = checkNbdBenchFlags(o, (key) => cmd.getOptionValueSource(key) === 'cli');
        else opts = checkBenchFlags(o);
      } catch (err) {
        if (o.json) process.stdout.write(JSON.stringify({ ok: false, exitCode: 2, error: (err as Error).message }) + '\n');
        throw err;
      }
      if (nbdOpts) return nbdBenchCommand(nbdOpts);
      const bo = opts!; // checkBenchFlags returned: it throws on any bad flag
      reportDeadRuns((s) => process.stderr.write(s + '\n'));
      const report = await runBench(bo, (s) => { if (!bo.json) process.stderr.write(s); });
      if (bo.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      else process.stdout.write(formatReport(report));
      if (bo.chart) {
        // vega is large: loaded only when a chart is asked for.
        const { renderChart } = await import('./chart.js');
        writeFileSync(bo.chart, await renderChart(report));
        if (!bo.json) process.stdout.write(`chart: ${resolve(bo.chart)}\n`);
      }
    });
}

/** The engine's buffer pool for these jobs: every loop's buffer at once, with room to spare. */
function poolBytes(bs: number, qd: number): number {
  const pages = Math.ceil(bs / 4096);
  let block = 1; while (block < pages) block *= 2;
  let pool = 64 << 20;
  while (pool < 2 * qd * block * 4096) pool *= 2;
  return pool;
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
  let workersEngine: Engine | null = null;
  let unregister = (): void => {};
  try {
    const fresh = !existsSync(path) || statSync(path).size < opts.size;
    if (fresh && !opts.file) {
      const st = statfsSync(dirname(path));
      const free = Number(st.bavail) * Number(st.bsize) + (existsSync(path) ? statSync(path).size : 0);
      if (free < opts.size) throw new UsageError(`--size ${formatSize(opts.size)} does not fit: ${dirname(path)} has ${formatSize(free)} free; give a smaller --size, or a larger volume`);
      created = true;
      unregister = atExit(() => rmSync(path, { force: true }));
    }
    progress(`${fresh ? 'preparing' : 'warming up'} ${Math.floor(opts.size / 2 ** 20)} MiB data file ${path}\n`);
    prepareDataFile(path, opts.size, fresh);
    // 'ringfence' and 'ringfence-batch': the engine with its default mode (inline);
    // 'ringfence-workers': the same per-request API on offload workers (--workers of them).
    const common = { backend: opts.backend, queueDepth: Math.max(...opts.qd, 8), bufferPoolBytes: poolBytes(opts.bs, Math.max(...opts.qd)) };
    const getEngine = async (): Promise<Engine> => {
      engine ??= await Engine.start({ ...common, pollUs: opts.pollUs });
      return engine;
    };
    const getWorkersEngine = async (): Promise<Engine> => {
      workersEngine ??= await Engine.start({ ...common, mode: 'workers', workers: opts.workers });
      return workersEngine;
    };
    const all: BenchEngine[] = [
      ringfencePerRequest(getEngine), fio('io_uring'), fio('io_uring', true), nodeFs(), nodeFsUring(), ringfenceBatch(getEngine),
      ringfencePerRequest(getWorkersEngine, 'ringfence-workers'), fio('libaio'), qemuImg(),
    ];
    const engines = opts.engines ? all.filter((e) => opts.engines!.includes(e.name)) : all;
    const report: BenchReport = {
      date: new Date().toISOString(), kernel: release(), node: process.version, volume: vol?.note ?? path, fs: vol?.fs ?? '',
      options: { rw: opts.rw, bs: opts.bs, qd: opts.qd, pollUs: opts.pollUs, workers: opts.workers, backend: opts.backend, direct: opts.direct, size: opts.size, runtime: opts.runtime, file: opts.file, xfs: opts.xfs, dir: opts.dir, engines: opts.engines, repeat: opts.repeat },
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
      for (const rf of ['ringfence', 'ringfence-batch', 'ringfence-workers']) {
        const mine = best.get(rf);
        if (!mine) continue;
        for (const [peer, r] of best) if (!peer.startsWith('ringfence')) report.ratios.push({ rw: job.rw, qd: job.qd, ringfence: rf, peer, ratio: mine.iops / r.iops });
      }
    }
    progress('\r' + ' '.repeat(90) + '\r');
    return report;
  } finally {
    if (engine) await (engine as Engine).close();
    if (workersEngine) await (workersEngine as Engine).close();
    if (created) rmSync(path, { force: true });
    unregister();
    vol?.cleanup();
  }
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const k = (n: number): string => (n >= 1e4 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0));

export function formatReport(r: BenchReport): string {
  const out: string[] = [];
  out.push(`ringfence bench ${r.date}  kernel ${r.kernel}  node ${r.node}`);
  out.push(`on ${r.volume}; bs ${r.options.bs}, ${r.options.direct ? 'O_DIRECT' : 'buffered'}, inline mode (ringfence-workers: ${r.options.workers} workers), backend ${r.options.backend}, ${r.options.runtime}s per engine`);
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
