// Engine options: what Engine.start() accepts, validated once, here (Node's validators style),
// into the ResolvedOptions every other module reads.
import { availableParallelism } from 'node:os';
import { PAGE } from './pool.js';
import { MAX_WORKERS } from './shm.js';
import { invalidArg, validateBoolean, validateInteger, validateKnownKeys, validateObject, validateOneOf, validateString } from './validators.js';
import { parseFaultSpec } from './faults.js';
import type { BackendChoice, WorkaroundPolicy } from './types.js';
import { BACKEND_CHOICES } from './backends.js';

export interface CloseOptions {
  /**
   * Milliseconds to wait for requests in flight. After that they reject with
   * ERR_RINGFENCE_CLOSE_TIMEOUT and the workers are terminated. Default: wait as long as it takes.
   * With nothing in flight and no open() in progress, even 0 closes cleanly.
   */
  deadlineMs?: number;
}

export type EngineMode = 'inline' | 'workers';

export interface EngineOptions {
  /**
   * 'inline' (the default): the thread that calls Engine.start() owns the kernel I/O context
   * and drives it from its own event loop; no other thread is involved in a request.
   * 'workers': `workers` offload threads each own one. Giving `workers` (or `faults`) without
   * `mode` means 'workers'.
   */
  mode?: EngineMode;
  /** Offload worker threads (mode 'workers'), each owning one kernel I/O context. Default: min(4, cores - 1), at least 1. */
  workers?: number;
  /** 'auto' picks io_uring, then libaio, then sync, per worker. Default 'auto'. */
  backend?: BackendChoice;
  /** In-flight requests per worker (io_uring SQ size / libaio nr_events). Default 128. */
  queueDepth?: number;
  /** Size of the shared, 4 KiB-aligned buffer pool. Default 64 MiB. */
  bufferPoolBytes?: number;
  /** Serialise post-EOF zero-writes (the XFS workaround): per-file default. Default 'auto'. */
  xfsWorkaround?: WorkaroundPolicy;
  /** Execute zero-writes/fallocate with the pre-5.5 XFS semantics (tests, stress tool). */
  emulateXfsFallocateBug?: boolean | { windowUs?: number };
  /** Track requests in the per-file table (default true). Off only for benchmarks. */
  trackRequests?: boolean;
  /** Slots per file table. Default 256. */
  tableCapacity?: number;
  /** Fault injection for tests: "WORKER:exit|throw|hang:AFTER,...". Also RINGFENCE_FAULTS. */
  faults?: string;
  /** A worker holding requests that makes no progress for this long is declared hung and replaced (ms, 0 = off). Default 30000. */
  watchdogMs?: number;
  /** How long an idle worker polls its ring before sleeping, in microseconds (latency vs idle CPU). Default 50. */
  spinUs?: number;
  /**
   * Worker mode: how a worker wakes the engine's thread when completions are ready: 'eventfd'
   * (an eventfd the thread's libuv loop watches) or 'atomics' (Atomics.notify on the
   * Atomics.waitAsync it sleeps in). Default: the faster on this machine kind (README, Performance).
   */
  mainWake?: 'eventfd' | 'atomics';
  /**
   * Inline mode: after submitting, busy-poll the completion queue for up to this many
   * microseconds before returning to the event loop (latency vs CPU; it competes with the
   * kernel's own completion work on few cores). Default 0: never.
   */
  pollUs?: number;
}

export interface ResolvedOptions {
  mode: EngineMode;
  /** Why this mode: what in the options chose it. */
  modeReason: string;
  /** Offload workers (0 in inline mode). */
  workers: number;
  backend: BackendChoice;
  queueDepth: number;
  bufferPoolBytes: number;
  xfsWorkaround: WorkaroundPolicy;
  emulateWindowUs: number;
  emulate: boolean;
  trackRequests: boolean;
  tableCapacity: number;
  faults: string | null;
  watchdogMs: number;
  spinUs: number;
  pollUs: number;
  mainWake: 'eventfd' | 'atomics';
}

const OPTION_KEYS = [
  'mode', 'workers', 'backend', 'queueDepth', 'bufferPoolBytes', 'xfsWorkaround', 'emulateXfsFallocateBug', 'trackRequests',
  'tableCapacity', 'faults', 'watchdogMs', 'spinUs', 'pollUs', 'mainWake',
] as const;

/** Chosen by measurement (README, Performance: `ringfence bench --engines ringfence-workers`). */
const MAIN_WAKE_DEFAULT: 'eventfd' | 'atomics' = 'eventfd';

export function resolveOptions(options: unknown): ResolvedOptions {
  const o = options === undefined ? {} : validateObject(options, 'options');
  validateKnownKeys(o, 'options', OPTION_KEYS);
  // One core is left for the main thread, which submits and completes every request.
  const givenMode = o.mode === undefined ? undefined : validateOneOf(o.mode, 'options.mode', ['inline', 'workers'] as const);
  const fs0 = o.faults ?? process.env.RINGFENCE_FAULTS;
  // Asking for workers (or for worker fault injection) without a mode means worker mode.
  const mode: EngineMode = givenMode ?? (o.workers !== undefined || (fs0 !== undefined && fs0 !== '') ? 'workers' : 'inline');
  const modeReason = givenMode !== undefined ? `options.mode is '${givenMode}'`
    : o.workers !== undefined ? "options.workers was given, which means mode 'workers'"
    : mode === 'workers' ? "fault injection (options.faults or RINGFENCE_FAULTS) needs mode 'workers'"
    : "the default: this thread owns its kernel I/O context (measured faster than offload workers, see the README's Performance)";
  if (mode === 'inline' && o.workers !== undefined) throw invalidArg('options.workers', "applies to mode 'workers' only; drop it, or start with mode: 'workers'", o.workers);
  const workers = mode === 'inline' ? 0 : o.workers === undefined ? Math.max(1, Math.min(4, availableParallelism() - 1)) : validateInteger(o.workers, 'options.workers', 1, MAX_WORKERS);
  const backend = o.backend === undefined ? 'auto' : validateOneOf(o.backend, 'options.backend', BACKEND_CHOICES);
  const queueDepth = o.queueDepth === undefined ? 128 : validateInteger(o.queueDepth, 'options.queueDepth', 1, 4096);
  const bufferPoolBytes = o.bufferPoolBytes === undefined ? 64 << 20 : validateInteger(o.bufferPoolBytes, 'options.bufferPoolBytes', PAGE, 2 ** 32 - PAGE);
  if (bufferPoolBytes % PAGE !== 0) throw invalidArg('options.bufferPoolBytes', `must be a multiple of ${PAGE}`, bufferPoolBytes);
  const xfsWorkaround = o.xfsWorkaround === undefined ? 'auto' : validateOneOf(o.xfsWorkaround, 'options.xfsWorkaround', ['auto', 'always', 'never', 'probe'] as const);
  let emulate = false, emulateWindowUs = 0;
  const em = o.emulateXfsFallocateBug;
  if (em !== undefined && em !== false) {
    emulate = true;
    emulateWindowUs = 2000;
    if (em !== true) {
      const eo = validateObject(em, 'options.emulateXfsFallocateBug');
      validateKnownKeys(eo, 'options.emulateXfsFallocateBug', ['windowUs']);
      if (eo.windowUs !== undefined) emulateWindowUs = validateInteger(eo.windowUs, 'options.emulateXfsFallocateBug.windowUs', 0, 10_000_000);
    }
  }
  const trackRequests = o.trackRequests === undefined ? true : validateBoolean(o.trackRequests, 'options.trackRequests');
  const tableCapacity = o.tableCapacity === undefined ? 256 : validateInteger(o.tableCapacity, 'options.tableCapacity', 2, 256);
  let faults: string | null = null;
  const fs = o.faults ?? process.env.RINGFENCE_FAULTS;
  if (fs !== undefined && fs !== '') {
    faults = validateString(fs, 'options.faults');
    parseFaultSpec(faults);
  }
  const watchdogMs = o.watchdogMs === undefined ? 30000 : validateInteger(o.watchdogMs, 'options.watchdogMs', 0, 2 ** 31 - 1);
  const spinUs = o.spinUs === undefined ? 50 : validateInteger(o.spinUs, 'options.spinUs', 0, 1_000_000);
  const pollUs = o.pollUs === undefined ? 0 : validateInteger(o.pollUs, 'options.pollUs', 0, 1_000_000);
  const mainWake = o.mainWake === undefined ? MAIN_WAKE_DEFAULT : validateOneOf(o.mainWake, 'options.mainWake', ['eventfd', 'atomics'] as const);
  if (mode === 'workers' && pollUs > 0) throw invalidArg('options.pollUs', "applies to mode 'inline' only (offload workers have spinUs)", pollUs);
  if (mode === 'inline' && faults !== null) throw invalidArg('options.faults', "injects faults into offload workers: start with mode: 'workers'", faults);
  return { mode, modeReason, workers, backend, queueDepth, bufferPoolBytes, xfsWorkaround, emulate, emulateWindowUs, trackRequests, tableCapacity, faults, watchdogMs, spinUs, pollUs, mainWake };
}
