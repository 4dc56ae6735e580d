// The `ringfence stress` command: options, volume set-up and teardown, output, exit codes.
import { randomInt } from 'node:crypto';
import type { Command } from 'commander';
import { BACKEND_CHOICES } from '../backends.js';
import { MAX_WORKERS } from '../shm.js';
import { UsageError, enumArg, formatSize, intArg, numberArg, sizeArg } from '../args.js';
import { XFS_MAX_BYTES, XFS_MIN_BYTES, checkVolumeFlags, openVolume, type VolumeSpec } from '../volume.js';
import { exitOnSignal, onStopSignal, reportDeadRuns, signalExitCode, type StopSignal } from '../cleanup.js';
import type { BackendChoice, WorkaroundPolicy } from '../types.js';
import { WORKLOADS, type WorkloadName } from './context.js';
import { defaultQd, spaceNeeded } from './workloads.js';
import { SetupError, StallError, runStress, type StressResult } from './run.js';
import { formatSummary } from './report.js';

interface RawOptions {
  xfs?: string; dir?: string; image?: string; force?: boolean;
  workload?: string; workaround?: string; emulateXfsBug?: boolean; windowUs?: string;
  workers?: string; mode?: string; threads?: string; backend?: string; qd?: string; duration?: string; ops?: string; seed?: string;
  clusterSize?: string; blockSize?: string; json?: boolean; quiet?: boolean;
}

export const STRESS_LIMITS = {
  workers: { min: 1, max: MAX_WORKERS },
  /** Writer threads; with this thread's engine and its workers they must fit one table's 31 participants. */
  threads: { min: 1, max: 16 },
  qd: { min: 1, max: 256 },
  windowUs: { min: 0, max: 10_000_000 },
  durationS: { max: 7 * 86400 },
  ops: { min: 1, max: Number.MAX_SAFE_INTEGER },
  seed: { min: 0, max: 0xffffffff },
  blockSize: { min: 512, max: 1 << 20 },
  clusterSize: { max: 64 << 20 },
  /** The engine's buffer pool is a power of two of at most 2 GiB (options.bufferPoolBytes < 4 GiB). */
  poolBytes: 2 ** 31,
} as const;

const BACKENDS = BACKEND_CHOICES;
const POLICIES = ['auto', 'always', 'never', 'probe'] as const;

const EXAMPLES = `
Examples:
  ringfence stress                                   # qcow2-alloc, 10 s, on the embedded default volume
  ringfence stress --xfs 512M --workload append-race --duration 5
  ringfence stress --xfs 512M --emulate-xfs-bug --workaround never    # shows lost writes: exit 1
  ringfence stress --xfs 512M --emulate-xfs-bug --workaround auto     # the workaround prevents them: exit 0
  ringfence stress --dir /mnt/xfs --workload mixed --ops 20000 --seed 42 --json

Exit codes: 0 every block verified, 1 bad blocks or wrong file sizes found, 2 usage or set-up error,
130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM (1 if bad blocks were found before the stop).
Every flag is checked before anything is created. A run that was killed (SIGKILL) leaves its
volume behind: the next run reports it, \`ringfence cleanup\` removes it.
The same --seed (with the same --workload, --qd, --cluster-size, --block-size and --ops)
generates the same operation stream: compare "streamDigest" between runs.
`;

export function addStressCommand(program: Command): void {
  const L = STRESS_LIMITS;
  program.command('stress')
    .description('hammer a file with concurrent post-EOF zero-writes and writes, verify every block (fio-style headers + crc32c), and report lost, stale, misdirected and torn blocks')
    .option('--xfs <size>', `create a temporary loop-mounted XFS volume of this size (root), ${formatSize(XFS_MIN_BYTES)} to ${formatSize(XFS_MAX_BYTES)}, e.g. 512M`)
    .option('--dir <path>', 'use an existing, writable directory (its filesystem decides what "auto" does)')
    .option('--image <path>', 'with --xfs: keep the image file at this path (its directory must exist)')
    .option('--force', 'with --image: overwrite an existing image file')
    .option('--workload <name>', `what to run: ${WORKLOADS.join(', ')} (default qcow2-alloc)`)
    .option('--workaround <policy>', 'serialise post-EOF zero-writes: auto (by filesystem and kernel, the default), always, never, or probe (decided by ringfence probe\'s race check, cached per filesystem and kernel)')
    .option('--emulate-xfs-bug', 'run zero-writes with the pre-Linux-5.5 XFS fallocate semantics (sample size, allocate, sleep, truncate)')
    .option('--window-us <n>', `with --emulate-xfs-bug: the race window in microseconds, ${L.windowUs.min} to ${L.windowUs.max} (default 2000)`)
    .option('--workers <n>', `engine worker threads, ${L.workers.min} to ${L.workers.max} (default 2, or min(4, cores - 1) when larger: the races need requests on two workers at once)`)
    .option('--mode <mode>', 'engine mode: workers (offload worker threads, the default here) or inline (this thread owns its ring, the library\'s default)')
    .option('--threads <n>', `run the writes, zero-writes and truncates in n writer threads (${L.threads.min} to ${L.threads.max}), each with an engine of its own on the same files: they meet only in the file's process-wide tracked-request table (reads and verification stay on this thread)`)
    .option('--backend <name>', `kernel I/O interface: ${BACKENDS.join(', ')} (default auto)`)
    .option('--qd <n>', `concurrency, ${L.qd.min} to ${L.qd.max}: writers (qcow2-alloc), files (append-race, eof-extend), ops per round (mixed); default 8, 4, 4, 8`)
    .option('--duration <seconds>', `how long to run, above 0 and at most ${L.durationS.max} (default 10; with --ops only, no time limit)`)
    .option('--ops <n>', 'stop after this many generated operations (at least 1)')
    .option('--seed <n>', `seed of the operation stream, ${L.seed.min}..${L.seed.max} (default: random, printed)`)
    .option('--cluster-size <size>', `qcow2-alloc cluster size: a power of two from --block-size to ${formatSize(L.clusterSize.max)} (default 64K)`)
    .option('--block-size <size>', `verified block size: a power of two from ${formatSize(L.blockSize.min)} to ${formatSize(L.blockSize.max)} (default 4K; eof-extend writes 1/8 blocks)`)
    .option('--json', 'print one JSON object to stdout and nothing else')
    .option('--quiet', 'no progress line')
    .addHelpText('after', EXAMPLES)
    .action(async (raw: RawOptions) => {
      const json = raw.json === true;
      try {
        await stress(raw);
      } catch (err) {
        if (json) process.stdout.write(JSON.stringify({ ok: false, exitCode: 2, error: (err as Error).message, stalled: err instanceof StallError }) + '\n');
        if (err instanceof StallError) {
          // The engine's threads still hold the stuck requests: leave without waiting for them.
          process.stderr.write(`\nringfence: ${err.message}\n`);
          process.exit(2);
        }
        if (err instanceof SetupError) throw new UsageError((err as Error).message);
        throw err;
      }
    });
}

export interface StressPlan {
  volume: VolumeSpec;
  workload: WorkloadName; workaround: WorkaroundPolicy; emulate: boolean; windowUs: number;
  workers: number | undefined; mode: 'inline' | 'workers'; threads: number; backend: BackendChoice; qd: number; durationS: number | null; ops: number | null;
  seed: number; clusterSize: number; blockSize: number; json: boolean; quiet: boolean;
}

/** Every flag of `ringfence stress`, checked; throws UsageError naming the flag. Creates nothing. */
export function checkStressFlags(raw: RawOptions): StressPlan {
  const L = STRESS_LIMITS;
  const workload = enumArg('--workload', raw.workload, WORKLOADS, 'qcow2-alloc');
  const workaround = enumArg('--workaround', raw.workaround, POLICIES, 'auto');
  const backend = enumArg('--backend', raw.backend, BACKENDS, 'auto');
  const blockSize = sizeArg('--block-size', raw.blockSize, { ...L.blockSize, powerOfTwo: true, example: '4K' }) ?? 4096;
  const clusterSize = sizeArg('--cluster-size', raw.clusterSize, { min: blockSize, max: L.clusterSize.max, powerOfTwo: true, example: '64K', why: `at least --block-size, ${formatSize(blockSize)}` }) ?? 64 * 1024;
  if (clusterSize < blockSize) throw new UsageError(`--cluster-size (default 64K) is smaller than --block-size ${raw.blockSize}: give --cluster-size at least as large as the block size`);
  if (raw.windowUs !== undefined && !raw.emulateXfsBug) throw new UsageError('--window-us only applies to the emulated bug: add --emulate-xfs-bug, or drop --window-us');
  const windowUs = intArg('--window-us', raw.windowUs, { ...L.windowUs, example: 2000 }) ?? 2000;
  const workers = intArg('--workers', raw.workers, { ...L.workers, example: 4, maxWhy: 'the engine\'s maximum, MAX_WORKERS' });
  const mode = enumArg('--mode', raw.mode, ['workers', 'inline'] as const, 'workers');
  if (mode === 'inline' && raw.workers !== undefined) throw new UsageError('--workers applies to --mode workers only: drop it, or drop --mode inline');
  const threads = intArg('--threads', raw.threads, { ...L.threads, example: 2, maxWhy: 'the writer threads, this thread\'s engine and its workers share a table of 31 participants' }) ?? 0;
  if (threads + (mode === 'inline' ? 1 : workers ?? 4) > 31) {
    throw new UsageError(`--threads ${threads} with ${mode === 'inline' ? 'an inline engine' : `${workers ?? 4} workers`} needs more than a tracked-request table's 31 participants: lower --threads or --workers`);
  }
  const qd = intArg('--qd', raw.qd, { ...L.qd, example: 8 }) ?? defaultQd(workload);
  const ops = intArg('--ops', raw.ops, { ...L.ops, example: 20000 }) ?? null;
  const duration = numberArg('--duration', raw.duration, { above: 0, max: L.durationS.max, unit: 'seconds', example: 5 });
  const durationS = duration ?? (ops !== null ? null : 10);
  const seed = intArg('--seed', raw.seed, { ...L.seed, example: 42 }) ?? randomInt(0, 0xffffffff);
  // The engine's buffer pool (sized as in run.ts) must stay within its limit.
  const poolNeed = (qd * 2 + 8) * Math.max(clusterSize, 16 * blockSize) + (8 << 20);
  if (poolNeed > L.poolBytes) {
    throw new UsageError(`--qd ${qd} with --cluster-size ${raw.clusterSize ?? '64K'} and --block-size ${raw.blockSize ?? '4K'} needs a ${Math.ceil(poolNeed / 2 ** 20)} MiB buffer pool, more than the engine's 2048 MiB: lower --qd or --cluster-size`);
  }
  const need = { bytes: spaceNeeded(workload, qd, clusterSize, blockSize), what: `the ${workload} workload` };
  const volume = checkVolumeFlags(raw, { image: true, need });
  return {
    volume, workload, workaround, emulate: raw.emulateXfsBug === true, windowUs, workers, mode, threads, backend, qd, durationS, ops, seed,
    clusterSize, blockSize, json: raw.json === true, quiet: raw.quiet === true,
  };
}

async function stress(raw: RawOptions): Promise<void> {
  const p = checkStressFlags(raw);
  const { json, quiet } = p;
  const out = (s: string): void => { if (!json) process.stdout.write(s + '\n'); };
  const info = (s: string): void => { if (json) { if (!quiet) process.stderr.write(s + '\n'); } else process.stdout.write(s + '\n'); };
  if (!(json && quiet)) reportDeadRuns((s) => process.stderr.write(s + '\n'));

  // SIGINT or SIGTERM: stop generating, let in-flight requests finish, verify what was written,
  // report, and tear the volume down cleanly (a clean unmount, not a lazy one under open
  // files); exit 130 (SIGINT) or 143 (SIGTERM). A second signal, or a graceful stop that takes
  // longer than 15 s, cleans up at once (src/cleanup.ts) and exits with the first one's code.
  const ac = new AbortController();
  let stoppedBy: StopSignal | null = null;
  let watchdog: NodeJS.Timeout | undefined;
  const unhook = onStopSignal((sig) => {
    stoppedBy = sig;
    process.stderr.write(`\n${sig}: stopping the run, verifying what was written, then cleaning up (${sig === 'SIGINT' ? 'Ctrl-C' : 'a signal'} again to quit at once)\n`);
    ac.abort();
    watchdog = setTimeout(() => exitOnSignal(sig), 15_000);
    watchdog.unref();
  });
  let result: StressResult;
  try {
    const vol = openVolume(p.volume, info);
    try {
      info(`ringfence stress: workload ${p.workload}, seed ${p.seed}`);
      info(`volume: ${vol.note}`);
      if (vol.kind === 'tempdir' || vol.fs !== 'xfs') info(`note: this is not XFS (${vol.fs}): the XFS race cannot occur here except through --emulate-xfs-bug`);
      result = await runStress(vol, {
        workload: p.workload, workaround: p.workaround, emulate: p.emulate, windowUs: p.windowUs,
        workers: p.workers, mode: p.mode, threads: p.threads,
        backend: p.backend, qd: p.qd, durationS: p.durationS, ops: p.ops, seed: p.seed, clusterSize: p.clusterSize, blockSize: p.blockSize,
        progress: json || quiet ? 'none' : process.stdout.isTTY ? 'tty' : 'plain', signal: lateSafe(ac.signal),
        log: info, stallSeconds: Number(process.env.RINGFENCE_STALL_SECONDS) || undefined,
      });
    } finally {
      clearTimeout(watchdog);
      vol.cleanup();
    }
  } finally {
    unhook();
  }
  // Interrupted: 130 for SIGINT, 143 for SIGTERM (like a shell), unless what was verified up to
  // then is already bad (1).
  if (result.exitCode === 130 && stoppedBy !== null) (result as { exitCode: number }).exitCode = signalExitCode(stoppedBy);
  if (json) process.stdout.write(JSON.stringify(result) + '\n');
  else {
    out('');
    out(formatSummary(result));
  }
  process.exitCode = result.exitCode;
}

/**
 * The signal as runStress sees it: a listener added after the abort (a signal that arrived
 * while the engine was starting) is still called, so no stop request is lost.
 */
function lateSafe(signal: AbortSignal): AbortSignal {
  return new Proxy(signal, {
    get(target, prop) {
      if (prop === 'addEventListener') {
        return (type: string, fn: () => void, opts?: { once?: boolean }): void => {
          if (type === 'abort' && target.aborted) queueMicrotask(fn);
          else target.addEventListener(type, fn, opts);
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
