// Who may use which bytes of the shared pool, and for how long (main thread only).
//
// Every engine.alloc() gets an ArrayBuffer of its own that aliases its pool block (made by the
// addon, `poolView`). Any view derived from it (subarray, Buffer.from(buf.buffer, ...), a
// DataView) references that ArrayBuffer, so the FinalizationRegistry, which watches the
// ArrayBuffer and not the view alloc() returned, can only return the block once no view of it
// is left. A request in flight keeps its buffer referenced (the engine's per-request slot) and
// counts in `inflight`, so neither the GC nor free() can hand the block out again before the
// request settles. free() detaches the ArrayBuffer (every view becomes empty at once) and
// returns the block when the last request using it settles.
//
// Requests that need pool memory (bounce blocks) when none is free wait here in FIFO order,
// in a queue with O(1) pops, and are retried as blocks return.
import { BufferPool } from './pool.js';
import { RingfenceError } from './errors.js';
import { invalidArg, validateInteger } from './validators.js';
import type { NativeAddon } from './types.js';

/** One engine.alloc() block. */
export interface PoolAllocation {
  readonly off: number;
  readonly size: number;
  /** Requests in flight that name this memory. */
  inflight: number;
  /** free() was called, or the GC collected every view: the block returns once inflight is 0. */
  freed: boolean;
}

/** A request waiting for pool memory. `retry` returns false while memory is still short. */
export interface PoolWaiter {
  /** The File the request belongs to (close() rejects that file's waiters). */
  readonly owner: object;
  /** Allocates and queues the request; false: not enough memory yet. Must release what it took if it throws. */
  readonly retry: () => boolean;
  /** Settles the request with an error (it never started). */
  readonly fail: (err: unknown) => void;
}

export class PoolBuffers {
  readonly pool: BufferPool;
  private readonly addon: NativeAddon;
  private readonly byBuffer = new WeakMap<ArrayBuffer, PoolAllocation>();
  private readonly registry: FinalizationRegistry<PoolAllocation>;
  private queue: (PoolWaiter | null)[] = [];
  private head = 0;
  private waiting = 0;
  private running = false;
  /** Called with +1 / -1 as requests start and stop waiting (they keep the process alive). */
  private readonly onWait: (delta: number) => void;

  constructor(pool: BufferPool, addon: NativeAddon, onWait: (delta: number) => void) {
    this.pool = pool;
    this.addon = addon;
    this.onWait = onWait;
    // The callback never throws: release() catches what the waiters it runs throw.
    this.registry = new FinalizationRegistry((rec: PoolAllocation) => {
      if (rec.freed) return;
      rec.freed = true;
      if (rec.inflight === 0) this.release(rec.off);
    });
  }

  /** A pooled buffer of exactly `size` bytes, or throws ERR_RINGFENCE_POOL_EXHAUSTED. */
  alloc(size: number): Uint8Array {
    validateInteger(size, 'size', 1, this.pool.maxAlloc);
    const off = this.pool.alloc(size);
    if (off < 0) {
      throw new RingfenceError(`alloc(${size}): the buffer pool (${this.pool.size} bytes, ${this.pool.used} in use) has no free block that large; free buffers or start the engine with a larger bufferPoolBytes`, { code: 'ERR_RINGFENCE_POOL_EXHAUSTED', op: 'alloc', length: size });
    }
    let ab: ArrayBuffer;
    try {
      ab = this.addon.poolView(this.pool.bytes, off, size);
    } catch (err) {
      this.release(off);
      throw err;
    }
    const rec: PoolAllocation = { off, size, inflight: 0, freed: false };
    this.byBuffer.set(ab, rec);
    this.registry.register(ab, rec, rec);
    return new Uint8Array(ab);
  }

  /** engine.free(): `buf` must be the very view alloc() returned, not yet freed. */
  free(buf: unknown): void {
    const rec = buf instanceof Uint8Array ? this.byBuffer.get(buf.buffer as ArrayBuffer) : undefined;
    if (rec === undefined) throw invalidArg('buf', 'is not a buffer returned by engine.alloc() of this engine', buf);
    const b = buf as Uint8Array;
    if (rec.freed) throw invalidArg('buf', 'was freed already: each engine.alloc() buffer must be freed exactly once', buf);
    if (b.byteOffset !== 0 || b.byteLength !== rec.size) {
      throw invalidArg('buf', `must be the very buffer engine.alloc() returned, not a view of part of it (offset ${b.byteOffset}, length ${b.byteLength} of ${rec.size})`, buf);
    }
    rec.freed = true;
    this.registry.unregister(rec);
    // Every view of this memory becomes empty now, so nothing can read or write it after the
    // block is reused. Requests in flight keep the block itself until they settle.
    this.addon.detach(b.buffer as ArrayBuffer);
    if (rec.inflight === 0) this.release(rec.off);
  }

  /** The allocation `buf` is a view of, if it is one of ours. */
  lookup(buf: Uint8Array): PoolAllocation | undefined {
    return this.byBuffer.get(buf.buffer as ArrayBuffer);
  }

  /** A request starts using `rec`'s memory. */
  hold(rec: PoolAllocation): void { rec.inflight++; }

  /** A request that used `rec`'s memory settled. */
  unhold(rec: PoolAllocation): void {
    if (--rec.inflight === 0 && rec.freed) this.release(rec.off);
  }

  /** A bounce block now, or -1 when none is free; throws when it can never fit. */
  allocBounce(size: number, op: string): number {
    if (size > this.pool.maxAlloc) throw tooLarge(op, size, this.pool.maxAlloc);
    return this.pool.alloc(size);
  }

  /** Queues a request until pool memory frees up. */
  wait(w: PoolWaiter): void {
    this.queue.push(w);
    this.waiting++;
    this.onWait(1);
  }

  get waiters(): number { return this.waiting; }

  /** Returns a block to the pool and lets waiting requests take memory, oldest first. */
  release(off: number): void {
    this.pool.free(off);
    this.runWaiters();
  }

  /**
   * Fails every waiting request of `owner` (every one when null) with `err(waiter)`: used by
   * close(), because a request that waits for memory the caller holds would otherwise wait
   * forever.
   */
  cancel(owner: object | null, err: () => unknown): void {
    for (let i = this.head; i < this.queue.length; i++) {
      const w = this.queue[i];
      if (w === null || (owner !== null && w.owner !== owner)) continue;
      this.queue[i] = null;
      this.settleWaiter(w, err());
    }
    this.compact();
  }

  private runWaiters(): void {
    // A waiter that allocates and then releases (an error path) re-enters here: the outer
    // loop already walks the queue.
    if (this.running) return;
    this.running = true;
    try {
      while (this.head < this.queue.length) {
        const w = this.queue[this.head];
        if (w === null) { this.head++; continue; }
        let started: boolean;
        try {
          started = w.retry();
        } catch (err) {
          // The error belongs to this request alone (e.g. its buffer was detached while it
          // waited); retry() released whatever it had taken. The queue goes on.
          this.queue[this.head++] = null;
          this.settleWaiter(w, err);
          continue;
        }
        if (!started) break;
        this.queue[this.head++] = null;
        this.waiting--;
        this.onWait(-1);
      }
    } finally {
      this.running = false;
      this.compact();
    }
  }

  private settleWaiter(w: PoolWaiter, err: unknown): void {
    this.waiting--;
    this.onWait(-1);
    try { w.fail(err); } catch { /* a settle callback must not break the queue */ }
  }

  private compact(): void {
    if (this.head === this.queue.length) { this.queue.length = 0; this.head = 0; }
    else if (this.head > 1024 && this.head * 2 > this.queue.length) { this.queue = this.queue.slice(this.head); this.head = 0; }
  }
}

export function tooLarge(op: string, size: number, max: number): RingfenceError {
  return new RingfenceError(`${op}: ${size} bytes does not fit in the buffer pool (largest block ${max}); split the request or start the engine with a larger bufferPoolBytes`, { code: 'ERR_RINGFENCE_TOO_LARGE', op, length: size });
}
