// Inline mode: the engine's own thread owns the kernel I/O context (docs/ARCHITECTURE.md,
// "Inline mode"). The engine hands a request over with accept() (a copy of its 8 words into a
// local slot, no shared ring), the executor registers it in the tracked-request table and
// queues it, and one kick() per turn of the event loop submits the batch with a single
// pump(n, 0): one io_uring_enter that submits and flushes completions. The native context
// never waits: completions that arrive later make the thread's libuv loop call onReady()
// (native/inline.h), which kicks again and reaps them. Completions go straight back to the
// engine (settle), which resolves the caller's promise: no other thread is involved.
import { WSTAT_WORDS } from '../shm.js';
import type { BackendChoice, BackendName, NativeAddon, NativeContextInfo } from '../types.js';
import { Executor } from './executor.js';

export interface InlineInit {
  addon: NativeAddon;
  backend: BackendChoice;
  depth: number;
  pool: SharedArrayBuffer;
  pageGen: SharedArrayBuffer;
  workerStats: SharedArrayBuffer;
  emulateWindowUs: number;
  /** Busy-poll the completion queue this long after a kick while requests are in the kernel (0: never). */
  pollUs: number;
  /** A completion for request `id` (its E_TAG word): bytes or -errno. */
  settle: (id: number, res: number) => void;
  /** Called after a batch of completions was settled (room in the slots again). */
  drained: () => void;
}

export class InlineContext extends Executor {
  readonly backend: BackendName;
  readonly refused: Record<string, string>;
  readonly info: NativeContextInfo;
  private readonly settle: (id: number, res: number) => void;
  private readonly drained: () => void;
  /** Completions delivered by the executor and not yet settled: (id, res) pairs. */
  private doneQ = new Int32Array(256);
  private doneLen = 0;
  /** A table release rang this context: re-evaluate the parked requests. */
  private tableWake = false;
  private pumping = false;
  private again = false;
  private closed = false;
  private readonly pollUs: number;

  constructor(init: InlineInit) {
    super({
      index: 0, depth: init.depth, pool: init.pool, pageGen: init.pageGen,
      wstats: new Float64Array(init.workerStats, 0, WSTAT_WORDS), faults: null,
    });
    this.settle = init.settle;
    this.pollUs = init.pollUs;
    this.drained = init.drained;
    const order: BackendName[] = init.backend === 'auto' ? ['io_uring', 'libaio', 'sync'] : [init.backend];
    const refused: Record<string, string> = {};
    let started: BackendName | null = null;
    for (const backend of order) {
      try {
        if (!init.addon.Context) throw new Error('native addon has no Context');
        this.ctx = new init.addon.Context({
          backend, depth: init.depth, pool: new Uint8Array(init.pool), batch: this.batch, completions: this.compl,
          emulateWindowUs: init.emulateWindowUs, onReady: this.onReady,
        });
        started = backend;
        break;
      } catch (err) {
        refused[backend] = (err as Error).message;
      }
    }
    if (started === null) {
      const msg = Object.entries(refused).map(([b, r]) => `${b}: ${r}`).join('; ');
      throw new Error(`inline context: no I/O backend could start (${msg})`);
    }
    this.backend = started;
    this.refused = refused;
    this.info = this.ctx.info();
  }

  /** The native side saw completions (or a helper finished): reap them. */
  private readonly onReady = (): void => {
    if (!this.closed) this.kick();
  };

  /**
   * Submits what is ready and settles what completed, until neither makes progress. Never
   * re-entered: a settle() that leads to new requests (a pool waiter, a short write's rest)
   * only queues them, and the loop takes them on its next round.
   */
  kick(): void {
    if (this.closed) return;
    if (this.pumping) { this.again = true; return; }
    this.pumping = true;
    try {
      let progress = this.rounds();
      // Opt-in busy poll (pollUs): with requests in the kernel, reap for a while before going
      // back to the event loop; a completion found so saves the eventfd wake-up.
      if (this.pollUs > 0 && this.nativeInflight > 0) {
        const until = performance.now() + this.pollUs / 1000;
        while (this.nativeInflight > 0 && performance.now() < until) {
          if (this.submitAndReap(0)) { progress = true; this.rounds(); break; }
        }
      }
      void progress;
    } finally {
      this.pumping = false;
    }
  }

  /** Submit and reap until neither makes progress; true if anything happened. */
  private rounds(): boolean {
    let any = false;
    for (let rounds = 0; ; rounds++) {
      this.again = false;
      if (this.tableWake) { this.tableWake = false; this.retryWaiting(); }
      const progress = this.submitAndReap(0);
      any ||= progress;
      if (!this.again && !this.tableWake && !(progress && this.readyLen > 0 && this.nativeInflight < this.depth)) break;
      if (rounds > 10000) break; // cannot happen: each round either submits or settles something
    }
    return any;
  }

  protected override deliver(tag: number, res: number): void {
    if (this.doneLen * 2 === this.doneQ.length) {
      const q = new Int32Array(this.doneQ.length * 2);
      q.set(this.doneQ);
      this.doneQ = q;
    }
    this.doneQ[this.doneLen * 2] = tag;
    this.doneQ[this.doneLen * 2 + 1] = res;
    this.doneLen++;
  }

  protected override undelivered(): number { return this.doneLen; }

  /** Settles every queued completion (more may be queued meanwhile: they are taken too). */
  protected override afterReap(): boolean {
    if (this.doneLen === 0) return false;
    for (let i = 0; i < this.doneLen; i++) this.settle(this.doneQ[i * 2], this.doneQ[i * 2 + 1]);
    this.doneLen = 0;
    // Each completion released a table entry: a request waiting for table room (FULL) gets no
    // wake bit for that, so every waiter is re-evaluated after a batch of completions.
    if (this.nWaiting > 0) this.tableWake = true;
    this.drained();
    return true;
  }

  protected override wake(mask: number): void {
    // The only participant of an inline engine's tables is this context (index 0).
    if (mask !== 0) this.tableWake = true;
  }

  get inflightNative(): number { return this.nativeInflight; }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ctx.close();
  }
}
