// The `ringfence stress` command: options, volume set-up and teardown, output, exit codes.
import { randomInt } from 'node:crypto';
import { Option, type Command } from 'commander';
import type { Volume } from '../volume.js';
import { parseSize } from '../volume.js';
import type { BackendChoice, WorkaroundPolicy } from '../types.js';
import { WORKLOADS, type WorkloadName } from './context.js';
import { defaultQd } from './workloads.js';
import { SetupError, StallError, runStress, type StressResult } from './run.js';
import { formatSummary } from './report.js';

interface Deps {
  pickVolume(o: { xfs?: string; dir?: string; image?: string; force?: boolean }, log: (s: string) => void): Volume;
  UsageError: new (message: string) => Error;
}

interface RawOptions {
  xfs?: string; dir?: string; image?: string; force?: boolean;
  workload: WorkloadName; workaround: WorkaroundPolicy; emulateXfsBug?: boolean; windowUs?: string;
  workers?: string; backend: BackendChoice; qd?: string; duration?: string; ops?: string; seed?: string;
  clusterSize: string; blockSize: string; json?: boolean; quiet?: boolean;
}

const EXAMPLES = `
Examples:
  ringfence stress                                   # qcow2-alloc, 10 s, on the embedded default volume
  ringfence stress --xfs 512M --workload append-race --duration 5
  ringfence stress --xfs 512M --emulate-xfs-bug --workaround never    # shows lost writes: exit 1
  ringfence stress --xfs 512M --emulate-xfs-bug --workaround auto     # the workaround prevents them: exit 0
  ringfence stress --dir /mnt/xfs --workload mixed --ops 20000 --seed 42 --json

Exit codes: 0 every block verified, 1 bad blocks or wrong file sizes found, 2 usage or set-up error.
The same --seed (with the same --workload, --qd, --cluster-size, --block-size and --ops)
generates the same operation stream: compare "streamDigest" between runs.
`;

export function addStressCommand(program: Command, deps: Deps): void {
  program.command('stress')
    .description('hammer a file with concurrent post-EOF zero-writes and writes, verify every block (fio-style headers + crc32c), and report lost, stale, misdirected and torn blocks')
    .option('--xfs <size>', 'create a temporary loop-mounted XFS volume of this size (root), e.g. 512M')
    .option('--dir <path>', 'use an existing directory (its filesystem decides what "auto" does)')
    .option('--image <path>', 'with --xfs: keep the image file at this path')
    .option('--force', 'with --image: overwrite an existing image file')
    .addOption(new Option('--workload <name>', 'what to run').choices(WORKLOADS as string[]).default('qcow2-alloc'))
    .addOption(new Option('--workaround <policy>', 'serialise post-EOF zero-writes: auto (by filesystem and kernel), always, never, or probe (decided by ringfence probe\'s race check, cached per filesystem and kernel)').choices(['auto', 'always', 'never', 'probe']).default('auto'))
    .option('--emulate-xfs-bug', 'run zero-writes with the pre-Linux-5.5 XFS fallocate semantics (sample size, allocate, sleep, truncate)')
    .option('--window-us <n>', 'with --emulate-xfs-bug: the race window in microseconds (default 2000)')
    .option('--workers <n>', 'engine worker threads (default 2, or min(4, cores - 1) when larger: the races need requests on two workers at once)')
    .addOption(new Option('--backend <name>', 'kernel I/O interface').choices(['auto', 'io_uring', 'libaio', 'sync']).default('auto'))
    .option('--qd <n>', 'concurrency: writers (qcow2-alloc), files (append-race, eof-extend), ops per round (mixed); default 8, 4, 4, 8')
    .option('--duration <seconds>', 'how long to run (default 10; with --ops only, no time limit)')
    .option('--ops <n>', 'stop after this many generated operations')
    .option('--seed <n>', 'seed of the operation stream, 0..4294967295 (default: random, printed)')
    .option('--cluster-size <size>', 'qcow2-alloc cluster size', '64K')
    .option('--block-size <size>', 'verified block size (eof-extend writes 1/8 blocks)', '4K')
    .option('--json', 'print one JSON object to stdout and nothing else')
    .option('--quiet', 'no progress line')
    .addHelpText('after', EXAMPLES)
    .action(async (raw: RawOptions) => {
      const json = raw.json === true;
      try {
        await stress(raw, deps);
      } catch (err) {
        if (json) process.stdout.write(JSON.stringify({ ok: false, exitCode: 2, error: (err as Error).message, stalled: err instanceof StallError }) + '\n');
        if (err instanceof StallError) {
          // The engine's threads still hold the stuck requests: leave without waiting for them.
          process.stderr.write(`\nringfence: ${err.message}\n`);
          process.exit(2);
        }
        if (err instanceof SetupError || (err as { usage?: boolean }).usage) throw new deps.UsageError((err as Error).message);
        throw err;
      }
    });
}

async function stress(raw: RawOptions, deps: Deps): Promise<void> {
  const usage = (msg: string): Error => new deps.UsageError(msg);
  const int = (v: string | undefined, name: string, min: number, max: number): number | undefined => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v.trim()) || Number(v) < min || Number(v) > max) throw usage(`${name} must be an integer from ${min} to ${max}; got "${v}"`);
    return Number(v);
  };
  const size = (v: string, name: string): number => {
    try { return parseSize(v); } catch (e) { throw usage(`${name}: ${(e as Error).message}`); }
  };
  const pow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

  const blockSize = size(raw.blockSize, '--block-size');
  if (!pow2(blockSize) || blockSize < 512 || blockSize > 1 << 20) throw usage(`--block-size must be a power of two from 512 to 1M; got ${raw.blockSize}`);
  const clusterSize = size(raw.clusterSize, '--cluster-size');
  if (!pow2(clusterSize) || clusterSize < blockSize || clusterSize > 64 << 20) throw usage(`--cluster-size must be a power of two from --block-size (${blockSize}) to 64M; got ${raw.clusterSize}`);
  if (raw.windowUs !== undefined && !raw.emulateXfsBug) throw usage('--window-us only applies to the emulated bug: add --emulate-xfs-bug');
  const windowUs = int(raw.windowUs, '--window-us', 0, 10_000_000) ?? 2000;
  const workers = int(raw.workers, '--workers', 1, 32);
  const qd = int(raw.qd, '--qd', 1, 256) ?? defaultQd(raw.workload);
  const ops = int(raw.ops, '--ops', 1, Number.MAX_SAFE_INTEGER) ?? null;
  const duration = raw.duration === undefined ? (ops !== null ? null : 10) : Number(raw.duration);
  if (duration !== null && (!Number.isFinite(duration) || duration <= 0)) throw usage(`--duration must be a positive number of seconds; got "${raw.duration}"`);
  const seed = int(raw.seed, '--seed', 0, 0xffffffff) ?? randomInt(0, 0xffffffff);
  if (raw.image && !raw.xfs) throw usage('--image needs --xfs SIZE (the size of the image to create)');
  if (raw.dir && raw.image) throw usage('--dir and --image are mutually exclusive: pick one');

  const json = raw.json === true, quiet = raw.quiet === true;
  const out = (s: string): void => { if (!json) process.stdout.write(s + '\n'); };
  const info = (s: string): void => { if (json) { if (!quiet) process.stderr.write(s + '\n'); } else process.stdout.write(s + '\n'); };

  const vol = deps.pickVolume({ xfs: raw.xfs, dir: raw.dir, image: raw.image, force: raw.force }, info);
  // Ctrl-C: stop generating, let in-flight requests finish, verify what was written, report,
  // and tear the volume down cleanly (a clean unmount, not a lazy one under open files).
  // The volume's own SIGINT handler (clean up synchronously and exit 130) is set aside for the
  // run and called on a second Ctrl-C, or if the graceful stop takes longer than 15 s.
  const ac = new AbortController();
  let watchdog: NodeJS.Timeout | undefined;
  const theirs = process.listeners('SIGINT');
  for (const l of theirs) process.off('SIGINT', l);
  const forceExit = (): void => {
    process.off('SIGINT', onSig);
    if (theirs.length > 0) for (const l of theirs) (l as (s: string) => void)('SIGINT');
    else { vol.cleanup(); process.exit(130); }
  };
  const onSig = (): void => {
    if (ac.signal.aborted) { forceExit(); return; }
    process.stderr.write('\nSIGINT: stopping the run, verifying what was written, then cleaning up (Ctrl-C again to quit at once)\n');
    ac.abort();
    watchdog = setTimeout(forceExit, 15_000);
    watchdog.unref();
  };
  process.on('SIGINT', onSig);
  let result: StressResult;
  try {
    info(`ringfence stress: workload ${raw.workload}, seed ${seed}`);
    info(`volume: ${vol.note}`);
    if (vol.kind === 'tempdir' || vol.fs !== 'xfs') info(`note: this is not XFS (${vol.fs}): the XFS race cannot occur here except through --emulate-xfs-bug`);
    result = await runStress(vol, {
      workload: raw.workload, workaround: raw.workaround, emulate: raw.emulateXfsBug === true, windowUs, workers,
      backend: raw.backend, qd, durationS: duration, ops, seed, clusterSize, blockSize,
      progress: json || quiet ? 'none' : process.stdout.isTTY ? 'tty' : 'plain', signal: ac.signal,
      log: info, stallSeconds: Number(process.env.RINGFENCE_STALL_SECONDS) || undefined,
    });
  } finally {
    clearTimeout(watchdog);
    process.off('SIGINT', onSig);
    vol.cleanup();
    for (const l of theirs) process.on('SIGINT', l);
  }
  if (json) process.stdout.write(JSON.stringify(result) + '\n');
  else {
    out('');
    out(formatSummary(result));
  }
  // Interrupted: 130 (like a shell), unless what was verified up to then is already bad.
  process.exitCode = result.exitCode;
}
