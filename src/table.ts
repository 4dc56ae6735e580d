// Lock-free tracked-request table (QEMU block/io.c "tracked requests" semantics)
// shared by every worker of one file identity through a SharedArrayBuffer.
//
// Two requests conflict exactly when their overlap ranges intersect and at
// least one of them is serialising; a request is not handed to the kernel while
// an OLDER conflicting one is in flight, and a newer one never blocks an older
// one.  Age is a global ticket drawn AFTER the slot is claimed and its range is
// published; waits only go from newer to older tickets (or to a ticket that is
// about to be published), so the wait-for graph has no cycle.  A non-serialising
// request that finds no serialising entry in flight draws no ticket: it takes the
// counter's current value minus one, which makes it older than every serialising
// entry that can ever meet it (register() has the argument), and writes no
// table-wide word.  There is no
// mutex and no spin: a scanner that must wait registers interest in the slot's
// waiter mask, re-checks the slot's state word and returns BLOCKED; whoever
// changes that state word afterwards hands the mask back to its caller, which
// rings the doorbells.  docs/ARCHITECTURE.md ("Tracked-request table") has the full argument.
//
// Memory model: every shared access goes through SharedWords, whose production
// implementation (AtomicWords) uses Atomics.* on an Int32Array.  All Atomics
// operations are sequentially consistent, which is what the Dekker-style
// "store my state, then load your interest" / "publish my interest, then load
// your state" pairs below rely on.
//
// Hot path: no allocation, no BigInt, no closures.

/** Shared 32-bit words. Production: AtomicWords. The interleaving checker supplies its own. */
export interface SharedWords {
  load(i: number): number;
  store(i: number, v: number): void;
  add(i: number, v: number): number;
  sub(i: number, v: number): number;
  or(i: number, v: number): number;
  exchange(i: number, v: number): number;
  /** Returns the old value; the swap happened iff it equals `expected`. */
  cas(i: number, expected: number, replacement: number): number;
}

/** SharedWords over an Int32Array (normally on a SharedArrayBuffer) with Atomics.*. */
export class AtomicWords implements SharedWords {
  readonly i32: Int32Array;
  constructor(i32: Int32Array) {
    this.i32 = i32;
  }
  load(i: number): number { return Atomics.load(this.i32, i); }
  store(i: number, v: number): void { Atomics.store(this.i32, i, v); }
  add(i: number, v: number): number { return Atomics.add(this.i32, i, v); }
  sub(i: number, v: number): number { return Atomics.sub(this.i32, i, v); }
  or(i: number, v: number): number { return Atomics.or(this.i32, i, v); }
  exchange(i: number, v: number): number { return Atomics.exchange(this.i32, i, v); }
  cas(i: number, expected: number, replacement: number): number {
    return Atomics.compareExchange(this.i32, i, expected, replacement);
  }
}

export const enum ReqType { READ = 1, WRITE = 2, ZERO = 3, TRUNCATE = 4 }

/** tryAdmit results. register() returns FULL when no slot is free. */
export const ADMITTED = 0, BLOCKED = 1, FULL = -1;

// ---------------------------------------------------------------------------
// Layout (int32 words).  See docs/ARCHITECTURE.md for the diagram.

/**
 * Header: six 64-byte lines of table-wide words, then one line per participant. Serialising
 * registrations (and non-serialising ones while a serialising entry is in flight) write the
 * ticket counter, while the fast path only reads it and serialisingInFlight (and release()
 * reads the FULL waiter mask): keeping the written word off the read-mostly line spares the
 * readers a cache miss on every registration that draws a ticket. Lines 3 to 5
 * hold the participants' "rung" words (H_RANG), written only when someone waits. The
 * statistics (entries in flight, high-water mark) are per participant, each on its own line and
 * written only by that participant: two table-wide counters that every registration and release
 * changed made each request take a cache line from the other participants' CPUs twice
 * (`npm run bench:micro`: 459 against 299 ns per register+tryAdmit+release with a second thread
 * on the table, against 210 and 180 alone).
 */
/** Participants of one table: the width of the waiter masks (bits 0..30). */
export const MAX_WORKERS = 31;
export const H_SER_IN_FLIGHT = 0; // # serialising entries between enterSerialising and leaveSerialising
export const H_FULL_WAITERS = 1;  // workers that got FULL
export const H_CAPACITY = 2;      // informational
/** Participants (engines' contexts) that want the XFS workaround: written by native/registry.cc. */
export const H_WORKAROUND = 3;
export const H_PARTICIPANTS = 4;  // bitmask of participant bits in use (informational)
export const H_TICKET = 16;       // next ticket (wraps; compared modulo 2^32)
/**
 * Words 48..78: one per participant bit, set to 1 by whoever rings that participant (before
 * writing its eventfd), cleared by the participant before it re-evaluates its parked requests:
 * a busy context notices a ring with one load, without a system call.
 */
export const H_RANG = 48;
/** Participant p's statistics line: words H_PART + p * H_PART_WORDS + P_*. */
export const H_PART = 96;
export const H_PART_WORDS = 16;
export const P_IN_FLIGHT = 0;  // entries p has claimed and not released (written by p alone)
export const P_HIGH_WATER = 1; // the most p ever had (written by p alone)
export const HEADER_WORDS = H_PART + MAX_WORKERS * H_PART_WORDS;

/** One slot per in-flight request, padded to a 64-byte cache line. */
export const SLOT_WORDS = 16;
export const S_STATE = 0;     // gen << GEN_SHIFT | owner << OWNER_SHIFT | serialising << 2 | state
export const S_TICKET = 1;    // valid while state == ACTIVE
export const S_START_HI = 2;  // overlap range [start, end), int64 as (hi, lo)
export const S_START_LO = 3;
export const S_END_HI = 4;
export const S_END_LO = 5;
export const S_WAITERS = 6;   // bit per worker waiting for this slot's state word to change
export const S_TYPE = 7;      // ReqType (diagnostics only; conflicts ignore it)

/** Slot states (low 2 bits of the state word). */
export const ST_FREE = 0, ST_CLAIMED = 1, ST_RANGED = 2, ST_ACTIVE = 3;
export const ST_MASK = 3;
export const SER_BIT = 4;
/** The worker that claimed the slot (0..30), set by the claiming CAS itself. */
export const OWNER_SHIFT = 3;
export const OWNER_MASK = 0x1f;
export const GEN_SHIFT = 8;
/** Generation width: handle = gen << SLOT_BITS | slot must stay a non-negative int32. */
export const GEN_BITS = 23;
export const GEN_MASK = (1 << GEN_BITS) - 1;
export const SLOT_BITS = 8;
export const SLOT_MASK = (1 << SLOT_BITS) - 1;
export const MAX_CAPACITY = 1 << SLOT_BITS;

/** int64 (hi, lo) strictly less than. hi is signed (offsets are non-negative), lo unsigned. */
function lt64(ahi: number, alo: number, bhi: number, blo: number): boolean {
  return ahi < bhi || (ahi === bhi && (alo >>> 0) < (blo >>> 0));
}

export class TrackedTable {
  readonly mem: SharedWords;
  readonly capacity: number;

  // Thread-local copy of the entries this instance registered (indexed by
  // slot). Only the owner ever writes a non-FREE slot's fields, so the copy is
  // authoritative and tryAdmit/release need no shared loads for their own entry.
  private readonly ownGen: Int32Array;   // generation + 1 of the live own entry in that slot, 0 = none
  private readonly ownTicket: Int32Array;
  private readonly ownRange: Int32Array; // 4 words per slot
  private readonly ownSer: Uint8Array;
  private readonly ownEarly: Uint8Array; // 1: registered on the ticketless fast path, admitted at once
  // Slots this instance freed, newest on top: claimSlot() tries them first, so that each
  // participant keeps reusing the few cache lines it already owns instead of sweeping the
  // whole table (and taking every line from the other participants' CPUs as it goes).
  private readonly freed: Int32Array;
  private freedTop = 0;
  private hint = -1;       // where claimSlot starts looking (-1: not chosen yet)
  private owner = 0;       // worker << OWNER_SHIFT of the current register() call
  private readonly ownWorker: Uint8Array; // the participant bit of the live own entry in that slot
  private claimedWord = 0; // state word written by the last successful claimSlot
  private regWake = 0;     // workers to wake after the last register()

  static wordsFor(capacity: number): number {
    return HEADER_WORDS + capacity * SLOT_WORDS;
  }

  static create(capacity: number): SharedArrayBuffer {
    TrackedTable.checkCapacity(capacity);
    const sab = new SharedArrayBuffer(TrackedTable.wordsFor(capacity) * 4);
    new Int32Array(sab)[H_CAPACITY] = capacity; // all slots FREE, generation 0
    return sab;
  }

  private static checkCapacity(capacity: number): void {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_CAPACITY) {
      throw new RangeError(`capacity must be 1..${MAX_CAPACITY}`);
    }
  }

  constructor(mem: SharedWords, capacity: number) {
    TrackedTable.checkCapacity(capacity);
    this.mem = mem;
    this.capacity = capacity;
    this.ownGen = new Int32Array(capacity);
    this.ownTicket = new Int32Array(capacity);
    this.ownRange = new Int32Array(capacity * 4);
    this.ownSer = new Uint8Array(capacity);
    this.ownEarly = new Uint8Array(capacity);
    this.freed = new Int32Array(capacity);
    this.ownWorker = new Uint8Array(capacity);
  }

  // -------------------------------------------------------------------------
  // Public API

  /**
   * Claims a slot, publishes the overlap range [start, end) and the flags,
   * then draws the ticket (or, non-serialising with no serialising entry in
   * flight, takes the ticketless fast path and is admitted already).  Returns
   * a handle (gen << 8 | slot, non-negative) or FULL, in which case the
   * caller's worker bit is in the table-level waiter mask: park, and call
   * register() again when woken.
   *
   * After a successful register() the caller MUST ring takeWakeups(): scanners
   * that found this slot RANGED (ticket not yet published) parked on it.
   */
  register(worker: number, type: ReqType, serialising: boolean,
           startHi: number, startLo: number, endHi: number, endLo: number): number {
    if (lt64(endHi, endLo, startHi, startLo) || startHi < 0) throw new RangeError('bad range');
    // The waiter masks are 31 bits wide: a participant outside 0..30 would wake someone else.
    if ((worker >>> 0) >= MAX_WORKERS) throw new RangeError(`participant ${worker} outside 0..${MAX_WORKERS - 1}`);
    // Workers start claiming in different parts of the table, so that they rarely contend
    // for the same free slot or the same cache lines.
    if (this.hint < 0) this.hint = (worker * 97) % this.capacity;
    this.owner = (worker & OWNER_MASK) << OWNER_SHIFT;
    let slot = this.claimSlot();
    if (slot < 0) {
      // Register interest BEFORE the second look: a release() that frees a
      // slot after our first look either is seen by the re-check below or
      // loads H_FULL_WAITERS after our or() and wakes us.
      this.registerFullInterest(1 << worker);
      slot = this.claimSlot();
      if (slot < 0) return FULL;
    }
    const base = HEADER_WORDS + slot * SLOT_WORDS;
    const gen = (this.claimedWord >>> GEN_SHIFT) & GEN_MASK;
    // The owner's participant bit rides in the state word (set by the claiming CAS), so that a
    // dead context's teardown can release its entries: release_owned() in native/registry.cc
    // (releaseOwned() below is its reference).
    this.writeFields(base, type, startHi, startLo, endHi, endLo);
    this.countInFlight(worker);
    if (serialising) {
      // Must come before drawTicket(): a non-serialising request that draws
      // a later ticket reads the counter after its own draw (fast path) and
      // therefore sees this increment; and one on the ticketless path that
      // misses it read the counter before our draw, so its ticket is older.
      this.enterSerialising();
    }
    // The range must be visible (RANGED) before the ticket is drawn: a
    // scanner holding any later ticket then sees us, and one that sees us
    // CLAIMED may ignore us because our ticket will be later than its own.
    this.publishRange(base, gen, serialising);
    let ticket: number, early = 0;
    if (serialising) {
      ticket = this.drawTicket();
    } else {
      // Ticketless fast path (no write to a table-wide word). Only serialising entries ever
      // compare their ticket with ours. Our range is visible (RANGED) before these two loads,
      // and the counter is read before serialisingInFlight. If that reads 0, every serialising
      // entry S is either gone (its leaveSerialising came before our load: the count is the
      // enters minus the leaves, and each leave follows its own enter) or enters after our
      // load, so it draws a ticket >= next after our range is visible: ticket next - 1 is older
      // than S's, S's scan finds us and waits for us, and no older serialising entry is in
      // flight, so we are admitted now. Otherwise draw a ticket as a serialising entry does.
      const next = this.peekTicket();
      if (this.noSerialisingInFlight()) {
        ticket = (next - 1) | 0;
        early = 1;
      } else {
        ticket = this.drawTicket();
      }
    }
    this.publishTicket(base, gen, serialising, ticket);
    // Scanners that found us RANGED and conflicting parked on our slot;
    // publishTicket() changed the state word, so wake them to re-scan.
    this.regWake = this.takeSlotWaiters(base);

    this.ownGen[slot] = gen + 1;
    this.ownTicket[slot] = ticket;
    const r = slot * 4;
    this.ownRange[r] = startHi;
    this.ownRange[r + 1] = startLo;
    this.ownRange[r + 2] = endHi;
    this.ownRange[r + 3] = endLo;
    this.ownSer[slot] = serialising ? 1 : 0;
    this.ownEarly[slot] = early;
    this.ownWorker[slot] = worker;
    return (gen << SLOT_BITS) | slot;
  }

  /** Workers to wake after the last successful register() (read once; resets to 0). */
  takeWakeups(): number {
    const w = this.regWake;
    this.regWake = 0;
    return w;
  }

  /**
   * ADMITTED when no older conflicting entry is in flight; otherwise BLOCKED
   * with the caller's worker bit registered on the blocking slot: park and
   * call again (with the same handle, keeping the ticket) when woken.
   */
  tryAdmit(worker: number, handle: number): number {
    const slot = this.ownSlot(handle);
    const ser = this.ownSer[slot] !== 0;
    // Registered on the ticketless fast path: no older serialising entry exists (register()).
    if (this.ownEarly[slot] !== 0) return ADMITTED;
    // Fast path (QEMU's serialising_in_flight): our ticket is already drawn,
    // so every older serialising entry has already incremented the counter.
    if (!ser && this.noSerialisingInFlight()) return ADMITTED;

    const myTicket = this.ownTicket[slot];
    const r = slot * 4;
    const sHi = this.ownRange[r], sLo = this.ownRange[r + 1];
    const eHi = this.ownRange[r + 2], eLo = this.ownRange[r + 3];
    const bit = 1 << worker;
    const mem = this.mem;
    for (let i = 0; i < this.capacity; i++) {
      if (i === slot) continue;
      const base = HEADER_WORDS + i * SLOT_WORDS;
      for (;;) {
        const s = mem.load(base + S_STATE);
        const st = s & ST_MASK;
        if (this.ignorable(st)) break;
        // Neither serialising: no conflict whatever the ranges.
        if (!ser && (s & SER_BIT) === 0) break;
        const oSHi = mem.load(base + S_START_HI), oSLo = mem.load(base + S_START_LO);
        const oEHi = mem.load(base + S_END_HI), oELo = mem.load(base + S_END_LO);
        const t = st === ST_ACTIVE ? mem.load(base + S_TICKET) : 0;
        // Seqlock re-validation: the fields belong to the entry whose state
        // word we read only if the word (generation included) is unchanged.
        if (mem.load(base + S_STATE) !== s) continue;
        if (!(lt64(sHi, sLo, oEHi, oELo) && lt64(oSHi, oSLo, eHi, eLo))) break;
        // ACTIVE with a later ticket: newer, it waits for us, never the reverse.
        if (st === ST_ACTIVE && ((t - myTicket) | 0) > 0) break;
        // Older and conflicting, or RANGED (ticket unknown: might be older).
        // Register interest, THEN re-check: the owner changes the state word
        // before it takes the waiter mask, so either it sees our bit or we
        // see its change.
        this.registerInterest(base, bit);
        if (this.recheckAfterInterest(base, s)) return BLOCKED;
        // The entry moved on (ticket published, released, reused): re-examine.
      }
    }
    return ADMITTED;
  }

  /** Frees the slot (generation + 1). Returns the bitmask of workers to wake. */
  release(handle: number): number {
    const slot = this.ownSlot(handle);
    const base = HEADER_WORDS + slot * SLOT_WORDS;
    const gen = (handle >>> SLOT_BITS) & GEN_MASK;
    const ser = this.ownSer[slot] !== 0;
    this.ownGen[slot] = 0;
    const mem = this.mem;
    // Before the slot can be reclaimed, so that at any one instant the participants' in-flight
    // counts add up to no more than the number of claimed slots.
    this.uncountInFlight(this.ownWorker[slot]);
    // Free first, then look at interest (pairs with registerInterest +
    // recheckAfterInterest in tryAdmit, and with registerFullInterest +
    // second claimSlot in register).
    this.freeSlot(base, gen);
    if (this.freedTop < this.capacity) this.freed[this.freedTop++] = slot;
    if (ser) this.leaveSerialising();
    let wake = this.takeSlotWaiters(base);
    if (mem.load(H_FULL_WAITERS) !== 0) wake |= mem.exchange(H_FULL_WAITERS, 0);
    return wake;
  }

  ticketOf(handle: number): number {
    return this.ownTicket[this.ownSlot(handle)];
  }
  serialisingInFlight(): number { return this.mem.load(H_SER_IN_FLIGHT); }
  /** Marks the participants in `mask` as rung (their H_RANG words): call before ringing them. */
  markRang(mask: number): void {
    for (let b = 0; mask !== 0; b++, mask >>>= 1) if ((mask & 1) !== 0) this.mem.store(H_RANG + b, 1);
  }

  /** Someone rang participant `bit` since the last call (and the mark is cleared). */
  takeRang(bit: number): boolean {
    return this.mem.load(H_RANG + bit) !== 0 && this.mem.exchange(H_RANG + bit, 0) !== 0;
  }

  /** Some engine with this file open wants the XFS workaround (the combined rule). */
  workaroundWanted(): boolean { return this.mem.load(H_WORKAROUND) > 0; }
  /**
   * At most this many entries were in flight at once: the sum of each participant's own
   * high-water mark (exact with one participant, an upper bound with several), capped at the
   * capacity.
   */
  highWater(): number {
    let n = 0;
    for (let p = 0; p < MAX_WORKERS; p++) n += this.mem.load(H_PART + p * H_PART_WORDS + P_HIGH_WATER);
    return n < this.capacity ? n : this.capacity;
  }
  /**
   * Entries in flight: the participants' counts, each exact, read one after the other. With
   * several participants busy, the sum belongs to no single instant (one count read before a
   * release, another after the claim that reused the slot), so it is approximate and capped at
   * the capacity. Exact when the table is quiet, as tests and the end of a run see it.
   */
  inFlight(): number {
    let n = 0;
    for (let p = 0; p < MAX_WORKERS; p++) n += this.mem.load(H_PART + p * H_PART_WORDS + P_IN_FLIGHT);
    return n < this.capacity ? n : this.capacity;
  }

  // -------------------------------------------------------------------------
  // Protocol steps.  Separate (and overridable) so that tests can weaken one
  // step and check that the interleaving checker notices.

  /** The own-entry cache index for a live handle of this instance. */
  protected ownSlot(handle: number): number {
    const slot = handle & SLOT_MASK;
    if (slot >= this.capacity || this.ownGen[slot] !== ((handle >>> SLOT_BITS) & GEN_MASK) + 1) {
      throw new Error(`stale or foreign handle ${handle}`);
    }
    return slot;
  }

  /** CAS a FREE slot to CLAIMED (same generation). Returns the slot or -1. */
  protected claimSlot(): number {
    const mem = this.mem;
    const cap = this.capacity;
    while (this.freedTop > 0) {
      const j = this.freed[--this.freedTop];
      const base = HEADER_WORDS + j * SLOT_WORDS;
      const s = mem.load(base + S_STATE);
      if ((s & ST_MASK) !== ST_FREE) continue; // someone else took it since we freed it
      const claimed = (s & ~0xff) | this.owner | ST_CLAIMED;
      if (mem.cas(base + S_STATE, s, claimed) === s) {
        this.claimedWord = claimed;
        return j;
      }
    }
    let i = this.hint;
    for (let n = 0; n < cap; n++) {
      const base = HEADER_WORDS + i * SLOT_WORDS;
      const s = mem.load(base + S_STATE);
      if ((s & ST_MASK) === ST_FREE) {
        const claimed = (s & ~0xff) | this.owner | ST_CLAIMED;
        // Only FREE -> CLAIMED is contended; every later transition of this
        // slot is made by us alone until freeSlot().
        if (mem.cas(base + S_STATE, s, claimed) === s) {
          // Next time start just past this slot: entries are released roughly in the order
          // they were claimed, so the slot after the newest one is the likeliest to be free,
          // and a scan from the slot just taken would first walk over every entry in flight.
          this.hint = i + 1 === cap ? 0 : i + 1;
          this.claimedWord = claimed;
          return i;
        }
      }
      if (++i === cap) i = 0;
    }
    return -1;
  }

  protected registerFullInterest(bit: number): void {
    this.mem.or(H_FULL_WAITERS, bit);
  }

  /** Plain stores: nobody interprets them until publishRange() makes the slot RANGED. */
  protected writeFields(base: number, type: number, sHi: number, sLo: number, eHi: number, eLo: number): void {
    const mem = this.mem;
    mem.store(base + S_TYPE, type);
    mem.store(base + S_START_HI, sHi);
    mem.store(base + S_START_LO, sLo);
    mem.store(base + S_END_HI, eHi);
    mem.store(base + S_END_LO, eLo);
  }

  /** The participant's in-flight count and high-water mark, on its own line (it alone writes them). */
  protected countInFlight(worker: number): void {
    const mem = this.mem;
    const at = H_PART + worker * H_PART_WORDS;
    const n = mem.add(at + P_IN_FLIGHT, 1) + 1;
    if (n > mem.load(at + P_HIGH_WATER)) mem.store(at + P_HIGH_WATER, n);
  }

  protected uncountInFlight(worker: number): void {
    this.mem.sub(H_PART + worker * H_PART_WORDS + P_IN_FLIGHT, 1);
  }

  protected enterSerialising(): void { this.mem.add(H_SER_IN_FLIGHT, 1); }
  protected leaveSerialising(): void { this.mem.sub(H_SER_IN_FLIGHT, 1); }
  protected noSerialisingInFlight(): boolean { return this.mem.load(H_SER_IN_FLIGHT) === 0; }

  protected publishRange(base: number, gen: number, ser: boolean): void {
    this.mem.store(base + S_STATE, (gen << GEN_SHIFT) | this.owner | (ser ? SER_BIT : 0) | ST_RANGED);
  }

  protected drawTicket(): number { return this.mem.add(H_TICKET, 1); }
  /** The next ticket, read without drawing it (the ticketless fast path). */
  protected peekTicket(): number { return this.mem.load(H_TICKET); }

  /** Ticket word first, then ACTIVE: a reader validating ACTIVE sees the ticket. */
  protected publishTicket(base: number, gen: number, ser: boolean, ticket: number): void {
    this.mem.store(base + S_TICKET, ticket);
    this.mem.store(base + S_STATE, (gen << GEN_SHIFT) | this.owner | (ser ? SER_BIT : 0) | ST_ACTIVE);
  }

  /**
   * FREE and CLAIMED slots cannot hold up a scanner: a FREE one is nobody's;
   * a CLAIMED one will draw its ticket after the scanner drew its own, so it
   * is newer.  RANGED and ACTIVE ones must be examined.
   */
  protected ignorable(state: number): boolean {
    return state === ST_FREE || state === ST_CLAIMED;
  }

  protected registerInterest(base: number, bit: number): void {
    this.mem.or(base + S_WAITERS, bit);
  }

  /** True if the slot still holds the state word we decided to wait on. */
  protected recheckAfterInterest(base: number, observed: number): boolean {
    return this.mem.load(base + S_STATE) === observed;
  }

  /** Generation + 1 makes every earlier observation of this slot stale. */
  protected freeSlot(base: number, gen: number): void {
    this.mem.store(base + S_STATE, ((gen + 1) & GEN_MASK) << GEN_SHIFT);
  }

  /**
   * Called right after a state-word change by the owner. A load first keeps
   * the common no-waiter case free of a read-modify-write; it is safe because
   * a waiter or()s its bit before re-reading the state word (Dekker pairing).
   */
  protected takeSlotWaiters(base: number): number {
    if (this.mem.load(base + S_WAITERS) === 0) return 0;
    return this.mem.exchange(base + S_WAITERS, 0);
  }
}

/**
 * The reference for native/registry.cc release_owned(), which is what runs when a context is
 * torn down (the interleaving checker and the fault tests exercise this one).
 *
 * Releases every entry owned by `worker`, which must be dead (its thread gone, its kernel
 * I/O drained): nobody else writes those slots, so plain stores suffice, and requests parked
 * behind them are woken through the returned mask. The owner is part of the state word from
 * the claiming CAS on, so even a slot the worker had only CLAIMED is found. A worker that
 * died between entering the serialising count and publishing its range, or in release() between
 * freeing the slot and leaving the count, leaves that count one high for the table's life: that
 * only disables both fast paths (every plain request then draws a ticket and scans); it never
 * admits wrongly. The worker's in-flight count (its own statistics line) goes to 0.
 *
 * `others` is the mask of the table's other participants (native: every bit joined). They are
 * all woken, not only the waiters found: a worker that died after taking a waiter mask (its
 * slot's, in register() or release(), or the table's FULL mask) and before ringing it, or in
 * release() between freeing its slot and taking that slot's mask, leaves waiters that no scan
 * finds. The interleaving checker kills a participant at each of its steps and reports such a
 * lost wake-up when `others` is 0 (test/table-check.test.mjs). Every participant woken is
 * marked rung (H_RANG), as a release's caller does before ringing, so that each re-evaluates
 * its parked requests.
 */
export function releaseOwned(mem: SharedWords, capacity: number, worker: number, others: number): number {
  let wake = 0;
  for (let i = 0; i < capacity; i++) {
    const base = HEADER_WORDS + i * SLOT_WORDS;
    const s = mem.load(base + S_STATE);
    const st = s & ST_MASK;
    if (st === ST_FREE || ((s >>> OWNER_SHIFT) & OWNER_MASK) !== worker) continue;
    const gen = (s >>> GEN_SHIFT) & GEN_MASK;
    mem.store(base + S_STATE, ((gen + 1) & GEN_MASK) << GEN_SHIFT);
    if (st !== ST_CLAIMED && (s & SER_BIT) !== 0) mem.sub(H_SER_IN_FLIGHT, 1);
    wake |= mem.exchange(base + S_WAITERS, 0);
  }
  // Every entry of the dead participant is gone (one that died right after claiming had not
  // counted itself yet, or had: either way its count is now 0).
  mem.store(H_PART + worker * H_PART_WORDS + P_IN_FLIGHT, 0);
  if (mem.load(H_FULL_WAITERS) !== 0) wake |= mem.exchange(H_FULL_WAITERS, 0);
  wake = (wake | others) & ~(1 << worker) & ((1 << MAX_WORKERS) - 1);
  for (let b = 0, m = wake; m !== 0; b++, m >>>= 1) if ((m & 1) !== 0) mem.store(H_RANG + b, 1);
  return wake;
}

/**
 * releaseOwned() on a table's SharedArrayBuffer. `others` defaults to 0 (only the waiters found
 * are woken), unlike the native teardown: pass the other participants' bits to match it.
 */
export function releaseOwnedBy(sab: SharedArrayBuffer, capacity: number, worker: number, others = 0): number {
  return releaseOwned(new AtomicWords(new Int32Array(sab)), capacity, worker, others);
}
