// Worker mode: offload threads, each owning one kernel I/O context (workers/worker.ts), fed
// through shared-memory rings (docs/ARCHITECTURE.md, "Worker mode"). This module is the engine
// thread's side of them: the producer end of every submission ring and the consumer end of
// every completion ring, the control messages, the watchdog, and what happens when a worker
// dies (its requests fail or are re-queued, its table entries are released, a replacement
// takes its slot). Plain node:worker_threads Workers: each is a long-lived ring owner.
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { ENTRY_WORDS, E_BUF, E_OP, E_TAG, Op } from '../protocol.js';
import {
  CQ_ENTRY, CQ_ID, CQ_RES, CQ_SEQ, CQ_SUM, CTRL_STRIDE, CTRL_WORDS, MAIN_AWAKE, MAIN_SLEEPING, MAIN_STATE, RING_HDR_WORDS, RING_HEAD,
  RING_TAIL, SQ_ENTRY, SQ_GEN, SQ_SEQ, SQ_SUM, WAKE_CONTROL, W_BUSY, W_CTRL_SEQ, W_GAVEUP, W_HEARTBEAT, W_STALL, createRing,
  wakeWorker,
} from '../shm.js';
import { RingfenceError } from '../errors.js';
import type { ControlMessage, WorkerInit, WorkerReady } from '../types.js';
import { K_FREE, opName, type Requests } from './requests.js';
import type { ContextReport, Lane, LaneHost } from './lane.js';
import { RingConsumer, RingProducer } from './ring.js';

interface WorkerSlot {
  index: number;
  /** This generation's rings: we produce submissions and consume completions (src/core/ring.ts). */
  sqp: RingProducer;
  cqc: RingConsumer;
  sq: Int32Array;
  sqCap: number;
  cq: Int32Array;
  cqCap: number;
  /** Set when we found this generation's ring memory corrupt: what was wrong (see ringCorrupt). */
  corrupt: string | null;
  doorbell: number;
  port: MessagePort;
  /** This generation's thread; `task` resolves when its worker ended (or its thread exited), `exited` when the thread has. */
  thread: Worker | null;
  task: Promise<unknown>;
  exited: Promise<unknown>;
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

const WORKER_FILE = fileURLToPath(new URL('../../workers/worker.js', import.meta.url));

export class WorkerLanes implements Lane {
  queued = 0;
  losses = 0;
  private readonly host: LaneHost;
  private readonly reqs: Requests;
  /** The control block: 16 words per worker, then the main thread's MAIN_STATE (src/shm.ts). */
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(CTRL_WORDS * 4));
  private readonly workers: WorkerSlot[] = [];
  private readonly doorbells: number[] = [];
  private readonly openers = new Map<number, (seq: number) => ControlMessage>();
  /** Every thread not yet exited, with a promise of its exit (a failed worker's thread stays until stop()). */
  private readonly threads = new Map<Worker, Promise<void>>();
  /** Threads whose native teardown gave up on I/O stuck in the kernel: never terminated (see gone()). */
  private readonly stuck = new Set<Worker>();
  private readonly acks = new Map<number, (error?: { message: string; code?: string }) => void>();
  private seq = 0;
  private rr = 0;
  private scheduled = false;
  private polling = false;
  /** mainWake 'eventfd': the eventfd workers ring, its watcher, and the poll loop's waiting resolver. */
  private mainBell = -1;
  private bellWatch: { ref(): void; unref(): void; close(): void } | null = null;
  private bellWaiter: (() => void) | null = null;

  constructor(host: LaneHost) {
    this.host = host;
    this.reqs = host.reqs;
  }

  /** Starts the workers and waits until each has a kernel I/O context. */
  async start(): Promise<void> {
    const o = this.host.options;
    if (o.mainWake === 'eventfd') {
      this.mainBell = this.host.addon.createDoorbell();
      this.bellWatch = new this.host.addon.Watch(this.mainBell, this.onBell);
    }
    for (let i = 0; i < o.workers; i++) this.doorbells.push(this.host.addon.createDoorbell());
    for (let i = 0; i < o.workers; i++) this.workers.push(this.makeSlot(i));
    await Promise.all(this.workers.map((w) => this.launch(w)));
  }

  private makeSlot(i: number): WorkerSlot {
    const o = this.host.options;
    const sqCap = nextPow2(Math.max(64, o.queueDepth * 2));
    const cqCap = nextPow2(Math.max(128, (o.queueDepth * 2 + 16) * 2));
    const sq = new Int32Array(createRing(sqCap, SQ_ENTRY)), cq = new Int32Array(createRing(cqCap, CQ_ENTRY));
    return {
      index: i, sqp: new RingProducer(sq, sqCap, SQ_ENTRY, SQ_SEQ, SQ_SUM), cqc: new RingConsumer(cq, cqCap, CQ_ENTRY, CQ_SEQ, CQ_SUM),
      sq, sqCap, cq, cqCap, corrupt: null, doorbell: this.doorbells[i], port: null as unknown as MessagePort,
      thread: null, task: Promise.resolve(), exited: Promise.resolve(), ready: null, overflow: [], overflowHead: 0, dirty: false, ringFullEvents: 0,
      dead: false, retired: false, generation: 0, lastBeat: -1, lastBeatAt: 0, launchedAt: 0, quickDeaths: 0,
      lastStall: 0, killed: 0, stallWarned: false, ctrlRefs: 0,
    };
  }

  /**
   * Starts one worker thread for a slot; resolves once its kernel I/O context is up. From then
   * on the thread is unref'd: the engine holds the process open itself while requests are
   * outstanding (its keep-alive timer), so a program that forgets close() still exits.
   */
  private launch(slot: WorkerSlot): Promise<WorkerReady> {
    const o = this.host.options, pool = this.host.pool;
    const { port1, port2 } = new MessageChannel();
    slot.port = port1;
    slot.ctrlRefs = 0;
    const generation = ++slot.generation;
    slot.launchedAt = performance.now();
    const base = slot.index * CTRL_STRIDE;
    for (let k = 0; k < CTRL_STRIDE; k++) Atomics.store(this.ctrl, base + k, 0);
    const init: WorkerInit = {
      index: slot.index, backend: o.backend, depth: o.queueDepth, sq: slot.sq.buffer as SharedArrayBuffer, sqCapacity: slot.sqCap,
      cq: slot.cq.buffer as SharedArrayBuffer, cqCapacity: slot.cqCap, ctrl: this.ctrl.buffer as SharedArrayBuffer, pool: pool.sab,
      pageGen: pool.pageGenSab, workerStats: this.host.workerStats.buffer as SharedArrayBuffer, doorbells: this.doorbells, emulateWindowUs: o.emulateWindowUs,
      faults: generation === 1 ? o.faults : null, spinUs: o.spinUs, port: port2, mainBell: this.mainBell,
    };
    let failed: (e: unknown) => void = () => {};
    const ready = new Promise<WorkerReady>((resolve, reject) => {
      failed = reject;
      port1.on('message', (m: WorkerReady | { type: 'ack'; seq: number; error?: { message: string; code?: string } }) => {
        // Referenced until its context is up (start() waits for it), then unref'd.
        // (This thread, this generation: a late 'ready' must not touch a replacement.)
        if (m.type === 'ready') { thread.unref(); if (slot.generation === generation) slot.ready = m; resolve(m); }
        else if (m.type === 'ack') { const a = this.acks.get(m.seq); this.acks.delete(m.seq); a?.(m.error); }
      });
    });
    // The process's own flags, except --input-type (a Worker on a file refuses it: a program
    // run with `node --input-type=module -e ...` must still be able to start workers).
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
    const thread = new Worker(WORKER_FILE, { workerData: { ringfenceWorker: init }, transferList: [port2], execArgv });
    slot.thread = thread;
    // How the worker ended: it posts 'end' (with a reason such as a corrupt ring, or the error
    // its task failed with), or its thread exits without saying (process.exit, an uncaught
    // exception, terminate()). Whichever comes first is the loss (once per generation).
    let ended: () => void = () => {};
    slot.task = new Promise<void>((resolve) => { ended = resolve; });
    let exited: () => void = () => {};
    slot.exited = new Promise<void>((resolve) => { exited = resolve; });
    this.threads.set(thread, slot.exited as Promise<void>);
    let error: unknown = null;
    let handled = false;
    const gone = (err: unknown, reason: string | null): void => {
      ended();
      failed(err ?? new Error(`worker ${slot.index} stopped`));
      if (handled) return; // once per launch: 'end' and then 'exit' are one loss
      handled = true;
      // Read before workerGone(), whose relaunch clears the slot's control words.
      const gaveUp = Atomics.load(this.ctrl, slot.index * CTRL_STRIDE + W_GAVEUP) !== 0;
      if (gaveUp) this.stuck.add(thread);
      this.workerGone(slot, generation, err, reason !== null && reason.startsWith('ring-corrupt') ? reason : null);
      // A worker that failed stays alive (see workers/worker.ts): once its native context is
      // drained (it did not give up on stuck I/O), its thread can go; one that gave up stays
      // (unref'd) for good: its exit would wait in the kernel for the stuck I/O, and Node
      // joins an exiting thread from this one.
      if (err !== null && !this.host.destroying && !gaveUp) void thread.terminate();
    };
    thread.on('error', (err) => { error = err; });
    thread.on('message', (m: { type?: string; reason?: unknown; error?: unknown }) => {
      if (m?.type !== 'end') return;
      if (typeof m.error === 'string') gone(new Error(m.error.split('\n')[0]), null);
      else gone(null, typeof m.reason === 'string' ? m.reason : null);
    });
    thread.once('exit', (code) => {
      this.threads.delete(thread);
      exited();
      gone(error ?? new Error(code === 0 ? 'its thread exited' : `its thread exited with code ${code}`), null);
    });
    port1.unref();
    return ready;
  }

  /** Puts request `id` (its entry filled in) on a worker's ring, or in its overflow queue; one flush per tick. */
  send(id: number): boolean {
    // Spread requests over all workers: the tracked-request table keeps them safe.
    let w: WorkerSlot | null = this.workers[this.rr];
    this.rr = this.rr + 1 === this.workers.length ? 0 : this.rr + 1;
    if (w.retired) w = this.liveWorker();
    if (w === null) return false;
    this.reqs.entry[id * ENTRY_WORDS + E_TAG] = w.index; // which worker holds it (worker-loss accounting); replaced by the id on the ring
    if (w.dead || w.overflow.length - w.overflowHead > 0 || !this.push(w, id)) {
      w.overflow.push(id);
      w.ringFullEvents++;
      this.queued++;
    }
    return true;
  }

  unavailable(id: number): RingfenceError {
    const op = this.reqs.entry[id * ENTRY_WORDS + E_OP] & 0xff;
    return new RingfenceError('every worker failed repeatedly right after starting, so the engine cannot do I/O: check the kernel log and engine.info(), then start a new engine',
      { code: 'ERR_RINGFENCE_WORKER_LOST', op: opName(op), path: this.reqs.file[id]?.path });
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

  /** Publishes every ring written this tick and wakes sleeping workers: one wake per batch. */
  readonly flush = (): void => {
    this.scheduled = false;
    for (const w of this.workers) {
      if (!w.dirty || w.dead) continue;
      w.dirty = false;
      w.sqp.publish();
      wakeWorker(this.ctrl, w.index, 0, this.host.addon.ring, w.doorbell);
    }
    if (!this.polling && this.host.outstanding > 0) void this.poll();
  };

  /** Sends a control message to every worker and waits for all acks. */
  async broadcast(make: (seq: number) => ControlMessage): Promise<void> {
    if (this.host.destroying) return; // the workers are stopping or gone: nobody to tell
    await Promise.all(this.workers.filter((w) => !w.dead).map((w) => this.sendTo(w, make)));
  }

  remember(fileId: number, make: ((seq: number) => ControlMessage) | null): void {
    if (make === null) this.openers.delete(fileId); else this.openers.set(fileId, make);
  }

  contexts(): ContextReport[] {
    return this.workers.map((w) => ({ index: w.index, backend: w.ready!.backend, refused: w.ready!.refused, info: w.ready!.info }));
  }

  statRows(): { index: number; ringFullEvents: number }[] { return this.workers; }

  /** Stops the workers. `graceMs`: how long they may take to drain before they are terminated. */
  async stop(graceMs: number): Promise<void> {
    for (const w of this.workers) {
      try {
        Atomics.add(this.ctrl, w.index * CTRL_STRIDE + W_CTRL_SEQ, 1);
        w.port.postMessage({ type: 'stop' } satisfies ControlMessage);
      } catch { /* port closed */ }
      wakeWorker(this.ctrl, w.index, WAKE_CONTROL, this.host.addon.ring, w.doorbell);
    }
    // A referenced timer keeps the process alive while the workers drain (the threads are
    // unref'd), and bounds the wait for a worker that will not stop.
    let timer: NodeJS.Timeout | undefined;
    const bounded = (p: Promise<unknown>, ms: number): Promise<unknown> => Promise.race([
      p, new Promise((r) => { timer = setTimeout(r, ms); }),
    ]).finally(() => clearTimeout(timer));
    if (graceMs > 0) await bounded(Promise.all(this.workers.map((w) => w.task)), graceMs);
    // A thread blocked in a system call ends only when the call returns: terminating it is
    // asked for, but close() does not wait for it beyond 30 s (a second after an abandoned close).
    const left = [...this.threads].filter(([t]) => !this.stuck.has(t));
    for (const [t] of left) void t.terminate();
    await bounded(Promise.all(left.map(([, p]) => p)), graceMs > 0 ? 30000 : 1000);
    // A thread still alive (stuck in a system call, or left alone because its I/O is stuck)
    // may yet use a doorbell's number when its call returns: the fds stay open then.
    for (const t of this.stuck) t.unref();
    if (this.threads.size > 0) this.host.pinFds();
    for (const w of this.workers) w.port?.close();
    // After an abandoned close, a thread stuck in the kernel may still ring a doorbell when its
    // call returns: a closed, reused fd number would take that write. They stay open.
    this.bellWatch?.close();
    if (!this.host.fdsPinned) {
      for (const fd of this.doorbells) this.host.addon.closeFd(fd);
      if (this.mainBell >= 0) this.host.addon.closeFd(this.mainBell);
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
    // (A retired slot's thread ending is no loss either: nothing is sent to it any more.)
    if (this.host.destroying || generation !== slot.generation || slot.retired) return;
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
    if (gaveUp) this.host.pinFds();
    // 1. Its tracked-request entries were released by its native context's teardown, which
    // ran before this (in the thread's last call, or as the terminated thread's env went
    // away), after draining its kernel I/O, and which rang whoever parked behind them
    // (native/registry.h). If the teardown gave up, they stay taken.
    // 2. Completions it delivered before it died are real results: settle them first.
    this.drainOne(slot);
    // Entries written into its ring but not yet published never reached it: queue them again.
    // Not from a corrupt ring: its tail word (and the ids in it) cannot be trusted, so
    // everything it held fails below, and the caller retries.
    const published = slot.sqp.published(), tail = slot.sqp.tail;
    const unpublished: number[] = [];
    if (corrupt === null && ((tail - published) | 0) >= 0 && ((tail - published) | 0) <= slot.sqCap) {
      for (let t = published; t !== tail; t = (t + 1) | 0) unpublished.push(slot.sq[RING_HDR_WORDS + (t & (slot.sqCap - 1)) * SQ_ENTRY + E_TAG]);
    }
    if (unpublished.length > 0) {
      slot.overflow.splice(slot.overflowHead, 0, ...unpublished);
      this.queued += unpublished.length;
    }
    // The rest it held (in its ring or pulled): their fate is unknown.
    const inOverflow = new Set(slot.overflow.slice(slot.overflowHead));
    for (let id = 0; id < this.reqs.nextId; id++) {
      if (this.reqs.kind[id] === K_FREE || this.reqs.entry[id * ENTRY_WORDS + E_TAG] !== slot.index || inOverflow.has(id)) continue;
      const op = this.reqs.entry[id * ENTRY_WORDS + E_OP] & 0xff;
      const writes = op === Op.WRITE || op === Op.WRITEV || op === Op.FALLOCATE || op === Op.TRUNCATE;
      // Given up in the kernel: no copy-back, no return of memory the kernel may still write.
      if (gaveUp) { this.reqs.done[id] = null; this.reqs.rec[id] = null; this.reqs.bounce[id] = -1; }
      if (corrupt !== null) {
        this.reqs.settle(id, -1, new RingfenceError(
          `${opName(op)} on ${this.reqs.file[id]?.path ?? 'a file'}: the shared ring memory of worker ${slot.index} was found corrupt ` +
          `(${corrupt.replace(/^ring-corrupt: /, '')}), so the engine stopped using it; this request did not run or its state is unknown: ` +
          (writes ? 'write it again (or read the range back to see what landed)' : 'retry it') +
          '. The engine has replaced the worker and keeps working. If nothing in this process writes the engine\'s shared memory, this is a ringfence bug: please report it',
          { code: 'ERR_RINGFENCE_RING_CORRUPT', op: opName(op), path: this.reqs.file[id]?.path },
        ));
        continue;
      }
      this.reqs.settle(id, -1, new RingfenceError(
        `${opName(op)} on ${this.reqs.file[id]?.path ?? 'a file'}: worker ${slot.index} died (${why}) while it held this request; ` +
        (writes ? 'the data state of the range is unknown: write it again, or read it back to see what landed' : 'read it again'),
        { code: 'ERR_RINGFENCE_WORKER_LOST', op: opName(op), path: this.reqs.file[id]?.path },
      ));
    }
    this.losses++;
    // 3. A replacement with fresh rings; it re-registers every open file, then takes the overflow.
    // A slot whose workers keep dying within a second of starting is retired instead: its
    // queued requests fail, and new ones go to the other workers.
    const fresh = this.makeSlot(slot.index);
    slot.sqp = fresh.sqp; slot.cqc = fresh.cqc; slot.sq = fresh.sq; slot.cq = fresh.cq; slot.corrupt = null; slot.dirty = false;
    slot.lastBeat = -1;
    if (slot.quickDeaths >= 3) {
      this.retire(slot, `worker ${slot.index} failed ${slot.quickDeaths} times in a row right after starting (${why}); its slot is retired and requests go to the other workers: check the kernel log and engine.info()`, 'ERR_RINGFENCE_WORKER_LOST');
      return;
    }
    try { slot.port.close(); } catch { /* already closed */ }
    const gen = slot.generation + 1;
    void this.launch(slot).then(async () => {
      try {
        // (A copy: files may close meanwhile. A close sent while this slot is dead does not
        // reach the replacement, so any file it was told about that has closed since is
        // closed there afterwards; and a generation that dies meanwhile stops here.)
        const told: number[] = [];
        for (const [fileId, make] of [...this.openers]) {
          if (slot.generation !== gen) return;
          if (!this.openers.has(fileId)) continue;
          await this.sendTo(slot, make);
          told.push(fileId);
        }
        for (const fileId of told) {
          if (slot.generation !== gen) return;
          if (!this.openers.has(fileId)) await this.sendTo(slot, (seq) => ({ type: 'close', seq, fileId }));
        }
      } catch (err) {
        // The replacement could not rejoin a file's process-wide table: its participant bit
        // went to another engine meanwhile (31 taken), or another engine opened the file with
        // the other I/O mode. It cannot serve this engine's files: retire the slot (its
        // queued requests fail with the reason, new ones go to the other workers) and stop
        // the thread (its teardown leaves the tables it did join).
        if (slot.generation !== gen || this.host.destroying) return;
        const e = err as Error & { code?: string };
        this.retire(slot, `worker ${slot.index} was lost and its replacement could not re-open the engine's files (${e.message}); its slot is retired and requests go to the other workers`, e.code ?? 'ERR_RINGFENCE_WORKER_LOST');
        void slot.thread?.terminate();
        return;
      }
      if (slot.generation !== gen || slot.retired || this.host.destroying) return; // it died while re-opening files
      slot.dead = false;
      this.feed();
      if (!this.scheduled) this.flush();
    }, () => { /* workerGone runs again for the replacement */ });
  }

  /**
   * Takes a slot out of service for good. Its queued requests never reached a worker (they
   * hold no table entries): they go to the other workers, or fail with `message` if none is left.
   */
  private retire(slot: WorkerSlot, message: string, code: string): void {
    slot.retired = true;
    const queued = slot.overflow.slice(slot.overflowHead);
    slot.overflow.length = 0; slot.overflowHead = 0;
    for (const id of queued) {
      this.queued--;
      if (this.liveWorker() !== null && this.send(id)) continue;
      this.reqs.settle(id, -1, new RingfenceError(message,
        { code, op: opName(this.reqs.entry[id * ENTRY_WORDS + E_OP] & 0xff), path: this.reqs.file[id]?.path }));
    }
    if (!this.scheduled) this.flush();
  }

  /** Every second: a safety-net drain, and the watchdog for hung workers. */
  watch(): void {
    if (this.bellWaiter !== null) this.onBell();
    if (this.host.outstanding > 0) this.drain();
    const limit = this.host.options.watchdogMs;
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
      // Terminating the thread ends it with an 'exit' event, which runs the worker-lost path
      // above. Once per generation: a second terminate() changes nothing.
      if (w.killed === w.generation) continue;
      w.killed = w.generation;
      void w.thread?.terminate();
    }
  }

  private async sendTo(w: WorkerSlot, make: (seq: number) => ControlMessage): Promise<void> {
    const seq = ++this.seq;
    // An ack may carry the worker's refusal (joining the file's table): open() fails with it.
    const acked = new Promise<void>((resolve, reject) => this.acks.set(seq, (error) => {
      if (error === undefined) resolve();
      else reject(new RingfenceError(error.message, { code: error.code ?? 'ERR_RINGFENCE_INTERNAL' }));
    }));
    // Counted: with two messages outstanding, the first ack must not unref the port while the
    // second still waits (the process would exit under it, silently).
    const port = w.port;
    if (w.ctrlRefs++ === 0) port.ref();
    try {
      Atomics.add(this.ctrl, w.index * CTRL_STRIDE + W_CTRL_SEQ, 1);
      w.port.postMessage(make(seq));
      wakeWorker(this.ctrl, w.index, WAKE_CONTROL, this.host.addon.ring, w.doorbell);
      // A worker that dies before it acks must not hang open() or close(), nor one that
      // close() gave up on.
      await Promise.race([acked, w.task, this.host.abandoned]);
    } finally {
      this.acks.delete(seq);
      // A replacement worker has a new port (and a fresh count): only unref the one we ref'd.
      if (port === w.port) { if (--w.ctrlRefs === 0) port.unref(); }
    }
  }

  /** Writes request `id` into w's submission ring if there is room (not yet published). */
  private push(w: WorkerSlot, id: number): boolean {
    // The head is the worker's word in shared memory: untrusted (room() checks it).
    const room = w.sqp.room();
    if (room < 0) {
      this.ringCorrupt(w, `submission ${w.sqp.problem}`);
      return false;
    }
    if (room === 0) return false;
    const dst = w.sqp.next(), src = id * ENTRY_WORDS, sq = w.sq, E = this.reqs.entry;
    for (let i = 0; i < ENTRY_WORDS; i++) sq[dst + i] = E[src + i];
    sq[dst + E_TAG] = id;
    // What the worker checks before it trusts the entry (src/shm.ts): the allocation generation
    // of the pool memory it names here, the ring index and a check value over both in commit().
    const op = E[src + E_OP] & 0xff;
    sq[dst + SQ_GEN] = op >= Op.READ && op <= Op.WRITEV ? this.host.pool.genAt(E[src + E_BUF] >>> 0) : 0;
    w.sqp.commit();
    w.dirty = true;
    return true;
  }

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
    if (!this.scheduled) this.flush();
  }

  /** The completion loop: runs while requests are outstanding, sleeps in Atomics.waitAsync. */
  private async poll(): Promise<void> {
    this.polling = true;
    const ctrl = this.ctrl;
    try {
      while (this.host.outstanding > 0) {
        if (this.drain() > 0) {
          // Let the continuations of the settled promises run (and submit more) first.
          await null;
          continue;
        }
        Atomics.store(ctrl, MAIN_STATE, MAIN_SLEEPING);
        if (this.pending()) { Atomics.store(ctrl, MAIN_STATE, MAIN_AWAKE); continue; }
        if (this.bellWatch !== null) {
          // A worker that sees MAIN_SLEEPING writes the eventfd, which keeps its count: a ring
          // before this wait still wakes it. (watch() resolves it too, once a second, as a backstop.)
          this.bellWatch.ref();
          await new Promise<void>((resolve) => { this.bellWaiter = resolve; });
          this.bellWatch.unref();
        } else {
          const r = Atomics.waitAsync(ctrl, MAIN_STATE, MAIN_SLEEPING, 200);
          if (r.async) await r.value;
        }
        Atomics.store(ctrl, MAIN_STATE, MAIN_AWAKE);
      }
    } finally {
      this.polling = false;
    }
  }

  private readonly onBell = (): void => {
    const w = this.bellWaiter;
    this.bellWaiter = null;
    w?.();
  };

  private pending(): boolean {
    for (const w of this.workers) if (w.corrupt === null && w.cqc.nonEmpty()) return true;
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
    // The head is ours; the tail and the entries are the worker's, in shared memory: untrusted.
    const cq = w.cqc, C = CQ_COPY;
    const avail = cq.available();
    if (avail < 0) {
      this.ringCorrupt(w, `completion ${cq.problem}`);
      return 0;
    }
    let n = 0;
    for (let k = 0; k < avail; k++) {
      if (!cq.take(C)) { this.ringCorrupt(w, `completion ${cq.problem}`); break; }
      const id = C[CQ_ID], res = C[CQ_RES];
      // An id the main thread does not have in flight, or one now held by another worker,
      // would be memory corruption or a stale ring: ignore it.
      if (id >= 0 && id < this.reqs.nextId && this.reqs.kind[id] !== K_FREE && this.reqs.entry[id * ENTRY_WORDS + E_TAG] === w.index) this.reqs.settle(id, res, null);
      n++;
    }
    if (n > 0) cq.release();
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
    void w.thread?.terminate();
  }

}

function nextPow2(n: number): number { return 2 ** Math.ceil(Math.log2(n)); }

/** drainOne()'s copy of the completion entry it checks (one, reused: no allocation per entry). */
const CQ_COPY = new Int32Array(CQ_ENTRY);
