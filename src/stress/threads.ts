// `ringfence stress --threads N`: the stress thread keeps planning every operation and the
// model, and reads everything back through its own engine; the writes, zero-writes and
// truncates go round-robin to N writer threads (src/stress/writer-thread.ts), each with an
// Engine of its own on the same file. Nothing but the process-wide tracked-request table
// (native/registry.h) orders them against each other, which is what this mode exercises.
//
// Write data is copied into a slot of the writer's staging SharedArrayBuffer; a request that
// finds no free slot waits for one. The rest of the protocol is one message each way per
// operation (a MessagePort), so a writer thread's requests cost a thread hop: this mode is for
// correctness, not speed.
import { Worker } from 'node:worker_threads';
import type { File } from '../file.js';
import type { EngineOptions } from '../options.js';
import { RingfenceError } from '../errors.js';
import type { WriterInit, WriterReply, WriterRequest } from './writer-thread.js';

const WRITER_FILE = new URL('./writer-thread.js', import.meta.url);

type Stats = ReturnType<File['stats']>;
type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };
type Req = WriterRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/** One writer thread. */
class Writer {
  readonly index: number;
  private readonly thread: Worker;
  private readonly staging: SharedArrayBuffer;
  private readonly slotBytes: number;
  private readonly freeSlots: number[] = [];
  private readonly slotWaiters: ((slot: number) => void)[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private dead: Error | null = null;
  readonly ready: Promise<void>;

  constructor(index: number, engine: EngineOptions, slots: number, slotBytes: number) {
    this.index = index;
    this.slotBytes = slotBytes;
    this.staging = new SharedArrayBuffer(slots * slotBytes);
    for (let i = slots - 1; i >= 0; i--) this.freeSlots.push(i);
    const init: WriterInit = { index, engine, staging: this.staging, slotBytes };
    this.thread = new Worker(WRITER_FILE, { workerData: { ringfenceStressWriter: init } });
    this.ready = new Promise<void>((resolve, reject) => this.pending.set(0, { resolve: () => resolve(), reject }));
    this.thread.on('message', (m: WriterReply) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(new RingfenceError(`writer thread ${index}: ${m.message}`, { code: m.code ?? 'ERR_RINGFENCE_INTERNAL' }));
    });
    const gone = (why: string): void => {
      this.dead = new RingfenceError(`writer thread ${index} ${why}: its requests did not complete; this is a ringfence bug, report it with the seed`,
        { code: 'ERR_RINGFENCE_WORKER_LOST' });
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    this.thread.on('error', (err) => gone(`failed: ${err.message}`));
    this.thread.on('exit', (code) => { if (this.pending.size > 0) gone(`exited (code ${code})`); });
  }

  /** Requests sent and not yet answered. */
  inFlight(): number { return this.pending.size; }

  call(r: Req): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.thread.postMessage({ ...r, id } as WriterRequest);
    });
  }

  async write(path: string, buf: Uint8Array, off: number): Promise<number> {
    if (buf.byteLength > this.slotBytes) throw new RangeError(`stress: a ${buf.byteLength}-byte write exceeds the writer's ${this.slotBytes}-byte slot`);
    const slot = this.freeSlots.length > 0 ? this.freeSlots.pop()! : await new Promise<number>((r) => this.slotWaiters.push(r));
    try {
      new Uint8Array(this.staging, slot * this.slotBytes, buf.byteLength).set(buf);
      return await this.call({ type: 'write', path, off, len: buf.byteLength, slot }) as number;
    } finally {
      const w = this.slotWaiters.shift();
      if (w) w(slot); else this.freeSlots.push(slot);
    }
  }

  async stop(): Promise<void> {
    if (!this.dead) await this.call({ type: 'stop' }).catch(() => {});
    await this.thread.terminate();
  }
}

/** The writer threads of one stress run. */
export class WriterThreads {
  readonly writers: Writer[];
  private turn = 0;

  private constructor(writers: Writer[]) { this.writers = writers; }

  /** Starts `n` writer threads, each with an engine started with `engine`. */
  static async start(n: number, engine: EngineOptions, slots: number, slotBytes: number): Promise<WriterThreads> {
    const writers = Array.from({ length: n }, (_, i) => new Writer(i, engine, slots, slotBytes));
    const t = new WriterThreads(writers);
    try {
      await Promise.all(writers.map((w) => w.ready));
    } catch (err) {
      await t.stop();
      throw err;
    }
    return t;
  }

  /** The next writer, round-robin. */
  next(): Writer {
    const w = this.writers[this.turn];
    this.turn = (this.turn + 1) % this.writers.length;
    return w;
  }

  /** Opens `path` in every writer thread (after the stress thread opened it). Returns the table's participants then. */
  async open(path: string, direct: boolean): Promise<number> {
    const n = await Promise.all(this.writers.map((w) => w.call({ type: 'open', path, direct })));
    return Math.max(...(n as number[]));
  }

  /** Requests in the writer threads, not yet answered (the stall watch counts them). */
  inFlight(): number { return this.writers.reduce((n, w) => n + w.inFlight(), 0); }

  async stop(): Promise<void> {
    await Promise.all(this.writers.map((w) => w.stop()));
  }
}

/**
 * What the workloads use of a file. A plain File in the usual mode; a ThreadedFile with
 * --threads.
 */
export type StressFile = Pick<File, 'read' | 'write' | 'writeZeroes' | 'truncate' | 'size' | 'info' | 'stats' | 'close'>;

/**
 * The stress thread's handle of a file, with its mutations sent to the writer threads: reads,
 * sizes and the final verification stay on the stress thread's own engine.
 */
export class ThreadedFile implements StressFile {
  private readonly local: File;
  private readonly threads: WriterThreads;
  private readonly path: string;
  /** The writer threads' statistics, fetched by refreshStats() (the run's figures include them). */
  private remote: Stats[] = [];

  constructor(local: File, threads: WriterThreads) {
    this.local = local;
    this.threads = threads;
    this.path = local.path;
  }

  read(buf: Uint8Array, offset: number | bigint): Promise<number> { return this.local.read(buf, offset); }
  size(): Promise<bigint> { return this.local.size(); }
  info(): ReturnType<File['info']> { return this.local.info(); }

  write(buf: Uint8Array, offset: number | bigint): Promise<number> {
    return this.threads.next().write(this.path, buf, Number(offset));
  }

  writeZeroes(offset: number | bigint, length: number | bigint): Promise<number> {
    return this.threads.next().call({ type: 'zero', path: this.path, off: Number(offset), len: Number(length) }) as Promise<number>;
  }

  async truncate(size: number | bigint): Promise<void> {
    await this.threads.next().call({ type: 'truncate', path: this.path, size: Number(size) });
  }

  async refreshStats(): Promise<void> {
    this.remote = await Promise.all(this.threads.writers.map((w) => w.call({ type: 'stats', path: this.path }))) as Stats[];
  }

  /** The stress thread's and every writer thread's figures for this file, summed. */
  stats(): Stats {
    const all = [this.local.stats(), ...this.remote];
    const sum = (k: 'tracked' | 'serialising' | 'waits' | 'waitNsTotal' | 'tableFull' | 'emulatedFallocates'): number => all.reduce((a, s) => a + s[k], 0);
    return {
      ...all[0], tracked: sum('tracked'), serialising: sum('serialising'), waits: sum('waits'), waitNsTotal: sum('waitNsTotal'),
      tableFull: sum('tableFull'), emulatedFallocates: sum('emulatedFallocates'),
      waitNsMax: Math.max(...all.map((s) => s.waitNsMax)), tableHighWater: Math.max(...all.map((s) => s.tableHighWater)),
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.writers.map((w) => w.call({ type: 'close', path: this.path }).catch(() => {})));
    await this.local.close();
  }
}
