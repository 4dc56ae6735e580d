// The engine: the public facade (start, open, alloc/free, info, stats, close) and the one
// submission path every File request takes (submit), over three parts it owns:
//   - the requests in flight (src/core/requests.ts), settled by whichever mode completes them;
//   - the buffer pool and who may use which block (src/pool.ts, src/buffers.ts);
//   - one lane to the kernel (src/core/lane.ts): inline (this thread owns the context,
//     src/core/inline.ts) or offload workers (src/core/workers.ts).
// See docs/ARCHITECTURE.md.
import { release as osRelease } from 'node:os';
import { loadAddon } from './addon.js';
import { BufferPool, PAGE } from './pool.js';
import { PoolBuffers, type PoolAllocation, type PoolWaiter } from './buffers.js';
import { E_AUX, E_BUF, E_FILE, E_LEN, E_OFF_HI, E_OFF_LO, E_OP, MAX_FILES } from './protocol.js';
import { MAX_WORKERS, WSTAT_WORDS, WS_BATCHES, WS_BYTES, WS_ERRORS, WS_INFLIGHT, WS_OPS, WS_WAKEUPS } from './shm.js';
import { RingfenceError, closedError } from './errors.js';
import { validateInteger, validateKnownKeys, validateObject } from './validators.js';
import type { ControlMessage, NativeAddon, ProbeResult } from './types.js';
import { File, openFile, type IdentityRecord, type OpenOptions } from './file.js';
import { resolveOptions, type CloseOptions, type EngineMode, type EngineOptions, type ResolvedOptions } from './options.js';
import { Requests, type BatchState } from './core/requests.js';
import type { ContextReport, Lane, LaneHost } from './core/lane.js';
import { InlineLane } from './core/inline.js';
import { WorkerLanes } from './core/workers.js';

export { resolveOptions, type CloseOptions, type EngineMode, type EngineOptions, type ResolvedOptions };
export { settleBatchOp, opName, type BatchState } from './core/requests.js';

export interface EngineInfo {
  kernel: string;
  ioUringDisabled: number;
  ioUring: ProbeResult['ioUring'];
  libaio: ProbeResult['libaio'];
  /** 'inline': the engine's own thread owns the one context; 'workers': offload workers do. */
  mode: EngineMode;
  /** Why that mode (what in the options chose it). */
  modeReason: string;
  /** The kernel I/O contexts: the inline one (index 0), or one per offload worker. */
  workers: ContextReport[];
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

export class Engine implements LaneHost {
  readonly options: ResolvedOptions;
  /** @internal */ readonly addon: NativeAddon;
  /** @internal */ readonly pool: BufferPool;
  /** @internal */ readonly buffers: PoolBuffers;
  /** @internal The requests in flight. */ readonly reqs: Requests;
  /** @internal Statistics rows, one per context (src/shm.ts WSTAT_*), written by the contexts. */
  readonly workerStats: Float64Array;
  /** @internal */ readonly identities = new Map<string, IdentityRecord>();
  private lane!: Lane;
  private readonly probeResult: ProbeResult;
  private closed = false;
  private closing: Promise<void> | null = null;
  /** @internal The contexts are stopping: their ends are not losses; short writes are not continued. */
  destroying = false;
  private outstandingCount = 0;
  private flushScheduled = false;
  private rawFileId = 0;
  private rawFile = false;
  private readonly keepAlive: NodeJS.Timeout;
  private readonly files = new Set<File>();
  private freeFileIds: number[] = [];
  private nextFileId = 0;
  /** engine.open() calls in progress: close() waits for them. */
  private readonly opening = new Set<Promise<unknown>>();
  /**
   * @internal Set when close() gave up on requests still in the kernel: file descriptors and
   * doorbells are then never closed (a stuck thread could use the reused numbers).
   */
  fdsPinned = false;
  /** close()'s deadline (performance.now() time; Infinity: none) and the ms it was given as. */
  private closeDeadline = Infinity;
  private closeDeadlineMs = Infinity;
  /** @internal Resolves when close() gives up on what is left: control messages stop waiting for acks. */
  readonly abandoned: Promise<void>;
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
    this.workerStats = new Float64Array(new SharedArrayBuffer(MAX_WORKERS * WSTAT_WORDS * 8));
    const self = this;
    this.reqs = new Requests({
      resend: (id) => { if (!this.lane.send(id)) return false; this.scheduleFlush(); return true; },
      unhold: (rec) => this.buffers.unhold(rec),
      releasePool: (off) => this.buffers.release(off),
      poolBytes: this.pool.bytes,
      holdOpen: (d) => this.holdOpen(d),
      get destroying() { return self.destroying; },
    });
    this.keepAlive = setInterval(() => this.lane?.watch(), Math.max(10, Math.min(1000, options.watchdogMs / 4 || 1000)));
    this.keepAlive.unref();
  }

  /** Starts the kernel I/O context (inline) or the workers, and waits until they are up. */
  static async start(options?: EngineOptions): Promise<Engine> {
    const opts = resolveOptions(options);
    const engine = new Engine(opts);
    try {
      if (opts.mode === 'inline') engine.lane = new InlineLane(engine);
      else {
        const lanes = new WorkerLanes(engine);
        engine.lane = lanes;
        await lanes.start();
      }
    } catch (err) {
      await engine.destroy();
      throw startError(err, opts);
    }
    return engine;
  }

  // LaneHost: what the lanes read from the engine.
  /** @internal */ get outstanding(): number { return this.outstandingCount; }
  /** @internal */ pinFds(): void { this.fdsPinned = true; }

  /**
   * @internal Replies sent at completion time (native/reply.h, for src/serve/transmission.ts):
   * a reply record's handle for socket `fd` (File.writeReplying), or -1 when this engine has none to give
   * (worker mode, closing, every record in use, out of file descriptors).
   */
  replyOpen(fd: number): number {
    if (this.destroying || this.lane === undefined) return -1;
    try { return this.lane.replyOpen?.(fd) ?? -1; } catch { return -1; }
  }
  /**
   * @internal Closes a record of replyOpen() (its handle). Forwarded while closing too: after a
   * close() that gave up (fdsPinned), the context is never torn down, and only this closes the
   * context's dup of a client's socket.
   */
  replyClose(handle: number): void { this.lane?.replyClose?.(handle); }
  /** @internal The reply records (src/protocol.ts REPLY_*), null without them. */
  replyRecords(): Int32Array | null { return this.lane?.replyRecords?.() ?? null; }

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

  /** @internal Tells every context about a file and waits until all have applied it. */
  broadcast(make: (seq: number) => ControlMessage): Promise<void> {
    return this.lane.broadcast(make);
  }

  /** @internal Remembers how to announce an open file to a replacement worker. */
  rememberFile(id: number, make: ((seq: number) => ControlMessage) | null): void {
    this.lane.remember(id, make);
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

  /**
   * @internal Queues one request. `done` runs on completion before the promise settles
   * (bounce copy-back and pool release). offset is split into two int32 words. `view` and
   * `rec`: a zero-copy request's buffer and its pool allocation (rec null: the caller's own
   * buffer, OpFlag.EXT), kept until the request settles. `bounce`: the pool block of a plain
   * bounced read or write (a read's `view` is the caller's buffer to copy into), returned when
   * it settles.
   */
  submit(file: File, op: number, offLo: number, offHi: number, len: number, buf: number, aux: number,
    done: ((res: number) => number | void) | null, resolve: ((n: number) => void) | null, reject: ((e: unknown) => void) | null,
    batch: BatchState | null, batchIndex: number, view: Uint8Array | null = null, rec: PoolAllocation | null = null, bounce = -1,
    reply = 0): number {
    const id = this.reqs.create(file, op, this.rawFile ? this.rawFileId : file.id, offLo, offHi, len, buf, aux,
      done, resolve, reject, batch, batchIndex, view, rec, bounce, reply);
    if (rec !== null) this.buffers.hold(rec);
    if (!this.lane.send(id)) { this.reqs.settle(id, -1, this.lane.unavailable(id)); return -1; }
    this.scheduleFlush();
    return id;
  }

  /** One flush per tick: requests made in one turn of the event loop share a kernel entry. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.flush);
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    this.lane.flush();
  };

  /** Keeps the process alive while requests are outstanding (and lets it exit when idle). */
  private holdOpen(delta: number): void {
    const before = this.outstandingCount;
    this.outstandingCount += delta;
    if (before === 0 && this.outstandingCount > 0) this.keepAlive.ref();
    else if (before > 0 && this.outstandingCount === 0) this.keepAlive.unref();
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
      if (id >= 0) this.reqs.retry[id] = 0; // raw results are reported as the kernel gave them
      this.rawFile = false;
    });
  }

  /** @internal Resolves true when no request is outstanding, false if close()'s deadline passes first. */
  async idle(): Promise<boolean> {
    while (this.outstandingCount > 0) {
      if (performance.now() >= this.closeDeadline) return false;
      await new Promise((r) => setTimeout(r, 1));
    }
    return true;
  }

  // ---- Introspection -----------------------------------------------------------------

  /** The mode and its contexts (backend, and why others were refused), kernel release, io_uring features. */
  info(): EngineInfo {
    const p = this.probeResult;
    return {
      kernel: p.kernel, ioUringDisabled: p.ioUringDisabled, ioUring: p.ioUring, libaio: p.libaio,
      mode: this.options.mode, modeReason: this.options.modeReason, workers: this.lane.contexts(), options: { ...this.options },
    };
  }

  /** Counters: ops, bytes, in flight, ring-full events, per context and per file. */
  stats(): EngineStats {
    const workers = this.lane.statRows().map((w) => {
      const s = this.workerStats.subarray(w.index * WSTAT_WORDS, (w.index + 1) * WSTAT_WORDS);
      return { index: w.index, ops: s[WS_OPS], bytes: s[WS_BYTES], batches: s[WS_BATCHES], wakeups: s[WS_WAKEUPS], inFlight: s[WS_INFLIGHT], errors: s[WS_ERRORS], ringFullEvents: w.ringFullEvents };
    });
    return {
      ops: workers.reduce((a, w) => a + w.ops, 0),
      bytes: workers.reduce((a, w) => a + w.bytes, 0),
      inFlight: this.outstandingCount,
      queued: this.lane.queued,
      workerLosses: this.lane.losses,
      ringFullEvents: workers.reduce((a, w) => a + w.ringFullEvents, 0),
      pool: { size: this.pool.size, used: this.pool.used, peak: this.pool.peak },
      workers,
      files: [...this.files].map((f) => f.stats()),
    };
  }

  /** @internal This thread owns the context (OpFlag.EXT buffers are possible). */
  get inline(): boolean { return this.options.mode === 'inline'; }

  /** @internal Kernel I/O contexts (1 in inline mode). */
  get workerCount(): number { return this.lane.contexts().length; }
  /** @internal */ get kernelRelease(): string { return this.probeResult.kernel || osRelease(); }

  /** @internal */ assertOpen(op: string): void {
    if (this.closed) throw closedError('engine', op);
  }
  get isClosed(): boolean { return this.closed; }

  /**
   * Waits for every in-flight request, closes every file, and stops the kernel I/O contexts
   * (each drains and tears down its ring). Later calls reject with ERR_RINGFENCE_CLOSED.
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
      // (With none in progress there is nothing to wait for: with no time left, checking only
      // the promise below would give up on an idle engine before that promise could report.)
      let opened = this.opening.size === 0;
      if (!opened) void Promise.allSettled([...this.opening]).then(() => { opened = true; });
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
      this.abandonNow();
      this.reqs.abandonAll(this.closeDeadlineMs);
      await this.destroy(0);
      for (const f of [...this.files]) await f.close().catch(() => {});
    })();
    return this.closing;
  }

  /** Stops the contexts. `graceMs`: how long workers may take to drain before they are terminated. */
  private async destroy(graceMs = 5000): Promise<void> {
    this.closed = true;
    this.destroying = true;
    // (No lane when start() failed before making one.)
    if (this.lane !== undefined) await this.lane.stop(graceMs);
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

