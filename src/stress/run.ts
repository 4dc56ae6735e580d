// `ringfence stress`: starts an engine on a volume, runs one workload, verifies, and returns
// a result that the CLI prints as a table or as one JSON object.
import { statfsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Engine } from '../engine.js';
import type { BackendChoice, WorkaroundPolicy } from '../types.js';
import type { Volume } from '../volume.js';
import { StressContext, type SizeError, type WorkloadName } from './context.js';
import { runWorkload, spaceNeeded } from './workloads.js';
import { WriterThreads } from './threads.js';
import type { BadBlock, BadClass } from './verify.js';

export interface StressOptions {
  workload: WorkloadName;
  workaround: WorkaroundPolicy;
  emulate: boolean;
  windowUs: number;
  workers?: number;
  /** Engine mode: 'workers' (the default for stress) or 'inline'. */
  mode?: 'inline' | 'workers';
  /**
   * Run the writes, zero-writes and truncates in this many writer threads, each with an Engine
   * of its own (inline mode) on the same files (0 or undefined: all on this thread's engine).
   */
  threads?: number;
  backend: BackendChoice;
  qd: number;
  durationS: number | null;
  ops: number | null;
  seed: number;
  clusterSize: number;
  blockSize: number;
  /** 'tty': a line redrawn with \r on stdout; 'plain': a line every ~5 s on stderr; 'none'. */
  progress: 'tty' | 'plain' | 'none';
  log?: (line: string) => void;
  /** Declare the run stalled after this many seconds without a completion (default 30). */
  stallSeconds?: number;
  /** Resolves when the run should stop early (e.g. SIGINT). */
  signal?: AbortSignal;
}

export interface StressResult {
  ok: boolean;
  /** 0 clean, 1 bad blocks or size errors, 130 interrupted (and clean up to then). */
  exitCode: 0 | 1 | 130;
  workload: WorkloadName;
  seed: number;
  streamDigest: string;
  streamOps: number;
  fs: string;
  kernel: string;
  backend: string;
  volume: { note: string; kind: string; dir: string };
  workaround: { policy: WorkaroundPolicy; enabled: boolean; rule: string };
  emulateBug: { enabled: boolean; windowUs: number };
  options: { mode: 'inline' | 'workers'; workers: number; threads: number; qd: number; clusterSize: number; blockSize: number; durationS: number | null; ops: number | null; direct: boolean };
  ops: number;
  epochs: number;
  bytesWritten: number;
  bytesZeroed: number;
  bytesVerified: number;
  verifyReads: number;
  serialised: number;
  tracked: number;
  emulatedFallocates: number;
  waits: { count: number; totalMs: number; maxMs: number };
  bad: Record<BadClass, number> & { total: number };
  firstBad: BadBlock[];
  sizeOk: boolean;
  sizeErrors: number;
  firstSizeErrors: SizeError[];
  interrupted: boolean;
  /** When the first bad block or size error was found (ms into the run), or null. */
  firstBadMs: number | null;
  durationMs: number;
  notes: string[];
}

export class SetupError extends Error {}

/** No request completed for `stallSeconds` while some were outstanding: an engine bug (a hang). */
export class StallError extends Error {}

/** Seconds without any completed request after which a run is declared stalled. */
export const STALL_SECONDS = 30;

export async function runStress(vol: Volume, o: StressOptions): Promise<StressResult> {
  const log = o.log ?? (() => {});
  const need = spaceNeeded(o.workload, o.qd, o.clusterSize, o.blockSize);
  const st = statfsSync(vol.dir);
  const avail = Number(st.bavail) * Number(st.bsize);
  if (avail < need) {
    throw new SetupError(`${vol.dir} has ${mib(avail)} free but ${o.workload} needs about ${mib(need)}: use a larger --xfs SIZE, or another --dir`);
  }
  const poolNeed = (o.qd * 2 + 8) * Math.max(o.clusterSize, 16 * o.blockSize) + (8 << 20);
  let pool = 64 << 20;
  while (pool < poolNeed) pool *= 2;
  const engine = await Engine.start({
    // Worker mode (the default here): at least two workers, since the races this tool provokes
    // need a zero-write and a write in flight at once, and a worker runs an emulated zero-write
    // synchronously. Inline mode: the emulated zero-write runs on a helper thread while this
    // thread keeps submitting, so one context is enough.
    ...(o.mode === 'inline' ? { mode: 'inline' as const } : { mode: 'workers' as const, workers: o.workers ?? Math.max(2, Math.min(4, availableParallelism() - 1)) }),
    backend: o.backend, queueDepth: Math.max(32, o.qd * 4), bufferPoolBytes: pool,
    xfsWorkaround: o.workaround, emulateXfsFallocateBug: o.emulate ? { windowUs: o.windowUs } : false,
  });
  let threads: WriterThreads | null = null;
  if ((o.threads ?? 0) > 0) {
    // Each writer thread's engine: inline (the thread owns its ring), the same policy and
    // emulation as this one, so that its zero-writes race the other threads' writes.
    const slotBytes = Math.ceil(Math.max(o.clusterSize, 16 * o.blockSize) / 4096) * 4096;
    try {
      threads = await WriterThreads.start(o.threads!, {
        mode: 'inline', backend: o.backend, queueDepth: Math.max(32, o.qd * 4), bufferPoolBytes: pool,
        xfsWorkaround: o.workaround, emulateXfsFallocateBug: o.emulate ? { windowUs: o.windowUs } : false,
      }, o.qd * 2 + 8, slotBytes);
    } catch (err) {
      await engine.close();
      throw err;
    }
  }
  const ctx = new StressContext({
    params: { workload: o.workload, seed: o.seed, qd: o.qd, clusterSize: o.clusterSize, blockSize: o.blockSize },
    engine, dir: vol.dir, durationMs: o.durationS === null ? null : o.durationS * 1000, ops: o.ops, log, threads,
  });
  const onAbort = (): void => ctx.interrupt();
  o.signal?.addEventListener('abort', onAbort);
  const progress = startProgress(ctx, o);
  let decision: StressResult['workaround'] | null = null;
  let direct = true;
  let stats: ReturnType<StressContext['tableStats']> | null = null;
  let info: ReturnType<Engine['info']> | null = null;
  let stalled: string | null = null;
  try {
    // A hang in the engine would otherwise hang the tool: watch for progress.
    let last = -1, still = 0;
    let onStall: (e: Error) => void = () => {};
    const stall = new Promise<never>((_, reject) => { onStall = reject; });
    const watch = setInterval(() => {
      const now = ctx.ops + ctx.verifyReads;
      const st = engine.stats();
      if (now !== last || (st.inFlight === 0 && (threads?.inFlight() ?? 0) === 0)) { last = now; still = 0; return; }
      if (++still < (o.stallSeconds ?? STALL_SECONDS)) return;
      clearInterval(watch);
      const files = st.files.map((f) => `${f.path.split('/').pop()}: ${f.tracked} tracked, ${f.serialising} serialising, ${f.waits} waits, table high water <= ${f.tableHighWater}`).join('; ');
      stalled = `the engine stalled: ${st.inFlight} request(s) outstanding and none completed for ${still} s ` +
        `(workers report ${st.workers.map((w) => w.inFlight).join('/')} in the kernel; ${files}). ` +
        `This is a ringfence bug (a request parked in the tracked-request table and never woken?): report it with the seed ${o.seed}`;
      onStall(new StallError(stalled));
    }, 1000);
    try {
      await Promise.race([runWorkload(ctx), stall]);
    } finally { clearInterval(watch); }
  } finally {
    if (stalled !== null) {
      // Requests never completed: closing the engine would wait for them forever. The
      // caller reports the StallError and exits; the volume is cleaned up on the way out.
      progress.stop();
      o.signal?.removeEventListener('abort', onAbort);
    } else await finish();
  }
  async function finish(): Promise<void> {
    progress.stop();
    o.signal?.removeEventListener('abort', onAbort);
    try {
      if (ctx.targets[0]) ({ decision, direct } = describe(ctx));
      await ctx.refreshStats();
      stats = ctx.tableStats();
      info = engine.info();
    } finally {
      await ctx.closeAll();
      await threads?.stop();
      await engine.close();
    }
  }
  const interrupted = o.signal?.aborted ?? false;
  const S = stats!, I = info!;
  const backends = [...new Set(I.workers.map((w) => w.backend))];
  const { digest, ops: streamOps } = ctx.streamDigest();
  const badTotal = ctx.badTotal;
  const sizeOk = ctx.sizeErrorCount === 0;
  const ok = badTotal === 0 && sizeOk;
  const d = decision as StressResult['workaround'] | null;
  return {
    ok, exitCode: !ok ? 1 : interrupted ? 130 : 0,
    workload: o.workload, seed: o.seed, streamDigest: digest, streamOps,
    fs: vol.fs, kernel: I.kernel, backend: backends.join('+'),
    volume: { note: vol.note, kind: vol.kind, dir: vol.dir },
    workaround: d ?? { policy: o.workaround, enabled: false, rule: 'no file was opened' },
    emulateBug: { enabled: o.emulate, windowUs: o.emulate ? o.windowUs : 0 },
    options: { mode: I.mode, workers: I.mode === 'inline' ? 0 : I.workers.length, threads: o.threads ?? 0, qd: o.qd, clusterSize: o.clusterSize, blockSize: o.blockSize, durationS: o.durationS, ops: o.ops, direct },
    ops: ctx.ops, epochs: ctx.epochs,
    bytesWritten: ctx.bytesWritten, bytesZeroed: ctx.bytesZeroed, bytesVerified: ctx.bytesVerified, verifyReads: ctx.verifyReads,
    serialised: S.serialised, tracked: S.tracked, emulatedFallocates: S.emulatedFallocates,
    waits: { count: S.waits, totalMs: round(S.waitNsTotal / 1e6), maxMs: round(S.waitNsMax / 1e6) },
    bad: { ...ctx.bad, total: badTotal }, firstBad: ctx.firstBad,
    sizeOk, sizeErrors: ctx.sizeErrorCount, firstSizeErrors: ctx.sizeErrors,
    interrupted,
    firstBadMs: ctx.firstBadMs,
    durationMs: Math.round(ctx.elapsedMs),
    notes: ctx.notes,
  };
}

function describe(ctx: StressContext): { decision: StressResult['workaround']; direct: boolean } {
  const t = ctx.targets[0];
  const x = t.file.info().xfsWorkaround;
  return { decision: { policy: x.policy, enabled: x.enabled, rule: x.rule }, direct: ctx.targets.every((f) => f.direct) };
}

function startProgress(ctx: StressContext, o: StressOptions): { stop(): void } {
  if (o.progress === 'none') return { stop() {} };
  const tty = o.progress === 'tty';
  const line = (): string => {
    const secs = ctx.elapsedMs / 1000;
    const rate = ctx.bytesWritten / 2 ** 20 / Math.max(secs, 0.001);
    const left = ctx.deadline !== null ? `, ${Math.max(0, (ctx.deadline - performance.now()) / 1000).toFixed(0)}s left` : '';
    const opsPart = ctx.opsBudget !== null ? `${ctx.ops}/${ctx.opsBudget} ops` : `${fmtCount(ctx.ops)} ops`;
    const bad = ctx.badTotal, size = ctx.sizeErrorCount;
    return `${o.workload}: ${opsPart}, ${rate.toFixed(1)} MiB/s written, ${(ctx.bytesVerified / 2 ** 20).toFixed(0)} MiB verified, ` +
      `bad blocks ${bad}${size ? `, size errors ${size}` : ''}, ${secs.toFixed(1)}s elapsed${left}`;
  };
  const timer = setInterval(() => {
    if (tty) process.stdout.write(`\r\x1b[K${line()}`);
    else process.stderr.write(`${line()}\n`);
  }, tty ? 250 : 5000);
  timer.unref();
  return {
    stop(): void {
      clearInterval(timer);
      if (tty) process.stdout.write(`\r\x1b[K`);
    },
  };
}

function fmtCount(n: number): string { return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : String(n); }
function mib(n: number): string { return `${(n / 2 ** 20).toFixed(0)} MiB`; }
function round(n: number): number { return Math.round(n * 1000) / 1000; }
