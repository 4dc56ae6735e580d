// The worker: owns one kernel I/O context (io_uring, libaio or sync) and serves one
// submission ring. It runs as a plain worker thread for its whole life (src/core/workers.ts
// starts it); see docs/ARCHITECTURE.md.
//
// Loop, per iteration: pull requests from the submission ring into local slots; register
// each in its file's tracked-request table and either admit it (into the native batch) or
// park it; make ONE native call that submits the batch and reaps completions; release the
// completed requests' table entries (waking workers parked behind them) and publish their
// completions; then sleep if there is nothing to do: in the kernel while I/O is in flight,
// in Atomics.waitAsync when idle (so the event loop stays free for control messages).
import { isMainThread, parentPort, threadId, workerData, type MessagePort } from 'node:worker_threads';
import {
  CQ_ENTRY, CQ_ID, CQ_RES, CQ_SEQ, CQ_SUM, CTRL_STRIDE, MAIN_AWAKE, MAIN_SLEEPING, MAIN_STATE,
  SQ_ENTRY, SQ_GEN, SQ_SEQ, SQ_SUM, STATE_RUNNING, STATE_SLEEP_FUTEX, STATE_SLEEP_KERNEL, WAKE_CONTROL, WAKE_TABLE,
  WSTAT_WORDS, WS_WAKEUPS, W_BUSY, W_CTRL_SEQ, W_HEARTBEAT, W_KINFLIGHT, W_STALL, W_STATE, W_WAKE, wakeWorker,
} from '../src/shm.js';
import type { NativeAddon, NativeContext, WorkerInit, WorkerReady, ControlMessage } from '../src/types.js';
import { loadAddon } from '../src/addon.js';
import { parseFaults } from '../src/faults.js';
import { Executor } from '../src/core/executor.js';
import { backendOrder } from '../src/backends.js';
import { RingConsumer, RingProducer } from '../src/core/ring.js';

export default async function serve(init: WorkerInit): Promise<{ index: number; reason: string }> {
  const w = new Worker(init);
  return w.run();
}


class Worker extends Executor {
  private readonly addon: NativeAddon;
  /** We consume submissions and produce completions (src/core/ring.ts: each side's own index is ours, the other side's word untrusted). */
  private readonly sq: RingConsumer;
  private readonly cq: RingProducer;
  /** An entry copied out of the submission ring, checked before anything uses it. */
  private readonly pulledEntry = new Int32Array(SQ_ENTRY);
  /**
   * Set when the ring memory was found corrupt or stale: what was wrong. The worker then never
   * reads its submission ring again, finishes what it already pulled (see ringCorrupt()), and
   * ends its task with this reason (the main thread fails what it still held with
   * ERR_RINGFENCE_RING_CORRUPT and starts a replacement on fresh rings).
   */
  private corrupt: string | null = null;
  /** The completion ring's head was found corrupt: completions can no longer be posted. */
  private cqBroken = false;
  private readonly ctrl: Int32Array;
  private readonly base: number;
  private readonly doorbells: number[];
  /** The engine thread's completion eventfd, or -1 (it waits in Atomics.waitAsync). */
  private readonly mainBell: number;
  private readonly port: MessagePort;
  private readonly spinUs: number;
  /** Completions that did not fit into the completion ring. */
  private readonly doneQ: Int32Array;
  private doneHead = 0;
  private doneLen = 0;

  private stopping = false;
  /** Control messages handled so far (compared with the main thread's W_CTRL_SEQ). */
  private ctrlHandled = 0;
  private controlQueue: ControlMessage[] = [];

  constructor(init: WorkerInit) {
    super({
      index: init.index, depth: init.depth, pool: init.pool, pageGen: init.pageGen,
      wstats: new Float64Array(init.workerStats, init.index * WSTAT_WORDS * 8, WSTAT_WORDS),
      faults: parseFaults(init.faults, init.index),
    });
    this.addon = loadAddon();
    // Fresh rings start at 0 (the engine gives every worker generation new ones).
    this.sq = new RingConsumer(new Int32Array(init.sq), init.sqCapacity, SQ_ENTRY, SQ_SEQ, SQ_SUM);
    this.cq = new RingProducer(new Int32Array(init.cq), init.cqCapacity, CQ_ENTRY, CQ_SEQ, CQ_SUM);
    this.ctrl = new Int32Array(init.ctrl);
    this.base = init.index * CTRL_STRIDE;
    this.doorbells = init.doorbells;
    this.mainBell = init.mainBell;
    this.port = init.port;
    this.spinUs = init.spinUs;
    this.doneQ = new Int32Array(this.cap * 2);
    this.ctx = this.startBackend(init);
    this.port.on('message', (m: ControlMessage) => this.onControl(m));
  }

  /** 'auto' tries io_uring, then libaio, then sync, and remembers why each was refused. */
  private startBackend(init: WorkerInit): NativeContext {
    const order = backendOrder(init.backend);
    const refused: Record<string, string> = {};
    for (const backend of order) {
      try {
        const ctx = this.addon.Context ? new this.addon.Context({
          backend, depth: init.depth, pool: new Uint8Array(init.pool), batch: this.batch, completions: this.compl,
          doorbellFd: init.doorbells[init.index], emulateWindowUs: init.emulateWindowUs,
          // W_STALL, then W_GAVEUP (src/shm.ts): the native context writes both.
          stall: new Int32Array(init.ctrl, (this.base + W_STALL) * 4, 2),
        }) : null;
        if (!ctx) throw new Error('native addon has no Context');
        const ready: WorkerReady = { type: 'ready', index: this.index, backend, refused, info: ctx.info(), threadId };
        this.port.postMessage(ready);
        return ctx;
      } catch (err) {
        refused[backend] = (err as Error).message;
      }
    }
    const msg = Object.entries(refused).map(([b, r]) => `${b}: ${r}`).join('; ');
    throw new Error(`worker ${this.index}: no I/O backend could start (${msg})`);
  }

  private onControl(m: ControlMessage): void {
    this.controlQueue.push(m);
    // The message can arrive after run() consumed WAKE_CONTROL and went back to sleep in
    // Atomics.waitAsync: wake it, or it would sleep until the timeout.
    const st = this.base + W_STATE;
    if (Atomics.compareExchange(this.ctrl, st, STATE_SLEEP_FUTEX, STATE_RUNNING) === STATE_SLEEP_FUTEX) Atomics.notify(this.ctrl, st);
  }

  private handleControl(): void {
    const q = this.controlQueue;
    this.controlQueue = [];
    this.ctrlHandled = (this.ctrlHandled + q.length) | 0;
    for (const m of q) {
      switch (m.type) {
        case 'open':
          try {
            this.openFile(m);
            this.port.postMessage({ type: 'ack', seq: m.seq });
          } catch (err) {
            // Refused by the table registry (the participant limit, mixed I/O modes): open() fails.
            const e = err as Error & { code?: string };
            this.port.postMessage({ type: 'ack', seq: m.seq, error: { message: e.message, code: e.code } });
          }
          break;
        case 'close':
          this.closeFile(m.fileId);
          this.port.postMessage({ type: 'ack', seq: m.seq });
          break;
        case 'stop':
          this.stopping = true;
          break;
      }
    }
  }

  async run(): Promise<{ index: number; reason: string }> {
    const ctrl = this.ctrl, st = this.base + W_STATE;
    try {
      for (;;) {
        Atomics.add(ctrl, this.base + W_HEARTBEAT, 1);
        const wake = Atomics.exchange(ctrl, this.base + W_WAKE, 0);
        if (wake & WAKE_CONTROL || this.controlQueue.length || Atomics.load(ctrl, this.base + W_CTRL_SEQ) !== this.ctrlHandled) {
          // Let the event loop deliver control messages (open/close/stop). The main thread
          // counts the messages it sent in W_CTRL_SEQ, so a busy worker keeps yielding, one
          // turn per iteration, until every one of them has arrived and been handled.
          await new Promise<void>((r) => setImmediate(r));
          this.handleControl();
        }
        // Our own releases set WAKE_TABLE; other participants' (workers of this engine, other
        // threads' engines) mark our H_RANG word in the table before they ring the doorbell.
        if ((wake & WAKE_TABLE) !== 0 || (this.nWaiting > 0 && this.tableRung())) this.retryWaiting();
        // Corrupt ring memory: once what it held has finished and been posted (or, with a
        // corrupt completion ring, once nothing is left in the kernel), end the task.
        if (this.corrupt !== null && this.nativeInflight === 0 && this.readyLen === 0 &&
            (this.cqBroken || (this.held === 0 && this.doneLen === 0))) break;
        if (this.stopping && this.held === 0 && this.doneLen === 0 && this.sqEmpty()) break;

        let progress = this.pull();
        progress = this.submitAndReap(0) || progress;
        if (progress) continue;

        // Nothing to do: publish that we sleep, then re-check (the producer stores the tail
        // and then reads our state; we store our state and then read the tail: under
        // sequential consistency at least one of us sees the other).
        // With requests parked on a table the sleep is in the kernel too: the other participants
        // of a table (workers of this engine, other threads' engines) wake us by writing the
        // doorbell eventfd (native/registry.h), which only a kernel sleep watches.
        if (this.nativeInflight > 0 || this.doneLen > 0 || this.nWaiting > 0) {
          Atomics.store(ctrl, this.base + W_KINFLIGHT, this.nativeInflight);
          Atomics.store(ctrl, st, STATE_SLEEP_KERNEL);
          // (Requests waiting in the submission ring that we have no room for do not keep us up:
          // what frees room is a completion or a release, and both wake this sleep.)
          if ((this.sqEmpty() || !this.roomToPull()) && Atomics.load(ctrl, this.base + W_WAKE) === 0 && this.controlQueue.length === 0) {
            this.wstats[WS_WAKEUPS]++;
            const progress = this.submitAndReap(this.doneLen > 0 ? 1 : 100);
            // A doorbell ring carries no reason: any wake may be a table release.
            if (!progress || this.nWaiting > 0) this.retryWaiting();
          }
          Atomics.store(ctrl, st, STATE_RUNNING);
        } else {
          // Idle. A request often follows the last completion within microseconds (a caller
          // awaiting one request at a time): poll the ring briefly before paying for a futex
          // sleep and a wake-up through the event loop.
          if (this.spinUs > 0 && this.spin()) continue;
          Atomics.store(ctrl, st, STATE_SLEEP_FUTEX);
          if (this.sqEmpty() && Atomics.load(ctrl, this.base + W_WAKE) === 0 && this.controlQueue.length === 0 && !this.stopping) {
            // (A control message still on its way is delivered by the event loop during this wait.)
            this.wstats[WS_WAKEUPS]++;
            // The event loop runs while we wait: control messages are delivered here.
            // (Nothing is parked here: see the kernel sleep above.)
            const r = Atomics.waitAsync(ctrl, st, STATE_SLEEP_FUTEX, 1000);
            if ((r.async ? await r.value : r.value) === 'timed-out') this.retryWaiting();
          }
          Atomics.store(ctrl, st, STATE_RUNNING);
        }
      }
      return { index: this.index, reason: this.corrupt ?? 'stopped' };
    } finally {
      this.ctx.close();
    }
  }

  /** Polls for work for up to spinUs; true when some arrived. */
  private spin(): boolean {
    const until = performance.now() + this.spinUs / 1000;
    const ctrl = this.ctrl, wake = this.base + W_WAKE;
    do {
      if (!this.sqEmpty() || Atomics.load(ctrl, wake) !== 0) return true;
    } while (performance.now() < until);
    return false;
  }

  /** pull() could take a request now. */
  private roomToPull(): boolean {
    return this.nFree > 0 && this.held + this.doneLen < this.cap;
  }

  private sqEmpty(): boolean {
    // A corrupt ring is never read again: it counts as empty.
    return this.corrupt !== null || !this.sq.nonEmpty();
  }

  /**
   * Pulls requests from the submission ring into local slots and routes each one. Ring memory
   * is shared and untrusted: the tail must be at most one ring ahead of our head, and each
   * entry must carry the index it is read at (an entry from an earlier lap is stale) and a
   * matching check value (src/shm.ts). Anything else is corruption: see ringCorrupt().
   */
  private pull(): boolean {
    if (this.corrupt !== null) return false;
    const sq = this.sq, P = this.pulledEntry;
    // Every request pulled must be able to wait in doneQ (capacity: cap) if the completion
    // ring is full, so requests held plus completions not yet delivered stay <= cap.
    if (!sq.nonEmpty() || this.nFree === 0 || this.held + this.doneLen >= this.cap) return false;
    const avail = sq.available();
    if (avail < 0) {
      this.ringCorrupt(`submission ${sq.problem}`);
      return true;
    }
    for (let k = 0; k < avail && this.nFree > 0 && this.held + this.doneLen < this.cap; k++) {
      if (!sq.take(P)) { this.ringCorrupt(`submission ${sq.problem}`); break; }
      this.accept(P, 0, P[SQ_GEN]);
    }
    sq.release();
    Atomics.store(this.ctrl, this.base + W_BUSY, this.held);
    return true;
  }

  /**
   * The ring memory is corrupt or stale. From now on the submission ring is never read again
   * (sqEmpty() says empty, pull() returns at once). The requests already pulled passed every
   * check, so they finish and post their completions as usual; then run() ends the task with
   * the reason, and the main thread fails whatever the ring still held. If the completion ring
   * is the corrupt one, completions can no longer be posted: requests not yet handed to the
   * kernel do not run (their table entries are released, and the main thread fails them), and
   * only those in the kernel, with the remaining steps of a padded write already started, finish.
   */
  private ringCorrupt(reason: string): void {
    if (this.corrupt === null) this.corrupt = `ring-corrupt: ${reason}`;
    if (this.cqBroken) this.abandonUnstarted();
  }

  private abandonUnstarted(): void {
    for (let i = 0; i < this.nWaiting; i++) this.abandon(this.waitList[i]);
    this.nWaiting = 0;
    let kept = 0;
    for (let i = 0; i < this.readyLen; i++) {
      const v = this.readyQ[(this.readyHead + i) % this.readyCap];
      if (this.slotStarted[v >> 3] === 1) this.readyQ[(this.readyHead + kept++) % this.readyCap] = v;
      else this.abandon(v >> 3);
    }
    this.readyLen = kept;
  }

  /** Queues a completion for the main thread (afterReap() posts it). */
  protected override deliver(tag: number, res: number): void {
    const q = (this.doneHead + this.doneLen) % this.cap;
    this.doneQ[q * 2] = tag;
    this.doneQ[q * 2 + 1] = res;
    this.doneLen++;
  }

  protected override afterReap(): boolean { return this.flushDone(); }
  protected override undelivered(): number { return this.doneLen; }

  /** Moves queued completions into the completion ring; wakes main once per batch if it sleeps. */
  private flushDone(): boolean {
    if (this.doneLen === 0 || this.cqBroken) return false;
    // The tail is ours; the head is the main thread's word in shared memory: untrusted.
    const cq = this.cq;
    let room = cq.room(true);
    if (room < 0) {
      this.cqBroken = true;
      this.ringCorrupt(`completion ${cq.problem}`);
      return false;
    }
    if (room === 0) return false;
    let moved = 0;
    const w = cq.words;
    while (this.doneLen > 0 && room > 0) {
      const q = this.doneHead, dst = cq.next();
      w[dst + CQ_ID] = this.doneQ[q * 2];
      w[dst + CQ_RES] = this.doneQ[q * 2 + 1];
      cq.commit();
      this.doneHead = (this.doneHead + 1) % this.cap;
      this.doneLen--;
      room--;
      moved++;
    }
    cq.publish();
    Atomics.store(this.ctrl, this.base + W_BUSY, this.held);
    if (Atomics.load(this.ctrl, MAIN_STATE) === MAIN_SLEEPING &&
        Atomics.compareExchange(this.ctrl, MAIN_STATE, MAIN_SLEEPING, MAIN_AWAKE) === MAIN_SLEEPING) {
      if (this.mainBell >= 0) this.addon.ring(this.mainBell); else Atomics.notify(this.ctrl, MAIN_STATE, 1);
    }
    return moved > 0;
  }

  /** Our own parked requests may go: re-evaluate them on the next iteration. */
  protected override selfWake(): void {
    Atomics.or(this.ctrl, this.base + W_WAKE, WAKE_TABLE);
  }
}

// Started by src/core/workers.ts as a plain worker thread: serve for the thread's whole life,
// then say why it ended ('end'). After a normal end (stop, or a corrupt ring: the native
// context was drained and closed) the thread exits. After an exception it stays alive, idle,
// until the engine terminates it: if its native teardown gave up on I/O stuck in the kernel,
// exiting would block in the kernel (io_uring waits for its io-wq workers at thread exit), and
// Node joins an exiting Worker's thread from the engine's thread, which would then block too.
if (!isMainThread && (workerData as { ringfenceWorker?: WorkerInit } | null)?.ringfenceWorker !== undefined) {
  const init = (workerData as { ringfenceWorker: WorkerInit }).ringfenceWorker;
  serve(init).then((r) => {
    parentPort!.postMessage({ type: 'end', reason: r.reason });
    init.port.close();
  }, (err: unknown) => {
    parentPort!.postMessage({ type: 'end', error: String((err as Error)?.stack ?? (err as Error)?.message ?? err) });
    setInterval(() => {}, 1 << 30);
  });
}
