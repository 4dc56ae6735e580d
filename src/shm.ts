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
 *
 * Ring memory is shared, so each side trusts only what it keeps itself: its own index (the
 * producer its tail, the consumer its head) lives in a local variable and the shared word is
 * only published to; the other side's index is checked, (tail - head) | 0 in [0, capacity], and
 * each entry is checked (ring index and check value, below) before it is used. A failed check
 * means corrupt or stale ring memory: that ring is never used again, and the worker is replaced
 * (the requests it held fail with ERR_RINGFENCE_RING_CORRUPT; see workers/worker.ts
 * ringCorrupt() and Engine.workerGone()).
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

/**
 * Submission ring entries: the 8 request words (src/protocol.ts), then words the consumer
 * checks before it trusts them, because ring memory is shared and may be corrupted or stale:
 *   8  SQ_SEQ  the ring index the producer wrote the entry at (an entry left over from an
 *              earlier lap, replayed by a corrupted tail, carries an older index)
 *   9  SQ_GEN  allocation generation of the pool block the request's buffer lies in (0: none;
 *              see the page-generation map below)
 *   10 SQ_SUM  entrySum() of words 0..9: a scribbled word is caught before the kernel sees it
 *   11..15 reserved (zero); an entry is one 64-byte line
 * Completion ring entries:
 *   0 CQ_ID request id   1 CQ_RES result   2 CQ_SEQ ring index   3 CQ_SUM entrySum() of 0..2
 */
export const SQ_ENTRY = 16;
export const SQ_SEQ = ENTRY_WORDS, SQ_GEN = ENTRY_WORDS + 1, SQ_SUM = ENTRY_WORDS + 2;
export const CQ_ENTRY = COMPL_WORDS;
export const CQ_ID = 0, CQ_RES = 1, CQ_SEQ = 2, CQ_SUM = 3;

/**
 * A 32-bit check value over `n` words of `a` from `at` (FNV-1a-style, per word, with a final
 * avalanche). Not cryptographic: it detects corruption (scribbled or stale words), not an
 * adversary who can also compute it. No allocation.
 */
export function entrySum(a: Int32Array, at: number, n: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < n; i++) {
    h = Math.imul(h ^ a[at + i], 0x01000193);
    h ^= h >>> 15;
  }
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  return (h ^ (h >>> 13)) | 0;
}

/**
 * The pool's page-generation map (one SharedArrayBuffer, written only by the main thread's
 * allocator): one int32 per 4 KiB pool page, 0 while the page is free, else the generation of
 * the allocation that holds it (every page of one block carries the same, never-0 value; each
 * allocation draws a new one). A worker accepts a request only if the first and the last page
 * of the pool range it names carry the generation in the entry (SQ_GEN): for READ/WRITE the
 * buffer, for a padded write the bounce block with its scratch, for READV/WRITEV the iovec
 * table (and each buffer the table names must lie in one live allocation: its first and last
 * page carry the same non-zero generation). So a stale or scribbled entry cannot make the kernel
 * touch memory that is free or belongs to another allocation; it fails with -EFAULT. The main
 * thread stamps SQ_GEN from BufferPool.genAt(buffer offset) when it writes the entry.
 * Generations wrap after 2^31 allocations; a stale entry would have to survive that long and
 * still pass its ring index and check value.
 */
export function poolRangeLive(pageGen: Int32Array, gen: number, off: number, len: number): boolean {
  if (gen === 0 || len <= 0 || off < 0) return false;
  const first = Math.floor(off / 4096), last = Math.floor((off + len - 1) / 4096);
  if (last >= pageGen.length) return false;
  return pageGen[first] === gen && pageGen[last] === gen;
}

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
/**
 * Written by the native context: incremented before and after every call that can block in
 * the kernel for the device's sake (pread/pwrite/fallocate/fsync/ftruncate, io_submit, an
 * io_uring submit). Odd: the worker is inside such a call. The watchdog tells "slow" (blocked
 * in a syscall: the thread is alive and the call will return) from "dead" (no heartbeat and
 * not in a syscall).
 */
export const W_STALL = 6;
/**
 * Set to 1 by the native context if its teardown gave up on requests still in the kernel (a
 * stuck device; io_uring waits about 10 s): the memory those requests name may still be
 * written, so the main thread must never reuse it, and their table entries stay.
 */
export const W_GAVEUP = 7;

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
