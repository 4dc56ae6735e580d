// A lane is how an engine's requests reach a kernel I/O context and come back: inline (the
// engine's own thread owns the context: src/core/inline.ts) or through offload workers
// (src/core/workers.ts). The engine (src/engine.ts) keeps the requests (src/core/requests.ts),
// files and buffers, and talks to its one lane through this interface only.
import type { BufferPool } from '../pool.js';
import type { ResolvedOptions } from '../options.js';
import type { BackendName, ControlMessage, NativeAddon, NativeContextInfo } from '../types.js';
import type { Requests } from './requests.js';
import type { RingfenceError } from '../errors.js';

export interface ContextReport {
  index: number;
  backend: BackendName;
  refused: Record<string, string>;
  info: NativeContextInfo;
}

export interface Lane {
  /** Requests waiting for room (a full ring or no free slot), not yet with a context. */
  readonly queued: number;
  /** Contexts lost and replaced (worker mode). */
  readonly losses: number;
  /**
   * Hands request `id` (its entry words filled in) to a context, or queues it. False when no
   * context can ever take it (every worker retired): nothing was done with it, and
   * unavailable() says why.
   */
  send(id: number): boolean;
  unavailable(id: number): RingfenceError;
  /** The end of a tick: submit what was sent during it (one kernel entry per context). */
  flush(): void;
  /** Tells every context about a file (open/close) and waits until all have applied it. */
  broadcast(make: (seq: number) => ControlMessage): Promise<void>;
  /** Remembers how to announce an open file to a replacement context (null: forget it). */
  remember(fileId: number, make: ((seq: number) => ControlMessage) | null): void;
  /** Periodic: a safety-net reap, and (worker mode) the watchdog. */
  watch(): void;
  contexts(): ContextReport[];
  /** Per-context rows of the statistics block, with the lane's own counters. */
  statRows(): { index: number; ringFullEvents: number }[];
  /** Stops the contexts; graceMs: how long they may take to drain (0: close() gave up). */
  stop(graceMs: number): Promise<void>;
  /**
   * Replies sent at completion time (native/reply.h): inline mode only, absent in worker mode.
   * replyOpen: a record's handle for socket `fd`, or -1; replyRecords: the records (null: none).
   */
  replyOpen?(fd: number): number;
  replyClose?(handle: number): void;
  replyRecords?(): Int32Array | null;
}

/** What a lane needs from its engine. */
export interface LaneHost {
  readonly options: ResolvedOptions;
  readonly addon: NativeAddon;
  readonly pool: BufferPool;
  readonly reqs: Requests;
  readonly workerStats: Float64Array;
  /** Requests and pool waiters outstanding. */
  readonly outstanding: number;
  /** The engine is tearing down: contexts end on purpose, deaths are not losses. */
  readonly destroying: boolean;
  /** Resolves when close() gives up on what is left (control messages stop waiting for acks). */
  readonly abandoned: Promise<void>;
  /** Set when requests may still be in the kernel with nobody to drain them: fds stay open. */
  pinFds(): void;
  readonly fdsPinned: boolean;
}
