// Shared-memory layouts used by both the main thread and the workers.
// See docs/ARCHITECTURE.md for the protocols that run over them.
import { COMPL_WORDS, ENTRY_WORDS } from './protocol.js';

/**
 * SPSC ring over an Int32Array in a SharedArrayBuffer.
 * word 0: tail (written by the producer only), word 16: head (written by the consumer only):
 * separate 64-byte lines so the two sides do not false-share. Entries start at word 32.
 * Indices run freely modulo 2^32 (`| 0` arithmetic); slot = index & mask.
 * The producer writes an entry with plain stores, then publishes with Atomics.store(tail):
 * a sequentially-consistent store, so a consumer that Atomics.load()s the new tail sees the
 * entry's words. The consumer reads the entry, then Atomics.store(head) to give the slot back.
 */
export const RING_TAIL = 0;
export const RING_HEAD = 16;
export const RING_HDR_WORDS = 32;

export function ringBytes(capacity: number, entryWords: number): number {
  return (RING_HDR_WORDS + capacity * entryWords) * 4;
}

export function createRing(capacity: number, entryWords: number): SharedArrayBuffer {
  if (capacity & (capacity - 1)) throw new RangeError('ring capacity must be a power of two');
  return new SharedArrayBuffer(ringBytes(capacity, entryWords));
}

export const SQ_ENTRY = ENTRY_WORDS;
export const CQ_ENTRY = COMPL_WORDS;

/**
 * Engine control block: one Int32Array, CTRL_STRIDE words per worker slot, then main's words.
 * Per worker w at base w * CTRL_STRIDE:
 */
export const MAX_WORKERS = 31; // one bit per worker in the table's waiter masks
export const CTRL_STRIDE = 16;
/** Worker run state: who must be woken, and how. */
export const W_STATE = 0;
/** Wake reasons (bit set by whoever wakes the worker). */
export const W_WAKE = 1;
/** Incremented by the worker every loop iteration: the watchdog reads it. */
export const W_HEARTBEAT = 2;
/** Number of requests the worker has popped and not completed yet (for the watchdog). */
export const W_BUSY = 3;
/** Requests the worker has in the kernel when it goes to sleep there (see wakeWorker). */
export const W_KINFLIGHT = 4;
/** Control messages the main thread has posted to this worker (the worker counts those it handled). */
export const W_CTRL_SEQ = 5;

export const STATE_RUNNING = 0;
/** Sleeping in Atomics.waitAsync on W_STATE: wake with CAS to RUNNING + Atomics.notify. */
export const STATE_SLEEP_FUTEX = 1;
/** Sleeping in the kernel (io_uring_enter / poll on its doorbell eventfd): wake with CAS + doorbell write. */
export const STATE_SLEEP_KERNEL = 2;

export const WAKE_TABLE = 2;
export const WAKE_CONTROL = 4;

/** Main thread's word: MAIN_SLEEPING while it waits in Atomics.waitAsync for completions. */
export const MAIN_STATE = MAX_WORKERS * CTRL_STRIDE;
export const MAIN_AWAKE = 0;
export const MAIN_SLEEPING = 1;
export const CTRL_WORDS = MAIN_STATE + 16;

/** Per-file statistics: one row of FSTAT_WORDS float64 per worker, written only by that worker. */
export const FSTAT_WORDS = 8;
export const FS_TRACKED = 0, FS_SERIALISING = 1, FS_WAITS = 2, FS_WAIT_NS = 3, FS_WAIT_MAX_NS = 4, FS_FULL = 5, FS_EMULATED = 6;
export function fileStatsBytes(): number { return (MAX_WORKERS + 1) * FSTAT_WORDS * 8; }

/** Per-worker statistics: float64 row written only by that worker. */
export const WSTAT_WORDS = 8;
export const WS_OPS = 0, WS_BYTES = 1, WS_BATCHES = 2, WS_WAKEUPS = 3, WS_INFLIGHT = 4, WS_ERRORS = 5;

/**
 * Sets `reason` in worker b's wake word, then wakes it the way its state says it sleeps.
 * Pairs with the worker's "store SLEEP state, then re-check the ring and wake word": the
 * waker writes (ring tail or wake word) before it reads the state, the sleeper writes its
 * state before it reads the ring: with sequentially consistent atomics one of them sees the
 * other, so a wake-up is never lost. The CAS makes exactly one waker pay for the notify.
 */
export function wakeWorker(ctrl: Int32Array, b: number, reason: number, ring: (fd: number) => void, doorbell: number): void {
  const base = b * CTRL_STRIDE;
  if (reason !== 0) Atomics.or(ctrl, base + W_WAKE, reason);
  const s = Atomics.load(ctrl, base + W_STATE);
  if (s === STATE_SLEEP_FUTEX) {
    if (Atomics.compareExchange(ctrl, base + W_STATE, STATE_SLEEP_FUTEX, STATE_RUNNING) === STATE_SLEEP_FUTEX) {
      Atomics.notify(ctrl, base + W_STATE, 1);
    }
  } else if (s === STATE_SLEEP_KERNEL) {
    // New submissions need not interrupt a worker that sleeps on two or more requests in the
    // kernel: a completion wakes it within microseconds, and it pulls the ring then. That saves
    // an eventfd write here and a wake-up there per batch. Table and control wakes always ring.
    if (reason === 0 && Atomics.load(ctrl, base + W_KINFLIGHT) >= 2) return;
    if (Atomics.compareExchange(ctrl, base + W_STATE, STATE_SLEEP_KERNEL, STATE_RUNNING) === STATE_SLEEP_KERNEL) {
      ring(doorbell);
    }
  }
}
