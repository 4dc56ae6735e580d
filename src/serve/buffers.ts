// Request buffers for the NBD server: pooled (engine.alloc) blocks in power-of-two size
// classes, reused across requests and connections, under one byte budget for the server.
// A request that cannot get memory now waits (its connection stops reading) until a buffer
// comes back: memory is bounded whatever the clients send.
import type { Engine } from '../engine.js';

const MIN_CLASS = 4096;

export class BufferCache {
  private readonly engine: Engine;
  /** Idle buffers per class: classes[k] holds blocks of MIN_CLASS << k bytes. */
  private readonly classes: Uint8Array[][] = [];
  private inUse = 0;
  private idle = 0;
  private waiters: (() => void)[] = [];
  private wakeQueued = false;
  private closed = false;
  readonly budget: number;
  private readonly maxIdle: number;

  constructor(engine: Engine, budget: number, maxIdle: number) {
    this.engine = engine;
    this.budget = budget;
    this.maxIdle = maxIdle;
  }

  /** Bytes held by requests now. */
  get used(): number { return this.inUse; }

  /** The class size that holds `len` bytes. */
  static classOf(len: number): number {
    let size = MIN_CLASS;
    while (size < len) size *= 2;
    return size;
  }

  /**
   * A buffer of at least `len` bytes (its byteLength is the class size), or null when the
   * budget or the pool has no room now (call wait()). With nothing held at all a request
   * always gets its buffer, so a waiting request cannot wait forever.
   */
  acquire(len: number): Uint8Array | null {
    const size = BufferCache.classOf(len);
    if (this.inUse > 0 && this.inUse + size > this.budget) return null;
    const k = Math.log2(size / MIN_CLASS);
    const list = this.classes[k];
    let buf = list !== undefined ? list.pop() : undefined;
    if (buf !== undefined) {
      this.idle -= size;
    } else {
      buf = this.allocate(size);
      if (buf === undefined) return null;
    }
    this.inUse += size;
    return buf;
  }

  private allocate(size: number): Uint8Array | undefined {
    try {
      return this.engine.alloc(size);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_RINGFENCE_POOL_EXHAUSTED') throw err;
    }
    // Fragmented or full pool: give the idle buffers back and try once more.
    this.trim(0);
    try {
      return this.engine.alloc(size);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_RINGFENCE_POOL_EXHAUSTED' || this.inUse === 0) throw err;
      return undefined;
    }
  }

  /** A buffer from acquire() whose request has settled and whose data has been sent. */
  release(buf: Uint8Array): void {
    const size = buf.byteLength;
    this.inUse -= size;
    if (!this.closed && this.idle + size <= this.maxIdle) {
      const k = Math.log2(size / MIN_CLASS);
      (this.classes[k] ??= []).push(buf);
      this.idle += size;
    } else {
      this.engine.free(buf);
    }
    if (this.waiters.length > 0 && !this.wakeQueued) {
      this.wakeQueued = true;
      queueMicrotask(() => this.wake());
    }
  }

  /** Calls `resume` once buffers come back (it calls acquire() again, and wait() if need be). */
  wait(resume: () => void): void {
    this.waiters.push(resume);
  }

  private wake(): void {
    this.wakeQueued = false;
    const w = this.waiters;
    this.waiters = [];
    for (const resume of w) resume();
  }

  /** Frees idle buffers down to `keep` bytes. */
  trim(keep: number): void {
    for (const list of this.classes) {
      if (list === undefined) continue;
      while (list.length > 0 && this.idle > keep) {
        const b = list.pop()!;
        this.idle -= b.byteLength;
        this.engine.free(b);
      }
    }
  }

  /** Frees every idle buffer; buffers still held are freed when released. */
  close(): void {
    this.closed = true;
    this.waiters = [];
    this.trim(0);
  }
}
