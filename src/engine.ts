// The main-thread side of the engine: options, workers, the submission path, the
// completion loop and the buffer pool. See docs/ARCHITECTURE.md.
import { fileURLToPath } from 'node:url';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { availableParallelism, release as osRelease } from 'node:os';
import { Piscina } from 'piscina';
import { loadAddon } from './addon.js';
import { BufferPool, PAGE } from './pool.js';
import { PoolBuffers, type PoolAllocation, type PoolWaiter } from './buffers.js';
import {
  ENTRY_WORDS, E_AUX, E_BUF, E_FILE, E_LEN, E_OFF_HI, E_OFF_LO, E_OP, E_TAG, MAX_FILES, Op, OpFlag,
} from './protocol.js';
import {
  CQ_ENTRY, CTRL_STRIDE, CTRL_WORDS, WAKE_TABLE, W_BUSY, W_CTRL_SEQ, W_GAVEUP, W_HEARTBEAT, W_STALL, MAIN_AWAKE, MAIN_SLEEPING, MAIN_STATE, MAX_WORKERS, RING_HDR_WORDS, RING_HEAD,
  RING_TAIL, SQ_ENTRY, WAKE_CONTROL, WSTAT_WORDS, WS_BATCHES, WS_BYTES, WS_ERRORS, WS_INFLIGHT, WS_OPS,
  WS_WAKEUPS, createRing, wakeWorker, SQ_SEQ, SQ_GEN, SQ_SUM, CQ_ID, CQ_RES, CQ_SEQ, CQ_SUM, entrySum,
} from './shm.js';
import { RingfenceError, closedError, errnoError } from './errors.js';
import {
  validateBoolean, validateInteger, validateKnownKeys, validateObject, validateOneOf, validateString,
  invalidArg,
} from './validators.js';
import { parseFaultSpec } from './faults.js';
import type {
  BackendChoice, BackendName, ControlMessage, NativeAddon, NativeContextInfo, ProbeResult, WorkaroundPolicy, WorkerInit,
  WorkerReady,
} from './types.js';
import { File, openFile, type IdentityRecord, type OpenOptions } from './file.js';
import { releaseOwnedBy } from './table.js';
import { InlineContext } from './core/inline.js';

export interface CloseOptions {
  /**
   * Milliseconds to wait for requests in flight. After that they reject with
   * ERR_RINGFENCE_CLOSE_TIMEOUT and the workers are terminated. Default: wait as long as it takes.
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
   * Inline mode: after submitting, busy-poll the completion queue for up to this many
   * microseconds before returning to the event loop (latency vs CPU; it competes with the
   * kernel's own completion work on few cores). Default 0: never.
   */
  pollUs?: number;
}

export interface ResolvedOptions {
  mode: EngineMode;
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
}

const OPTION_KEYS = [
  'mode', 'workers', 'backend', 'queueDepth', 'bufferPoolBytes', 'xfsWorkaround', 'emulateXfsFallocateBug', 'trackRequests',
  'tableCapacity', 'faults', 'watchdogMs', 'spinUs', 'pollUs',
] as const;

export function resolveOptions(options: unknown): ResolvedOptions {
  const o = options === undefined ? {} : validateObject(options, 'options');
  validateKnownKeys(o, 'options', OPTION_KEYS);
  // One core is left for the main thread, which submits and completes every request.
  const givenMode = o.mode === undefined ? undefined : validateOneOf(o.mode, 'options.mode', ['inline', 'workers'] as const);
  const fs0 = o.faults ?? process.env.RINGFENCE_FAULTS;
  // Asking for workers (or for worker fault injection) without a mode means worker mode.
  const mode: EngineMode = givenMode ?? (o.workers !== undefined || (fs0 !== undefined && fs0 !== '') ? 'workers' : 'inline');
  if (mode === 'inline' && o.workers !== undefined) throw invalidArg('options.workers', "applies to mode 'workers' only; drop it, or start with mode: 'workers'", o.workers);
  const workers = mode === 'inline' ? 0 : o.workers === undefined ? Math.max(1, Math.min(4, availableParallelism() - 1)) : validateInteger(o.workers, 'options.workers', 1, MAX_WORKERS);
  const backend = o.backend === undefined ? 'auto' : validateOneOf(o.backend, 'options.backend', ['auto', 'io_uring', 'libaio', 'sync'] as const);
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
  if (mode === 'workers' && pollUs > 0) throw invalidArg('options.pollUs', "applies to mode 'inline' only (offload workers have spinUs)", pollUs);
  if (mode === 'inline' && faults !== null) throw invalidArg('options.faults', "injects faults into offload workers: start with mode: 'workers'", faults);
  return { mode, workers, backend, queueDepth, bufferPoolBytes, xfsWorkaround, emulate, emulateWindowUs, trackRequests, tableCapacity, faults, watchdogMs, spinUs, pollUs };
}

interface WorkerSlot {
  index: number;
  sq: Int32Array;
  sqCap: number;
  sqTail: number;
  sqHeadCache: number;
  cq: Int32Array;
  cqCap: number;
  /** Our own copy of the completion ring's head (the shared word is only published to). */
  cqHead: number;
  /** Set when we found this generation's ring memory corrupt: what was wrong (see ringCorrupt). */
  corrupt: string | null;
  doorbell: number;
  port: MessagePort;
  task: Promise<unknown>;
  ready: WorkerReady | null;
  /** Request ids waiting for room in this worker's submission ring. */
  overflow: number[];
  overflowHead: number;
  dirty: boolean;
  ringFullEvents: number;
  /** Between the death of its worker and the replacement's start: requests wait in overflow. */
  dead: boolean;
  /** Given up on after repeated failures right after start: requests go elsewhere. */
  retired: boolean;
  launchedAt: number;
  quickDeaths: number;
  generation: number;
  lastBeat: number;
  lastBeatAt: number;
  /** W_STALL as last seen: an odd value that does not change means one long system call. */
  lastStall: number;
  /** Generation the watchdog terminated (it terminates each generation once). */
  killed: number;
  stallWarned: boolean;
  /** Control messages awaiting an ack: the port is referenced while this is non-zero. */
  ctrlRefs: number;
}

/** Per-request bookkeeping on the main thread, in parallel arrays indexed by request id. */
const K_FREE = 0, K_SINGLE = 1, K_BATCH = 2;

export interface BatchState {
  results: (number | RingfenceError)[];
  remaining: number;
  firstError: RingfenceError | null;
  resolve: (v: number[]) => void;
  reject: (e: unknown) => void;
}

export interface EngineInfo {
  kernel: string;
  ioUringDisabled: number;
  ioUring: ProbeResult['ioUring'];
  libaio: ProbeResult['libaio'];
  /** 'inline': the engine's own thread owns the one context; 'workers': offload workers do. */
  mode: EngineMode;
  /** The kernel I/O contexts: the inline one (index 0), or one per offload worker. */
  workers: { index: number; backend: BackendName; refused: Record<string, string>; info: NativeContextInfo }[];
  options: ResolvedOptions;
}

export interface EngineStats {
  ops: number;
  bytes: number;
  inFlight: number;
  queued: number;
  workerLosses: number;
  ringFullEvents: number;
  pool: { size: number; used: number; peak: number };
  workers: { index: number; ops: number; bytes: number; batches: number; wakeups: number; inFlight: number; errors: number; ringFullEvents: number }[];
  files: ReturnType<File['stats']>[];
}

export class Engine {
  readonly options: ResolvedOptions;
  /** @internal */ readonly addon: NativeAddon;
  /** @internal */ readonly pool: BufferPool;
  /** Worker mode only. */
  private readonly piscina: Piscina | null = null;
  /** Inline mode only: this thread's own kernel I/O context. */
  private lane: InlineContext | null = null;
  /** Inline mode: request ids waiting for a free local slot of the lane (FIFO). */
  private laneOverflow: number[] = [];
  private laneOverflowHead = 0;
  private readonly ctrl: Int32Array;
  private readonly workerStats: Float64Array;
  private readonly workers: WorkerSlot[] = [];
  private readonly probeResult: ProbeResult;
  private closed = false;
  private closing: Promise<void> | null = null;

  // Requests.
  private reqKind = new Uint8Array(1024);
  private reqEntry = new Int32Array(1024 * ENTRY_WORDS);
  private reqResolve: (((n: number) => void) | null)[] = new Array(1024).fill(null);
  private reqReject: (((e: unknown) => void) | null)[] = new Array(1024).fill(null);
  private reqBatch: (BatchState | null)[] = new Array(1024).fill(null);
  private reqBatchIndex = new Int32Array(1024);
  private reqFile: (File | null)[] = new Array(1024).fill(null);
  /** Completion hook: copies bounce buffers back and frees them (null when zero-copy). */
  private reqDone: (((res: number) => number | void) | null)[] = new Array(1024).fill(null);
  /**
   * A zero-copy request's buffer and its pool allocation: the reference keeps the memory's
   * ArrayBuffer alive and the allocation's inflight count keeps the block reserved until the
   * request settles (the GC and free() both wait for that).
   */
  private reqBuf: (Uint8Array | null)[] = new Array(1024).fill(null);
  private reqRec: (PoolAllocation | null)[] = new Array(1024).fill(null);
  /** Bytes a write() already wrote in earlier, short attempts; whether a short write is retried (not for submitRaw). */
  private reqPartial = new Float64Array(1024);
  private reqRetry = new Uint8Array(1024);
  private freeIds: number[] = [];
  private nextId = 0;
  private outstanding = 0;
  private rawFileId = 0;
  private destroying = false;
  private rawFile = false;
  private queued = 0;
  private flushScheduled = false;
  private polling = false;
  private readonly keepAlive: NodeJS.Timeout;
  private rr = 0;
  private seq = 0;
  private acks = new Map<number, () => void>();
  private readonly files = new Set<File>();
  /** @internal */ readonly identities = new Map<string, IdentityRecord>();
  private freeFileIds: number[] = [];
  private nextFileId = 0;
  /** @internal */ readonly buffers: PoolBuffers;
  /** engine.open() calls in progress: close() waits for them. */
  private readonly opening = new Set<Promise<unknown>>();
  private readonly doorbells: number[] = [];
  private readonly piscinaWorkers = new Set<object>();
  private readonly fileOpeners = new Map<number, (seq: number) => ControlMessage>();
  private workerLosses = 0;
  /**
   * @internal Set when close() gave up on requests still in the kernel: file descriptors and
   * doorbells are then never closed (a stuck thread could use the reused numbers).
   */
  fdsPinned = false;
  /** close()'s deadline (performance.now() time; Infinity: none) and the ms it was given as. */
  private closeDeadline = Infinity;
  private closeDeadlineMs = Infinity;
  /** Resolves when close() gives up on what is left: control messages stop waiting for acks. */
  private abandoned: Promise<void>;
  private abandonNow: () => void = () => {};

  private constructor(options: ResolvedOptions) {
    this.options = options;
    this.addon = loadAddon();
    this.probeResult = this.addon.probe();
    this.pool = new BufferPool(options.bufferPoolBytes);
    // O_DIRECT without a copy needs every block 4 KiB-aligned in memory: the blocks are
    // aligned within the pool, so the pool must start on a page. V8 allocates growable
    // SharedArrayBuffers page-aligned, but that is checked, not trusted.
    const mis = this.addon.addressMod(this.pool.bytes, PAGE);
    if (mis !== 0) {
      throw new RingfenceError(`the buffer pool's memory starts ${mis} bytes past a ${PAGE}-byte boundary, so zero-copy O_DIRECT is impossible; this Node.js build allocates SharedArrayBuffers differently than expected: report it with \`node -p process.versions\``, { code: 'ERR_RINGFENCE_INTERNAL', op: 'start' });
    }
    this.buffers = new PoolBuffers(this.pool, this.addon, (d) => this.holdOpen(d));
    this.abandoned = new Promise<void>((r) => { this.abandonNow = r; });
    this.ctrl = new Int32Array(new SharedArrayBuffer(CTRL_WORDS * 4));
    this.workerStats = new Float64Array(new SharedArrayBuffer(MAX_WORKERS * WSTAT_WORDS * 8));
    if (options.mode === 'workers') {
      const workerFile = fileURLToPath(new URL('../workers/worker.js', import.meta.url));
      this.piscina = new Piscina({
        filename: workerFile,
        minThreads: options.workers,
        maxThreads: options.workers,
        // Each worker runs one task for its whole life: it must never be reaped as idle,
        // and must not block its event loop in Atomics.wait between tasks.
        idleTimeout: Infinity,
        atomics: 'disabled',
        concurrentTasksPerWorker: 1,
      });
      // A worker that fails with no task running is reported as an 'error' event: the engine's
      // own loss handling covers it, so the event must not crash the process.
      this.piscina!.on('error', () => {});
      this.piscina!.on('workerCreate', (w: object) => {
        const sym = Object.getOwnPropertySymbols(w).find((x) => x.description === 'Piscina.kWorkerData');
        if (sym !== undefined) this.piscinaWorkers.add((w as Record<symbol, object>)[sym]);
      });
      this.piscina!.on('workerDestroy', (w: object) => {
        const sym = Object.getOwnPropertySymbols(w).find((x) => x.description === 'Piscina.kWorkerData');
        if (sym !== undefined) this.piscinaWorkers.delete((w as Record<symbol, object>)[sym]);
      });
    }
    this.keepAlive = setInterval(() => this.watch(), Math.max(10, Math.min(1000, options.watchdogMs / 4 || 1000)));
    this.keepAlive.unref();
  }

  /** Starts the workers and waits until each has a kernel I/O context. */
  static async start(options?: EngineOptions): Promise<Engine> {
    const opts = resolveOptions(options);
    const engine = new Engine(opts);
    try {
      if (opts.mode === 'inline') engine.startInline(); else await engine.startWorkers();
    } catch (err) {
      await engine.destroy();
      throw startError(err, opts);
    }
    return engine;
  }

  /** Inline mode: this thread's own kernel I/O context, driven by its event loop. */
  private startInline(): void {
    const o = this.options;
    this.lane = new InlineContext({
      addon: this.addon, backend: o.backend, depth: o.queueDepth, pool: this.pool.sab, pageGen: this.pool.pageGenSab,
      workerStats: this.workerStats.buffer as SharedArrayBuffer, emulateWindowUs: o.emulateWindowUs, pollUs: o.pollUs,
      settle: (id, res) => {
        if (id >= 0 && id < this.nextId && this.reqKind[id] !== K_FREE) this.settle(id, res, null);
      },
      drained: () => this.feedLane(),
    });
  }

  private async startWorkers(): Promise<void> {
    const o = this.options;
    for (let i = 0; i < o.workers; i++) this.doorbells.push(this.addon.createDoorbell());
    for (let i = 0; i < o.workers; i++) this.workers.push(this.makeSlot(i));
    await Promise.all(this.workers.map((w) => this.launch(w)));
    this.unrefPiscina();
  }

  private makeSlot(i: number): WorkerSlot {
    const o = this.options;
    const sqCap = nextPow2(Math.max(64, o.queueDepth * 2));
    const cqCap = nextPow2(Math.max(128, (o.queueDepth * 2 + 16) * 2));
    return {
      index: i, sq: new Int32Array(createRing(sqCap, SQ_ENTRY)), sqCap, sqTail: 0, sqHeadCache: 0,
      cq: new Int32Array(createRing(cqCap, CQ_ENTRY)), cqCap, cqHead: 0, corrupt: null, doorbell: this.doorbells[i], port: null as unknown as MessagePort,
      task: Promise.resolve(), ready: null, overflow: [], overflowHead: 0, dirty: false, ringFullEvents: 0,
      dead: false, retired: false, generation: 0, lastBeat: -1, lastBeatAt: 0, launchedAt: 0, quickDeaths: 0,
      lastStall: 0, killed: 0, stallWarned: false, ctrlRefs: 0,
    };
  }

  /** Starts the serve task of one worker slot; resolves once its kernel I/O context is up. */
  private launch(slot: WorkerSlot): Promise<WorkerReady> {
    const o = this.options;
    const { port1, port2 } = new MessageChannel();
    slot.port = port1;
    slot.ctrlRefs = 0;
    const generation = ++slot.generation;
    slot.launchedAt = performance.now();
    const base = slot.index * CTRL_STRIDE;
    for (let k = 0; k < CTRL_STRIDE; k++) Atomics.store(this.ctrl, base + k, 0);
    const init: WorkerInit = {
      index: slot.index, backend: o.backend, depth: o.queueDepth, sq: slot.sq.buffer as SharedArrayBuffer, sqCapacity: slot.sqCap,
      cq: slot.cq.buffer as SharedArrayBuffer, cqCapacity: slot.cqCap, ctrl: this.ctrl.buffer as SharedArrayBuffer, pool: this.pool.sab,
      pageGen: this.pool.pageGenSab, workerStats: this.workerStats.buffer as SharedArrayBuffer, doorbells: this.doorbells, emulateWindowUs: o.emulateWindowUs,
      faults: generation === 1 ? o.faults : null, spinUs: o.spinUs, port: port2,
    };
    let failed: (e: unknown) => void = () => {};
    const ready = new Promise<WorkerReady>((resolve, reject) => {
      failed = reject;
      port1.on('message', (m: WorkerReady | { type: 'ack'; seq: number }) => {
        if (m.type === 'ready') { slot.ready = m; resolve(m); }
        else if (m.type === 'ack') { const a = this.acks.get(m.seq); this.acks.delete(m.seq); a?.(); }
      });
    });
    slot.task = this.piscina!.run(init, { transferList: [port2] as never }).then(
      (r: unknown) => {
        failed(new Error(`worker ${slot.index} stopped`));
        // A worker that found its rings corrupt ends its task with a reason saying what it found.
        const reason = (r as { reason?: unknown } | null)?.reason;
        this.workerGone(slot, generation, null, typeof reason === 'string' && reason.startsWith('ring-corrupt') ? reason : null);
      },
      (err: unknown) => { failed(err); this.workerGone(slot, generation, err); },
    );
    port1.unref();
    return ready;
  }

  /**
   * piscina keeps its own port to a worker referenced while a task runs, and our serve tasks
   * never end, so an engine left open would keep the process alive. The engine holds the
   * process open itself while requests are outstanding (keepAlive), so piscina's reference is
   * dropped. piscina exposes its per-worker record only behind kWorkerData: if that ever
   * changes, the cost is only that an engine left open keeps the process alive until close().
   */
  private unrefPiscina(): void {
    for (const w of this.piscinaWorkers) {
      const port = (w as { port?: { unref?: () => void } }).port;
      port?.unref?.();
    }
  }

  /**
   * A worker's task ended (crash, exit, exception, or the watchdog terminated it) while the
   * engine is open. Everything it held fails with ERR_RINGFENCE_WORKER_LOST, its table entries
   * are released so nobody waits for them forever, and a replacement takes over its slot.
   */
  private workerGone(slot: WorkerSlot, generation: number, err: unknown, ringCorrupt: string | null = null): void {
    // Each generation of a slot dies at most once; a replacement that dies before it was
    // ready is handled like any other death (slot.dead is still true then). While close()
    // waits for outstanding requests, a death is handled as usual: only the final teardown,
    // where every task ends on purpose, is not a loss.
    if (this.destroying || generation !== slot.generation) return;
    slot.dead = true;
    const quick = performance.now() - slot.launchedAt < 1000;
    slot.quickDeaths = quick ? slot.quickDeaths + 1 : 0;
    // Ring memory found corrupt (by the worker, which then ended its task with the reason, or by
    // us, who then terminated it): the same loss path, with its own code and advice. (Only a
    // ring we found corrupt ourselves is not drained below.)
    const corrupt = slot.corrupt ?? ringCorrupt;
    const why = corrupt ?? (err === null ? 'its task returned' : (err as Error)?.message ?? String(err));
    // The native teardown gave up on requests still in the kernel (a stuck device): they may
    // still read or write their memory and their ranges, so nothing they name is reused, their
    // table entries stay (overlapping requests wait rather than race them), and fds stay open.
    const gaveUp = Atomics.load(this.ctrl, slot.index * CTRL_STRIDE + W_GAVEUP) !== 0;
    if (gaveUp) this.fdsPinned = true;
    // 1. Its tracked-request entries: release them and wake whoever parked behind them.
    for (const ident of this.identities.values()) {
      if (ident.table === null || gaveUp) continue;
      const mask = releaseOwnedBy(ident.table, this.options.tableCapacity, slot.index);
      this.wakeMask(mask);
    }
    // 2. Completions it delivered before it died are real results: settle them first.
    this.drainOne(slot);
    // Entries written into its ring but not yet published never reached it: queue them again.
    // Not from a corrupt ring: its tail word (and the ids in it) cannot be trusted, so
    // everything it held fails below, and the caller retries.
    const published = Atomics.load(slot.sq, RING_TAIL);
    const unpublished: number[] = [];
    if (corrupt === null && ((slot.sqTail - published) | 0) >= 0 && ((slot.sqTail - published) | 0) <= slot.sqCap) {
      for (let t = published; t !== slot.sqTail; t = (t + 1) | 0) unpublished.push(slot.sq[RING_HDR_WORDS + (t & (slot.sqCap - 1)) * SQ_ENTRY + E_TAG]);
    }
    if (unpublished.length > 0) {
      slot.overflow.splice(slot.overflowHead, 0, ...unpublished);
      this.queued += unpublished.length;
    }
    // The rest it held (in its ring or pulled): their fate is unknown.
    const inOverflow = new Set(slot.overflow.slice(slot.overflowHead));
    for (let id = 0; id < this.nextId; id++) {
      if (this.reqKind[id] === K_FREE || this.reqEntry[id * ENTRY_WORDS + E_TAG] !== slot.index || inOverflow.has(id)) continue;
      const op = this.reqEntry[id * ENTRY_WORDS + E_OP] & 0xff;
      const writes = op === Op.WRITE || op === Op.WRITEV || op === Op.FALLOCATE || op === Op.TRUNCATE;
      // Given up in the kernel: no copy-back, no return of memory the kernel may still write.
      if (gaveUp) { this.reqDone[id] = null; this.reqRec[id] = null; }
      if (corrupt !== null) {
        this.settle(id, -1, new RingfenceError(
          `${opName(op)} on ${this.reqFile[id]?.path ?? 'a file'}: the shared ring memory of worker ${slot.index} was found corrupt ` +
          `(${corrupt.replace(/^ring-corrupt: /, '')}), so the engine stopped using it; this request did not run or its state is unknown: ` +
          (writes ? 'write it again (or read the range back to see what landed)' : 'retry it') +
          '. The engine has replaced the worker and keeps working. If nothing in this process writes the engine\'s shared memory, this is a ringfence bug: please report it',
          { code: 'ERR_RINGFENCE_RING_CORRUPT', op: opName(op), path: this.reqFile[id]?.path },
        ));
        continue;
      }
      this.settle(id, -1, new RingfenceError(
        `${opName(op)} on ${this.reqFile[id]?.path ?? 'a file'}: worker ${slot.index} died (${why}) while it held this request; ` +
        (writes ? 'the data state of the range is unknown: write it again, or read it back to see what landed' : 'read it again'),
        { code: 'ERR_RINGFENCE_WORKER_LOST', op: opName(op), path: this.reqFile[id]?.path },
      ));
    }
    this.workerLosses++;
    // 3. A replacement with fresh rings; it re-registers every open file, then takes the overflow.
    // A slot whose workers keep dying within a second of starting is retired instead: its
    // queued requests fail, and new ones go to the other workers.
    const fresh = this.makeSlot(slot.index);
    slot.sq = fresh.sq; slot.cq = fresh.cq; slot.sqTail = 0; slot.sqHeadCache = 0; slot.cqHead = 0; slot.corrupt = null; slot.dirty = false;
    slot.lastBeat = -1;
    if (slot.quickDeaths >= 3) {
      slot.retired = true;
      for (const id of slot.overflow.slice(slot.overflowHead)) {
        this.queued--;
        this.settle(id, -1, new RingfenceError(`worker ${slot.index} failed ${slot.quickDeaths} times in a row right after starting (${why}); its slot is retired and requests go to the other workers: check the kernel log and engine.info()`,
          { code: 'ERR_RINGFENCE_WORKER_LOST', op: opName(this.reqEntry[id * ENTRY_WORDS + E_OP] & 0xff), path: this.reqFile[id]?.path }));
      }
      slot.overflow.length = 0; slot.overflowHead = 0;
      return;
    }
    try { slot.port.close(); } catch { /* already closed */ }
    const gen = slot.generation + 1;
    void this.launch(slot).then(async () => {
      this.unrefPiscina();
      for (const make of this.fileOpeners.values()) await this.sendTo(slot, make);
      if (slot.generation !== gen || slot.retired || this.destroying) return; // it died while re-opening files
      slot.dead = false;
      this.feed();
      if (!this.flushScheduled) this.flush();
    }, () => { /* workerGone runs again for the replacement */ });
  }

  private wakeMask(mask: number): void {
    for (let b = 0; mask !== 0; b++, mask >>>= 1) {
      if ((mask & 1) !== 0 && b < this.workers.length) wakeWorker(this.ctrl, b, WAKE_TABLE, this.addon.ring, this.doorbells[b]);
    }
  }

  /** Every second: a safety-net drain, and the watchdog for hung workers. */
  private watch(): void {
    // Inline: a backstop kick (completions arrive through the event loop; this costs one
    // non-blocking enter per interval while requests are outstanding).
    if (this.lane !== null) { if (this.outstanding > 0) this.lane.kick(); return; }
    if (this.outstanding > 0) this.drain();
    const limit = this.options.watchdogMs;
    if (limit === 0) return;
    const now = performance.now();
    for (const w of this.workers) {
      if (w.dead || w.ready === null) continue;
      const base = w.index * CTRL_STRIDE;
      // Busy: it holds requests, or requests wait in its ring that it has not pulled.
      const beat = Atomics.load(this.ctrl, base + W_HEARTBEAT);
      const stall = Atomics.load(this.ctrl, base + W_STALL);
      const busy = Atomics.load(this.ctrl, base + W_BUSY) + ((Atomics.load(w.sq, RING_TAIL) - Atomics.load(w.sq, RING_HEAD)) | 0);
      if (beat !== w.lastBeat || stall !== w.lastStall || busy === 0) {
        w.lastBeat = beat; w.lastStall = stall; w.lastBeatAt = now; w.stallWarned = false;
        continue;
      }
      if (now - w.lastBeatAt < limit) continue;
      if ((stall & 1) === 1) {
        // Slow, not dead: the native context is inside one system call (the device or the
        // filesystem is stalled, e.g. frozen). Terminating the thread would not interrupt the
        // call, and would report writes that then complete as lost: wait for it.
        if (!w.stallWarned) {
          w.stallWarned = true;
          process.emitWarning(`ringfence: worker ${w.index} has been inside one system call for over ${limit} ms (the device or filesystem is stalled, e.g. frozen); its requests wait and are not lost. close({ deadlineMs }) bounds how long close() waits.`, { code: 'RINGFENCE_WORKER_STALLED' });
        }
        continue;
      }
      // Busy, no loop iteration and no system call in progress for watchdogMs: hung.
      // Terminating the thread makes piscina reject its task, which runs the worker-lost
      // path above. Once per generation: a second terminate() changes nothing.
      if (w.killed === w.generation) continue;
      w.killed = w.generation;
      const thread = this.piscina!.threads.find((t) => t.threadId === w.ready!.threadId);
      void thread?.terminate();
    }
  }

  // ---- Files -------------------------------------------------------------------------

  /** Opens `path` for I/O through the engine. See OpenOptions. */
  open(path: string | Buffer | URL, options?: OpenOptions): Promise<File> {
    try { this.assertOpen('open'); } catch (err) { return Promise.reject(err); }
    // close() waits for opens in progress, and an open that finishes after close() began
    // closes its file again and rejects: no fd and no File outlive the engine.
    const p = openFile(this, path, options).then(async (file) => {
      if (this.closed) {
        await file.close().catch(() => {});
        throw closedError('engine', 'open');
      }
      this.files.add(file);
      return file;
    });
    this.opening.add(p);
    const forget = (): void => { this.opening.delete(p); };
    p.then(forget, forget);
    return p;
  }

  /** @internal */ allocFileId(): number {
    const id = this.freeFileIds.pop() ?? this.nextFileId++;
    if (id >= MAX_FILES) throw new RingfenceError(`too many open files (max ${MAX_FILES}); close some first`, { code: 'ERR_RINGFENCE_TOO_MANY_FILES', op: 'open' });
    return id;
  }

  /** @internal Sends a control message to every worker and waits for all acks. */
  async broadcast(make: (seq: number) => ControlMessage): Promise<void> {
    if (this.destroying) return; // the workers are stopping or gone: nobody to tell
    if (this.lane !== null) {
      // Inline: this thread's own context, told at once.
      const m = make(++this.seq);
      if (m.type === 'open') this.lane.openFile(m); else if (m.type === 'close') this.lane.closeFile(m.fileId);
      return;
    }
    await Promise.all(this.workers.filter((w) => !w.dead).map((w) => this.sendTo(w, make)));
  }

  /** @internal Remembers how to announce an open file to a replacement worker. */
  rememberFile(id: number, make: ((seq: number) => ControlMessage) | null): void {
    if (make === null) this.fileOpeners.delete(id); else this.fileOpeners.set(id, make);
  }

  private async sendTo(w: WorkerSlot, make: (seq: number) => ControlMessage): Promise<void> {
    const seq = ++this.seq;
    const acked = new Promise<void>((resolve) => this.acks.set(seq, resolve));
    // Counted: with two messages outstanding, the first ack must not unref the port while the
    // second still waits (the process would exit under it, silently).
    const port = w.port;
    if (w.ctrlRefs++ === 0) port.ref();
    try {
      Atomics.add(this.ctrl, w.index * CTRL_STRIDE + W_CTRL_SEQ, 1);
      w.port.postMessage(make(seq));
      wakeWorker(this.ctrl, w.index, WAKE_CONTROL, this.addon.ring, w.doorbell);
      // A worker that dies before it acks must not hang open() or close(), nor one that
      // close() gave up on.
      await Promise.race([acked, w.task, this.abandoned]);
    } finally {
      this.acks.delete(seq);
      // A replacement worker has a new port (and a fresh count): only unref the one we ref'd.
      if (port === w.port) { if (--w.ctrlRefs === 0) port.unref(); }
    }
  }

  /** @internal An id from allocFileId() that was never announced, or whose file is gone. */
  releaseFileId(id: number): void {
    this.freeFileIds.push(id);
  }

  /** @internal */ forgetFile(file: File, id: number): void {
    this.files.delete(file);
    this.freeFileIds.push(id);
  }

  // ---- Buffers -----------------------------------------------------------------------

  /**
   * A zero-copy, 4 KiB-aligned buffer from the shared pool. Return it with free(), or let
   * it be garbage-collected: the block returns to the pool only when no view of its memory
   * is left (a subarray or any other view keeps it) and no request that uses it is in flight.
   * Throws ERR_RINGFENCE_POOL_EXHAUSTED when the pool has no block that large free right now.
   */
  alloc(size: number): Uint8Array {
    this.assertOpen('alloc');
    return this.buffers.alloc(size);
  }

  /**
   * Returns a buffer from alloc() to the pool. Every view of it becomes empty at once; a
   * request still in flight on it keeps the memory until it settles.
   */
  free(buf: Uint8Array): void {
    this.buffers.free(buf);
  }

  /** @internal The pool byte offset of `buf`'s first byte, or -1 if it is not pool memory. */
  poolOffset(buf: Uint8Array): number {
    const rec = this.buffers.lookup(buf);
    return rec === undefined ? -1 : rec.off + buf.byteOffset;
  }

  /** @internal Allocates a bounce block now (-1: none free); throws when it can never fit. */
  allocBounce(size: number, op: string): number {
    return this.buffers.allocBounce(size, op);
  }

  /** @internal Queues a request until pool memory frees up. */
  waitForPool(w: PoolWaiter): void {
    this.buffers.wait(w);
  }

  /** @internal Returns a bounce block (and lets waiting requests run). */
  releasePool(off: number): void {
    this.buffers.release(off);
  }

  // ---- Submission --------------------------------------------------------------------

  private newId(): number {
    let id = this.freeIds.pop();
    if (id === undefined) {
      id = this.nextId++;
      if (id >= this.reqKind.length) this.grow();
    }
    return id;
  }

  private grow(): void {
    const n = this.reqKind.length * 2;
    const k = new Uint8Array(n); k.set(this.reqKind); this.reqKind = k;
    const e = new Int32Array(n * ENTRY_WORDS); e.set(this.reqEntry); this.reqEntry = e;
    const bi = new Int32Array(n); bi.set(this.reqBatchIndex); this.reqBatchIndex = bi;
    const pa = new Float64Array(n); pa.set(this.reqPartial); this.reqPartial = pa;
    const rt = new Uint8Array(n); rt.set(this.reqRetry); this.reqRetry = rt;
    for (const arr of [this.reqResolve, this.reqReject, this.reqBatch, this.reqFile, this.reqDone, this.reqBuf, this.reqRec] as unknown[][]) {
      arr.length = n;
      arr.fill(null, n / 2);
    }
  }

  /**
   * @internal Queues one request. `done` runs on completion before the promise settles
   * (bounce copy-back and pool release). offset is split into two int32 words.
   */
  submit(file: File, op: number, offLo: number, offHi: number, len: number, buf: number, aux: number,
    done: ((res: number) => number | void) | null, resolve: ((n: number) => void) | null, reject: ((e: unknown) => void) | null,
    batch: BatchState | null, batchIndex: number, view: Uint8Array | null = null, rec: PoolAllocation | null = null): number {
    // Worker mode: spread requests over all workers (the tracked-request table keeps them
    // safe). The worker is chosen first, so a refusal (every worker retired) leaves nothing
    // allocated. Inline mode: this thread's own context takes everything.
    let w: WorkerSlot | null = null;
    if (this.lane === null) w = this.workers[this.rr];
    if (w !== null) this.rr = this.rr + 1 === this.workers.length ? 0 : this.rr + 1;
    if (w !== null && w.retired) {
      const live = this.liveWorker();
      if (live === null) {
        // Nothing was queued: release what the caller prepared and fail this request alone.
        const err = new RingfenceError('every worker failed repeatedly right after starting, so the engine cannot do I/O: check the kernel log and engine.info(), then start a new engine',
          { code: 'ERR_RINGFENCE_WORKER_LOST', op: opName(op & 0xff), path: file.path });
        try { done?.(-5); } catch { /* the hook only releases memory here */ }
        file.settled();
        if (batch !== null) settleBatchOp(batch, batchIndex, 0, err); else reject?.(err);
        return -1;
      }
      w = live;
    }
    const id = this.newId();
    const e = id * ENTRY_WORDS, E = this.reqEntry;
    E[e + E_OP] = op; E[e + E_FILE] = this.rawFile ? this.rawFileId : file.id; E[e + E_OFF_LO] = offLo; E[e + E_OFF_HI] = offHi;
    E[e + E_LEN] = len; E[e + E_BUF] = buf; E[e + E_AUX] = aux;
    this.reqKind[id] = batch === null ? K_SINGLE : K_BATCH;
    this.reqResolve[id] = resolve; this.reqReject[id] = reject; this.reqDone[id] = done;
    this.reqBatch[id] = batch; this.reqBatchIndex[id] = batchIndex; this.reqFile[id] = file;
    this.reqBuf[id] = view; this.reqRec[id] = rec;
    this.reqPartial[id] = 0; this.reqRetry[id] = 1;
    if (rec !== null) this.buffers.hold(rec);
    this.holdOpen(1);
    if (w === null) this.sendLane(id); else this.send(w, id);
    return id;
  }

  /** Inline mode: hands request `id` to this thread's context (or queues it); one kick per tick. */
  private sendLane(id: number): void {
    this.reqEntry[id * ENTRY_WORDS + E_TAG] = id;
    if (this.laneOverflowHead === this.laneOverflow.length && this.lane!.hasRoom()) this.laneAccept(id);
    else { this.laneOverflow.push(id); this.queued++; }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flush);
    }
  }

  private laneAccept(id: number): void {
    const e = id * ENTRY_WORDS, E = this.reqEntry, op = E[e + E_OP] & 0xff;
    // The allocation generation of the pool memory it names (checked again at admission).
    if (E[e + E_OP] & OpFlag.EXT) { this.lane!.accept(E, e, 0, this.reqBuf[id]!); return; }
    this.lane!.accept(E, e, op >= Op.READ && op <= Op.WRITEV ? this.pool.genAt(E[e + E_BUF] >>> 0) : 0, undefined);
  }

  /** Inline mode: requests that waited for a local slot take the slots completions freed. */
  private feedLane(): void {
    const q = this.laneOverflow, lane = this.lane!;
    while (this.laneOverflowHead < q.length && lane.hasRoom()) {
      this.queued--;
      this.laneAccept(q[this.laneOverflowHead++]);
    }
    if (this.laneOverflowHead === q.length) { q.length = 0; this.laneOverflowHead = 0; }
    else if (this.laneOverflowHead > 4096) { q.splice(0, this.laneOverflowHead); this.laneOverflowHead = 0; }
  }

  /** Puts request `id` (its entry filled in) on w's ring, or in w's overflow queue; one flush per tick. */
  private send(w: WorkerSlot, id: number): void {
    this.reqEntry[id * ENTRY_WORDS + E_TAG] = w.index; // which worker holds it (worker-loss accounting); replaced by the id on the ring
    if (w.dead || w.overflow.length - w.overflowHead > 0 || !this.push(w, id)) {
      w.overflow.push(id);
      w.ringFullEvents++;
      this.queued++;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flush);
    }
  }

  /**
   * A write() the kernel completed short (the filesystem filled up part-way): the rest is
   * written as the same request, so write() resolves with its whole length or rejects with the
   * error the rest failed with (ENOSPC), never with a short count. True when it was re-sent.
   */
  private retryShortWrite(id: number, res: number): boolean {
    const e = id * ENTRY_WORDS, E = this.reqEntry;
    if ((E[e + E_OP] & ~OpFlag.EXT) !== Op.WRITE || this.reqRetry[id] === 0 || res <= 0 || res >= (E[e + E_LEN] >>> 0) || this.destroying) return false;
    let w: WorkerSlot | null = null;
    if (this.lane === null) {
      w = this.workers[this.rr];
      this.rr = this.rr + 1 === this.workers.length ? 0 : this.rr + 1;
      if (w.retired) { w = this.liveWorker(); if (w === null) return false; }
    }
    this.reqPartial[id] += res;
    const lo = (E[e + E_OFF_LO] >>> 0) + res;
    E[e + E_OFF_LO] = lo | 0; E[e + E_OFF_HI] += lo > 0xffffffff ? 1 : 0;
    E[e + E_LEN] -= res; E[e + E_BUF] += res;
    if (w === null) this.sendLane(id); else this.send(w, id);
    return true;
  }

  /** The next worker that is not retired (slow path: only after repeated worker failures). */
  private liveWorker(): WorkerSlot | null {
    for (let k = 0; k < this.workers.length; k++) {
      const w = this.workers[this.rr];
      this.rr = this.rr + 1 === this.workers.length ? 0 : this.rr + 1;
      if (!w.retired) return w;
    }
    return null;
  }

  /** Writes request `id` into w's submission ring if there is room (not yet published). */
  private push(w: WorkerSlot, id: number): boolean {
    if (((w.sqTail - w.sqHeadCache) | 0) >= w.sqCap) {
      // The head is the worker's word in shared memory: untrusted. A head ahead of our tail,
      // or more than a ring behind it, is corrupt ring memory.
      const head = Atomics.load(w.sq, RING_HEAD), used = (w.sqTail - head) | 0;
      if (used < 0 || used > w.sqCap) {
        this.ringCorrupt(w, `submission head ${head} is ${used} behind tail ${w.sqTail} (capacity ${w.sqCap})`);
        return false;
      }
      w.sqHeadCache = head;
      if (used >= w.sqCap) return false;
    }
    const dst = RING_HDR_WORDS + (w.sqTail & (w.sqCap - 1)) * SQ_ENTRY, src = id * ENTRY_WORDS;
    const sq = w.sq, E = this.reqEntry;
    for (let i = 0; i < ENTRY_WORDS; i++) sq[dst + i] = E[src + i];
    sq[dst + E_TAG] = id;
    // The words the worker checks before it trusts the entry (src/shm.ts): the ring index, the
    // allocation generation of the pool memory it names, and a check value over both.
    const op = E[src + E_OP] & 0xff;
    sq[dst + SQ_SEQ] = w.sqTail;
    sq[dst + SQ_GEN] = op >= Op.READ && op <= Op.WRITEV ? this.pool.genAt(E[src + E_BUF] >>> 0) : 0;
    for (let i = SQ_SUM + 1; i < SQ_ENTRY; i++) sq[dst + i] = 0;
    sq[dst + SQ_SUM] = entrySum(sq, dst, SQ_SUM);
    w.sqTail = (w.sqTail + 1) | 0;
    w.dirty = true;
    return true;
  }

  /** Publishes every ring written this tick and wakes sleeping workers: one wake per batch. */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.lane !== null) { this.lane.kick(); return; }
    for (const w of this.workers) {
      if (!w.dirty || w.dead) continue;
      w.dirty = false;
      Atomics.store(w.sq, RING_TAIL, w.sqTail);
      wakeWorker(this.ctrl, w.index, 0, this.addon.ring, w.doorbell);
    }
    if (!this.polling && this.outstanding > 0) void this.poll();
  };

  /** Moves queued requests into rings that have room again. */
  private feed(): void {
    if (this.queued === 0) return;
    for (const w of this.workers) {
      if (w.dead) continue;
      while (w.overflowHead < w.overflow.length && this.push(w, w.overflow[w.overflowHead])) {
        w.overflowHead++;
        this.queued--;
      }
      if (w.overflowHead === w.overflow.length) { w.overflow.length = 0; w.overflowHead = 0; }
      else if (w.overflowHead > 4096) { w.overflow.splice(0, w.overflowHead); w.overflowHead = 0; }
    }
    if (!this.flushScheduled) this.flush();
  }

  /** The completion loop: runs while requests are outstanding, sleeps in Atomics.waitAsync. */
  private async poll(): Promise<void> {
    this.polling = true;
    const ctrl = this.ctrl;
    try {
      while (this.outstanding > 0) {
        if (this.drain() > 0) {
          // Let the continuations of the settled promises run (and submit more) first.
          await null;
          continue;
        }
        Atomics.store(ctrl, MAIN_STATE, MAIN_SLEEPING);
        if (this.pending()) { Atomics.store(ctrl, MAIN_STATE, MAIN_AWAKE); continue; }
        const r = Atomics.waitAsync(ctrl, MAIN_STATE, MAIN_SLEEPING, 200);
        if (r.async) await r.value;
        Atomics.store(ctrl, MAIN_STATE, MAIN_AWAKE);
      }
    } finally {
      this.polling = false;
    }
  }

  private pending(): boolean {
    for (const w of this.workers) if (w.corrupt === null && Atomics.load(w.cq, RING_TAIL) !== w.cqHead) return true;
    return false;
  }

  /** Settles every completion in every completion ring. Returns how many. */
  private drain(): number {
    let total = 0;
    for (const w of this.workers) total += this.drainOne(w);
    if (total > 0) this.feed();
    return total;
  }

  private drainOne(w: WorkerSlot): number {
    // A ring found corrupt is never read again; its worker is on its way out (see ringCorrupt).
    if (w.corrupt !== null) return 0;
    const cq = w.cq, C = CQ_COPY;
    // The head is ours (we keep it; the shared word is only published); the tail is the
    // worker's word in shared memory: untrusted.
    let head = w.cqHead;
    const tail = Atomics.load(cq, RING_TAIL), avail = (tail - head) | 0;
    if (avail < 0 || avail > w.cqCap) {
      this.ringCorrupt(w, `completion tail ${tail} is ${avail} ahead of head ${head} (capacity ${w.cqCap})`);
      return 0;
    }
    let n = 0;
    while (head !== tail) {
      const src = RING_HDR_WORDS + (head & (w.cqCap - 1)) * CQ_ENTRY;
      // Check a copy, so the words used are the words checked.
      for (let i = 0; i < CQ_ENTRY; i++) C[i] = cq[src + i];
      if (C[CQ_SEQ] !== head || C[CQ_SUM] !== entrySum(C, 0, CQ_SUM)) {
        this.ringCorrupt(w, C[CQ_SEQ] !== head
          ? `completion entry at index ${head} carries index ${C[CQ_SEQ]} (stale or overwritten)`
          : `completion entry at index ${head} fails its check value (a word was overwritten)`);
        break;
      }
      const id = C[CQ_ID], res = C[CQ_RES];
      head = (head + 1) | 0;
      // An id the main thread does not have in flight, or one now held by another worker,
      // would be memory corruption or a stale ring: ignore it.
      if (id >= 0 && id < this.nextId && this.reqKind[id] !== K_FREE && this.reqEntry[id * ENTRY_WORDS + E_TAG] === w.index) this.settle(id, res, null);
      n++;
    }
    if (n > 0) {
      w.cqHead = head;
      Atomics.store(cq, RING_HEAD, head);
    }
    return n;
  }

  /**
   * w's ring memory is corrupt: stop using its rings and handle its worker as lost (with
   * ERR_RINGFENCE_RING_CORRUPT, see workerGone). Its thread is terminated, as the watchdog
   * does, so that its kernel I/O is drained before its requests fail and their memory is reused.
   */
  private ringCorrupt(w: WorkerSlot, reason: string): void {
    if (w.corrupt !== null) return;
    w.corrupt = `ring-corrupt: ${reason}`;
    w.dead = true;
    const thread = w.ready === null ? undefined : this.piscina!.threads.find((t) => t.threadId === w.ready!.threadId);
    void thread?.terminate();
  }

  private settle(id: number, res: number, error: RingfenceError | null): void {
    if (error === null && this.retryShortWrite(id, res)) return;
    const partial = this.reqPartial[id];
    if (partial > 0 && res >= 0) res += partial;
    const done = this.reqDone[id];
    let hookError: RingfenceError | null = null;
    if (done !== null) {
      // The hook may translate the result (a padded read reports the caller's bytes), or
      // fail this one request (the caller detached its buffer while the read was in flight).
      try {
        const r = done(res);
        if (typeof r === 'number') res = r;
      } catch (e) {
        hookError = e instanceof RingfenceError ? e : new RingfenceError(String((e as Error)?.message ?? e), { code: 'ERR_RINGFENCE_INTERNAL', cause: e });
      }
    }
    const kind = this.reqKind[id];
    let err: RingfenceError | null = error ?? hookError;
    if (err === null && res < 0) {
      const e = id * ENTRY_WORDS, E = this.reqEntry;
      const op = E[e + E_OP] & 0xff;
      const off = BigInt(E[e + E_OFF_HI]) * 4294967296n + BigInt(E[e + E_OFF_LO] >>> 0);
      const len = op === Op.FALLOCATE ? BigInt(E[e + E_BUF] >>> 0) * 4294967296n + BigInt(E[e + E_LEN] >>> 0) : BigInt(E[e + E_LEN] >>> 0);
      // A flush has no offset; a truncate's offset word is the new size.
      const file = this.reqFile[id];
      err = errnoError(res, opName(op), file?.path, op === Op.FSYNC ? undefined : off, op === Op.FSYNC || op === Op.TRUNCATE ? undefined : len, file?.direct ?? true);
      if (partial > 0) err.message += ` (this is the rest of a write whose first ${partial} bytes, before offset ${off}, were written; the range from there on is not)`;
    }
    if (kind === K_SINGLE) {
      if (err !== null) this.reqReject[id]!(err); else this.reqResolve[id]!(res);
    } else if (kind === K_BATCH) {
      settleBatchOp(this.reqBatch[id]!, this.reqBatchIndex[id], res, err);
    }
    this.reqKind[id] = K_FREE;
    const rec = this.reqRec[id];
    this.reqResolve[id] = null; this.reqReject[id] = null; this.reqDone[id] = null; this.reqBatch[id] = null;
    this.reqBuf[id] = null; this.reqRec[id] = null;
    this.freeIds.push(id);
    if (rec !== null) this.buffers.unhold(rec);
    const file = this.reqFile[id];
    this.reqFile[id] = null;
    file?.settled();
    this.holdOpen(-1);
  }

  /** Keeps the process alive while requests are outstanding (and lets it exit when idle). */
  private holdOpen(delta: number): void {
    const before = this.outstanding;
    this.outstanding += delta;
    if (before === 0 && this.outstanding > 0) this.keepAlive.ref();
    else if (before > 0 && this.outstanding === 0) this.keepAlive.unref();
  }

  /**
   * @internal For the fuzz test only: queues one raw 8-word entry (words 0..7 as given, the
   * request id filled in) through the real ring path and resolves to the raw result
   * (bytes or -errno) without interpreting it. The file is only used for bookkeeping.
   */
  submitRaw(file: File, words: ArrayLike<number>): Promise<number> {
    this.assertOpen('submitRaw');
    return new Promise((resolve) => {
      this.rawFileId = words[E_FILE] | 0; // the caller controls the file id word too
      this.rawFile = true;
      file.acquire();
      const id = this.submit(file, words[E_OP] | 0, words[E_OFF_LO] | 0, words[E_OFF_HI] | 0, words[E_LEN] | 0, words[E_BUF] | 0, words[E_AUX] | 0,
        (res) => { resolve(res); return 0; }, () => {}, () => {}, null, 0);
      if (id >= 0) this.reqRetry[id] = 0; // raw results are reported as the kernel gave them
      this.rawFile = false;
    });
  }

  /** @internal Resolves true when no request is outstanding, false if close()'s deadline passes first. */
  async idle(): Promise<boolean> {
    while (this.outstanding > 0) {
      if (performance.now() >= this.closeDeadline) return false;
      await new Promise((r) => setTimeout(r, 1));
    }
    return true;
  }

  // ---- Introspection -----------------------------------------------------------------

  /** Backends per worker (and why others were refused), kernel release, io_uring features. */
  info(): EngineInfo {
    const p = this.probeResult;
    return {
      kernel: p.kernel, ioUringDisabled: p.ioUringDisabled, ioUring: p.ioUring, libaio: p.libaio,
      mode: this.options.mode,
      workers: this.lane !== null
        ? [{ index: 0, backend: this.lane.backend, refused: this.lane.refused, info: this.lane.info }]
        : this.workers.map((w) => ({ index: w.index, backend: w.ready!.backend, refused: w.ready!.refused, info: w.ready!.info })),
      options: { ...this.options },
    };
  }

  /** Counters: ops, bytes, in flight, ring-full events, per worker and per file. */
  stats(): EngineStats {
    const rows = this.lane !== null ? [{ index: 0, ringFullEvents: 0 }] : this.workers;
    const workers = rows.map((w) => {
      const s = this.workerStats.subarray(w.index * WSTAT_WORDS, (w.index + 1) * WSTAT_WORDS);
      return { index: w.index, ops: s[WS_OPS], bytes: s[WS_BYTES], batches: s[WS_BATCHES], wakeups: s[WS_WAKEUPS], inFlight: s[WS_INFLIGHT], errors: s[WS_ERRORS], ringFullEvents: w.ringFullEvents };
    });
    return {
      ops: workers.reduce((a, w) => a + w.ops, 0),
      bytes: workers.reduce((a, w) => a + w.bytes, 0),
      inFlight: this.outstanding,
      queued: this.queued,
      workerLosses: this.workerLosses,
      ringFullEvents: workers.reduce((a, w) => a + w.ringFullEvents, 0),
      pool: { size: this.pool.size, used: this.pool.used, peak: this.pool.peak },
      workers,
      files: [...this.files].map((f) => f.stats()),
    };
  }

  /** @internal This thread owns the context (OpFlag.EXT buffers are possible). */
  get inline(): boolean { return this.lane !== null; }

  /** @internal Kernel I/O contexts (1 in inline mode). */
  get workerCount(): number { return this.lane !== null ? 1 : this.workers.length; }
  /** @internal */ get kernelRelease(): string { return this.probeResult.kernel || osRelease(); }

  /** @internal */ assertOpen(op: string): void {
    if (this.closed) throw closedError('engine', op);
  }
  get isClosed(): boolean { return this.closed; }

  /**
   * Waits for every in-flight request, closes every file, stops the workers (each drains and
   * tears down its ring) and frees the doorbells. Later calls reject with ERR_RINGFENCE_CLOSED.
   */
  close(options?: CloseOptions): Promise<void> {
    let deadlineMs = Infinity;
    try {
      const o = options === undefined ? {} : validateObject(options, 'options');
      validateKnownKeys(o, 'options', ['deadlineMs']);
      if (o.deadlineMs !== undefined) deadlineMs = validateInteger(o.deadlineMs, 'options.deadlineMs', 0, 2 ** 31 - 1);
    } catch (err) { return Promise.reject(err); }
    // A later call may shorten the deadline of a close() already in progress.
    const deadline = performance.now() + deadlineMs;
    if (deadline < this.closeDeadline) { this.closeDeadlineMs = deadlineMs; this.closeDeadline = deadline; }
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      // Opens in progress finish first (they see the engine closed and close their file); a
      // stuck worker never acknowledges an open, so the deadline bounds this wait too.
      const opens = Promise.allSettled([...this.opening]);
      let opened = false;
      void opens.then(() => { opened = true; });
      while (!opened && performance.now() < this.closeDeadline) await new Promise((r) => setTimeout(r, 1));
      // Requests still waiting for pool memory never started: they could wait forever (the
      // caller may hold the memory until close() resolves), so they are rejected.
      this.buffers.cancel(null, () => new RingfenceError('the engine was closed while this request waited for buffer-pool memory, so it never started; nothing was read or written', { code: 'ERR_RINGFENCE_CLOSED', op: 'close' }));
      const drained = opened && await this.idle();
      if (drained) {
        for (const f of [...this.files]) await f.close().catch(() => {});
        await this.destroy(5000);
        return;
      }
      // Gave up: stop the workers first (a stuck one would never acknowledge a file's
      // close), then drop the files without telling them.
      this.fdsPinned = true;
      this.abandon(this.closeDeadlineMs);
      await this.destroy(0);
      for (const f of [...this.files]) await f.close().catch(() => {});
    })();
    return this.closing;
  }

  /**
   * close()'s deadline passed: every request still outstanding rejects with
   * ERR_RINGFENCE_CLOSE_TIMEOUT. The kernel may still read or write their memory, so their
   * bounce blocks and pool buffers are never handed out again (the engine is closing anyway).
   */
  private abandon(deadlineMs: number): void {
    this.abandonNow();
    for (let id = 0; id < this.nextId; id++) {
      if (this.reqKind[id] === K_FREE) continue;
      const op = opName(this.reqEntry[id * ENTRY_WORDS + E_OP] & 0xff);
      const path = this.reqFile[id]?.path;
      // Not released: no copy-back, no return of memory the kernel may still write.
      this.reqDone[id] = null;
      this.reqRec[id] = null;
      this.settle(id, -1, new RingfenceError(
        `${op}${path ? ` on ${path}` : ''}: close() gave up after its deadline of ${deadlineMs} ms with this request still in the kernel ` +
        '(the device or filesystem is stalled, e.g. frozen or hung); its outcome is unknown: read the range back after the device recovers, and do not reuse its buffer',
        { code: 'ERR_RINGFENCE_CLOSE_TIMEOUT', op, path },
      ));
    }
  }

  /** Stops the workers. `graceMs`: how long they may take to drain before they are terminated. */
  private async destroy(graceMs = 5000): Promise<void> {
    this.closed = true;
    this.destroying = true;
    for (const w of this.workers) {
      try {
        Atomics.add(this.ctrl, w.index * CTRL_STRIDE + W_CTRL_SEQ, 1);
        w.port.postMessage({ type: 'stop' } satisfies ControlMessage);
      } catch { /* port closed */ }
      wakeWorker(this.ctrl, w.index, WAKE_CONTROL, this.addon.ring, w.doorbell);
    }
    // A referenced timer keeps the process alive while the workers drain (piscina's own port
    // reference was dropped), and bounds the wait for a worker that will not stop.
    let timer: NodeJS.Timeout | undefined;
    const bounded = (p: Promise<unknown>, ms: number): Promise<unknown> => Promise.race([
      p, new Promise((r) => { timer = setTimeout(r, ms); }),
    ]).finally(() => clearTimeout(timer));
    if (graceMs > 0) await bounded(Promise.all(this.workers.map((w) => w.task)), graceMs);
    // A thread blocked in a system call ends only when the call returns: terminating it is
    // asked for, but close() does not wait for it beyond a second.
    if (this.piscina !== null) await bounded(this.piscina.destroy(), graceMs > 0 ? 30000 : 1000);
    // Inline: in-flight kernel I/O is drained (close() waited for it, or gave up on it: then
    // the native context keeps the pool and its own memory alive, see native/addon.cc).
    // After an abandoned close the kernel may still use the ring: it stays open (and keeps the
    // pool alive) rather than block this thread in a bounded drain.
    if (!this.fdsPinned) this.lane?.close();
    for (const w of this.workers) w.port?.close();
    // After an abandoned close, a thread stuck in the kernel may still ring a doorbell when its
    // call returns: a closed, reused fd number would take that write. They stay open.
    if (!this.fdsPinned) for (const fd of this.doorbells) this.addon.closeFd(fd);
    clearInterval(this.keepAlive);
  }
}

/** Why Engine.start() failed, as a RingfenceError with a code and what to do. */
function startError(err: unknown, o: ResolvedOptions): unknown {
  if (err instanceof RingfenceError) return err;
  const msg = String((err as Error)?.message ?? err);
  if (/EMFILE|ENFILE|too many open files/i.test(msg)) {
    return new RingfenceError(`Engine.start: the process is out of file descriptors (${/ENFILE/.test(msg) ? 'ENFILE: the system-wide limit' : 'EMFILE'}) while starting ${o.workers} worker(s): raise the limit (ulimit -n, RLIMIT_NOFILE; each worker needs a few descriptors for its ring and doorbell) or close files, then start again`,
      { code: /ENFILE/.test(msg) ? 'ENFILE' : 'EMFILE', op: 'start', cause: err });
  }
  const m = /no I\/O backend could start \((.*)\)$/.exec(msg);
  if (m !== null) {
    const forced = o.backend !== 'auto';
    return new RingfenceError(`Engine.start: ${forced ? `backend '${o.backend}' is not available here` : 'no I/O backend could start'} (${m[1]}); ` +
      (forced ? "start with backend: 'auto' to fall back to libaio or sync, or remove the cause (kernel.io_uring_disabled, seccomp, RLIMIT_MEMLOCK)" : 'check the kernel log and the reasons above'),
      { code: 'ERR_RINGFENCE_BACKEND_UNAVAILABLE', op: 'start', cause: err });
  }
  return err;
}

/**
 * One operation of a submit() batch settled (or never started). When the last one settles the
 * batch resolves with every result, or rejects with the first error, whose `results` holds
 * every outcome.
 */
export function settleBatchOp(b: BatchState, index: number, res: number, err: unknown): void {
  b.results[index] = (err ?? res) as number | RingfenceError;
  if (err !== null && err !== undefined && b.firstError === null) b.firstError = err as RingfenceError;
  if (--b.remaining === 0) {
    if (b.firstError !== null) {
      (b.firstError as RingfenceError & { results?: unknown }).results = b.results;
      b.reject(b.firstError);
    } else b.resolve(b.results as number[]);
  }
}

export function opName(op: number): string {
  switch (op) {
    case Op.READ: return 'read';
    case Op.WRITE: return 'write';
    case Op.READV: return 'readv';
    case Op.WRITEV: return 'writev';
    case Op.FALLOCATE: return 'fallocate';
    case Op.FSYNC: return 'flush';
    case Op.TRUNCATE: return 'truncate';
    default: return 'nop';
  }
}

function nextPow2(n: number): number { return 2 ** Math.ceil(Math.log2(n)); }

/** drainOne()'s copy of the completion entry it checks (one, reused: no allocation per entry). */
const CQ_COPY = new Int32Array(CQ_ENTRY);

