import type { MessagePort } from 'node:worker_threads';

import type { BackendChoice, BackendName } from './backends.js';
export type { BackendChoice, BackendName } from './backends.js';
export type WorkaroundPolicy = 'auto' | 'always' | 'never' | 'probe';

export interface NativeContextOptions {
  backend: BackendName;
  depth: number;
  pool: Uint8Array;
  batch: Int32Array;
  completions: Int32Array;
  /** Worker mode: the main thread's doorbell for this worker. */
  doorbellFd?: number;
  emulateWindowUs: number;
  /**
   * Inline mode (native/inline.h): called on this thread's event loop when completions may be
   * waiting; pump() then never waits. Replaces doorbellFd.
   */
  onReady?: () => void;
  /** Int32Array (over the control SharedArrayBuffer) of length >= 1: see W_STALL in src/shm.ts. */
  stall?: Int32Array;
  /**
   * Inline mode, optional: replies sent at completion time (native/reply.h). The records
   * (REPLY_MAX * REPLY_WORDS words), one arm word per batch entry (record + 1, 0: none; the
   * context clears each word it reads) and the number of request slots (a tag's slot is tag >> 3).
   */
  replies?: Int32Array;
  replyArm?: Int32Array;
  replySlots?: number;
}

export interface NativeContextInfo {
  backend: BackendName;
  depth: number;
  fixedBuffers: boolean;
  /** Why the pool is not registered as fixed buffers, when registration was refused (RLIMIT_MEMLOCK, usually). */
  fixedBuffersReason?: string;
  /**
   * io_uring: the pool's 4 MiB chunks registered as fixed buffers so far (each on its first
   * use), refused (they run unregistered; fixedBuffersReason says why) and in all. Inline mode
   * reports it live; worker mode as it was when the worker started.
   */
  fixedBufferChunks?: { registered: number; refused: number; total: number };
  fixedFiles: boolean;
  setupFlags: string[];
  asyncFtruncate: boolean;
  /** Ops run synchronously: on the worker thread (worker mode) or on libuv's threadpool (inline mode). */
  syncOps: string[];
  /** 'inline': driven by the owning thread's event loop; 'worker': by an offload worker. */
  mode: 'inline' | 'worker';
  /** io_uring: the ring fd is registered (IORING_REGISTER_RING_FDS). */
  ringFdRegistered: boolean;
  /**
   * io_uring inline, x86-64, Linux >= 6.8, opt-in with RINGFENCE_QUIET_EVENTFD=1: the registered
   * eventfd is switched off during the context's own enters, so the completions they post do not
   * wake the loop once more (absent when off, the default).
   */
  quietEventfd?: boolean;
  /** How often work queued during such an enter (IORING_SQ_TASKRUN) was found and run at once. */
  quietRechecks?: number;
  /** How often a CQE was left in the ring after that, so that the context signalled the eventfd itself. */
  quietSelfSignals?: number;
  /** Inline mode: times the eventfd has woken the thread's loop (completions, helper results, table rings). */
  loopWakes?: number;
}

export interface NativeContext {
  setFile(id: number, fd: number): void;
  clearFile(id: number): void;
  /** exts (inline mode): the caller buffers of the batch's OpFlag.EXT entries, by batch index. */
  pump(nSubmit: number, waitMs: number, exts?: (Uint8Array | undefined)[], replies?: boolean): number;
  /** A reply record for socket `fd` (the context keeps a dup of it): its number, or -errno. Needs `replies`. */
  replyOpen(fd: number): number;
  /** Closes a reply record's dup; the number is reused once no submitted request names it. */
  replyClose(rec: number): void;
  inflight(): number;
  info(): NativeContextInfo;
  close(): void;
  /**
   * Joins the process-wide tracked-request table of a file identity (native/registry.h) with
   * this context's wake-up eventfd. Throws with `code` (ERR_RINGFENCE_MIXED_IO_MODES,
   * ERR_RINGFENCE_TABLE_PARTICIPANTS, ERR_RINGFENCE_TABLE_REGISTRY_FULL).
   */
  tableJoin(dev: bigint, ino: bigint, capacity: number, direct: boolean, workaround: boolean): TableJoined;
  /** This context's files of the identity now do (or no longer do) want the XFS workaround. */
  tableWorkaround(id: number, wanted: boolean): void;
  /** Leaves a table joined by tableJoin (every entry of this context in it released). */
  tableLeave(id: number): void;
  /** Wakes the participants in `mask` of table `id`, on whatever thread they are. */
  tableRing(id: number, mask: number): void;
}

export interface TableJoined {
  /** The table's process-wide id (for tableRing/tableLeave). */
  id: number;
  /** This context's participant bit in the table (0..30). */
  bit: number;
  /** The table's capacity (the first opener's choice). */
  capacity: number;
  /** The table's memory (an external ArrayBuffer shared by every thread that joined). */
  memory: ArrayBuffer;
}

export interface TableStats {
  id: number; capacity: number; participants: number; workaroundUsers: number;
  inFlight: number; highWater: number; serialisingInFlight: number;
}

export interface ProbeResult {
  kernel: string;
  ioUringDisabled: number;
  ioUring: { ok: boolean; reason: string; setupFlags: string[]; features: string[]; ops: Record<string, boolean> };
  libaio: { ok: boolean; reason: string };
}

export interface NativeAddon {
  /** native/ops.h's wire constants (src/addon.ts checkWire). */
  wire?: Record<string, number>;
  Context: new (opts: NativeContextOptions) => NativeContext;
  probe(): ProbeResult;
  createDoorbell(): number;
  ring(fd: number): void;
  closeFd(fd: number): void;
  /** A close-on-exec duplicate of `fd` (fcntl F_DUPFD_CLOEXEC). */
  dupFd(fd: number): number;
  dioAlign(fd: number): { mem: number; offset: number } | null;
  /**
   * An ArrayBuffer of its own (external, detachable) over bytes [offset, offset+length) of
   * `pool`'s memory. It keeps the pool's SharedArrayBuffer alive until it is collected, so any
   * view of it stays valid memory; the engine's FinalizationRegistry on it returns the block.
   */
  poolView(pool: Uint8Array, offset: number, length: number): ArrayBuffer;
  /** Calls `cb` on this thread's loop each time `fd` (an eventfd) becomes readable, after clearing it. */
  Watch: new (fd: number, cb: () => void) => { ref(): void; unref(): void; close(): void };
  /** The process-wide tracked-request table of a file identity now (native/registry.h), or null. */
  tableStats(dev: bigint, ino: bigint): TableStats | null;
  /** @internal An ArrayBuffer over an open table's memory, for tests and diagnostics. */
  tableView(id: number): ArrayBuffer;
  /** @internal Rings participants of a table from a thread without a context (tests). */
  tableRing(id: number, mask: number): void;
  /** Detaches an ArrayBuffer made by poolView(): every view of it becomes length 0. */
  detach(ab: ArrayBuffer): void;
  /** The address of `u8`'s first byte modulo `m` (checks the pool's page alignment). */
  addressMod(u8: Uint8Array, m: number): number;
}

export interface WorkerInit {
  index: number;
  backend: BackendChoice;
  depth: number;
  sq: SharedArrayBuffer;
  sqCapacity: number;
  cq: SharedArrayBuffer;
  cqCapacity: number;
  ctrl: SharedArrayBuffer;
  pool: SharedArrayBuffer;
  /** The pool's page-generation map (src/shm.ts poolRangeLive). */
  pageGen: SharedArrayBuffer;
  workerStats: SharedArrayBuffer;
  doorbells: number[];
  /** The engine thread's completion eventfd (option mainWake 'eventfd'), or -1: Atomics.notify. */
  mainBell: number;
  emulateWindowUs: number;
  faults: string | null;
  spinUs: number;
  port: MessagePort;
}

export interface WorkerReady {
  type: 'ready';
  index: number;
  backend: BackendName;
  refused: Record<string, string>;
  info: NativeContextInfo;
  threadId: number;
}

export interface ControlOpen {
  type: 'open'; seq: number; fileId: number; fd: number; path: string;
  /** The file identity, whose process-wide table each context joins (null: not tracked). */
  dev: bigint; ino: bigint; tracked: boolean; tableCapacity: number; direct: boolean;
  workaround: boolean; emulate: boolean; align: number; stats: SharedArrayBuffer;
}

export type ControlMessage =
  | ControlOpen
  | { type: 'close'; seq: number; fileId: number }
  | { type: 'stop' };
