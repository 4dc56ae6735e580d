// One single-producer single-consumer ring over shared memory (layout: src/shm.ts), used for
// both directions of worker mode: submissions (engine thread -> worker) and completions
// (worker -> engine thread). Each side keeps its own copy of the index it owns and treats the
// other side's word as untrusted: a consumer accepts a tail only if (tail - head) | 0 lies in
// [0, capacity], and an entry only if it carries the ring index it is read at and a matching
// check value (entrySum over the words before it); a producer accepts a head only if it is at
// most one ring behind its tail. Anything else is corruption, reported as a reason string.
import { RING_HDR_WORDS, RING_HEAD, RING_TAIL, entrySum } from '../shm.js';

export class RingProducer {
  /** Our own tail (published with publish()); the consumer's head as last read. */
  tail: number;
  /** The consumer's head as last read (room() reads the word again only when this says full). */
  headCache: number;
  private readonly mask: number;
  /** Why the ring is corrupt (null: it is not), set by room(). */
  problem: string | null = null;

  constructor(readonly words: Int32Array, readonly capacity: number, readonly entryWords: number,
    /** Index of the ring-index word and of the check-value word in an entry. */
    private readonly seqAt: number, private readonly sumAt: number) {
    this.mask = capacity - 1;
    this.tail = Atomics.load(words, RING_TAIL);
    this.headCache = this.tail;
  }

  /**
   * Free entries now. Reads the consumer's head only when the cached one says full, or when
   * `fresh`; -1 when that head is corrupt (see `problem`).
   */
  room(fresh = false): number {
    let used = (this.tail - this.headCache) | 0;
    if (used >= this.capacity || fresh) {
      const head = Atomics.load(this.words, RING_HEAD);
      used = (this.tail - head) | 0;
      if (used < 0 || used > this.capacity) {
        this.problem = `head ${head} is ${used} behind tail ${this.tail} (capacity ${this.capacity})`;
        return -1;
      }
      this.headCache = head;
    }
    return this.capacity - used;
  }

  /** Word offset of the next entry: write its words before seqAt, then commit(). */
  next(): number {
    return RING_HDR_WORDS + (this.tail & this.mask) * this.entryWords;
  }

  /** Stamps the entry at next() with its ring index and check value (zeroing the words after), and advances. */
  commit(): void {
    const at = this.next(), w = this.words;
    w[at + this.seqAt] = this.tail;
    for (let i = this.sumAt + 1; i < this.entryWords; i++) w[at + i] = 0;
    w[at + this.sumAt] = entrySum(w, at, this.sumAt);
    this.tail = (this.tail + 1) | 0;
  }

  /** Makes every committed entry visible to the consumer. */
  publish(): void {
    Atomics.store(this.words, RING_TAIL, this.tail);
  }

  /** The tail as published (entries committed after it are not yet visible). */
  published(): number {
    return Atomics.load(this.words, RING_TAIL);
  }
}

export class RingConsumer {
  /** Our own head (published with release()). */
  head: number;
  private readonly mask: number;
  /** Why the ring is corrupt (null: it is not), set by available() and take(). */
  problem: string | null = null;

  constructor(readonly words: Int32Array, readonly capacity: number, readonly entryWords: number,
    private readonly seqAt: number, private readonly sumAt: number) {
    this.mask = capacity - 1;
    this.head = Atomics.load(words, RING_HEAD);
  }

  /** Entries waiting, by the producer's tail; -1 when that tail is corrupt (see `problem`). */
  available(): number {
    const tail = Atomics.load(this.words, RING_TAIL), avail = (tail - this.head) | 0;
    if (avail < 0 || avail > this.capacity) {
      this.problem = `tail ${tail} is ${avail} ahead of head ${this.head} (capacity ${this.capacity})`;
      return -1;
    }
    return avail;
  }

  /** Anything to take, without the checks (for a sleeper's re-check). */
  nonEmpty(): boolean {
    return Atomics.load(this.words, RING_TAIL) !== this.head;
  }

  /**
   * Copies the entry at our head into `out` (words 0..sumAt: the words used are the words
   * checked) and checks it; true and the head advanced, or false with `problem` set.
   */
  take(out: Int32Array): boolean {
    const src = RING_HDR_WORDS + (this.head & this.mask) * this.entryWords, w = this.words;
    for (let i = 0; i <= this.sumAt; i++) out[i] = w[src + i];
    if (out[this.seqAt] !== this.head) {
      this.problem = `entry at index ${this.head} carries index ${out[this.seqAt]} (a stale entry from an earlier lap, or an overwritten one)`;
      return false;
    }
    if (out[this.sumAt] !== entrySum(out, 0, this.sumAt)) {
      this.problem = `entry at index ${this.head} fails its check value (a word of it was overwritten)`;
      return false;
    }
    this.head = (this.head + 1) | 0;
    return true;
  }

  /** Publishes our head: the producer may reuse the entries taken. */
  release(): void {
    Atomics.store(this.words, RING_HEAD, this.head);
  }
}
