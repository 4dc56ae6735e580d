// Interleaving model checker for the tracked-request table.
//
// The PRODUCTION TrackedTable runs against an abstract shared memory.  Each
// model thread is a deterministic synchronous program (a driver calling
// register / tryAdmit / release, parking on a doorbell word and ringing other
// threads' doorbells).  Threads are coroutines by replay: to learn thread t's
// next atomic operation, its program is re-run from the start with a
// SharedWords whose first k operations return the recorded results of t's
// earlier steps without touching memory; operation k+1 is captured (not
// performed) and a Suspend is thrown.  The scheduler then performs that one
// operation against the shared memory and appends its result to t's history.
// A thread's local state is a function of its history, so
// (memory, histories) is an exact state key; DFS explores every interleaving
// at every atomic operation, with undo (restore one word, pop one result).

import { FULL, ADMITTED, TrackedTable, H_SER_IN_FLIGHT, H_PART, H_PART_WORDS, P_IN_FLIGHT, H_TICKET, H_FULL_WAITERS, HEADER_WORDS, SLOT_WORDS,
  S_STATE, S_TICKET, S_START_HI, S_START_LO, S_END_HI, S_END_LO, ST_MASK, ST_FREE, ST_RANGED, ST_ACTIVE, SER_BIT, OWNER_SHIFT, OWNER_MASK, MAX_WORKERS,
  GEN_SHIFT, GEN_MASK, SLOT_BITS, SLOT_MASK, releaseOwned }
  from '../../dist/src/table.js';

// Operation kinds.
export const LOAD = 0, STORE = 1, ADD = 2, SUB = 3, OR = 4, XCHG = 5, CAS = 6, PARK = 7, EVENT = 8, KILL = 9;
const KIND_NAMES = ['load', 'store', 'add', 'sub', 'or', 'xchg', 'cas', 'PARK', 'EVENT', 'KILL'];
// Events (EVENT operand `addr`).
export const EV_ADMIT = 1, EV_RELEASE = 2;

const SUSPEND = { suspend: true };

/** A participant's statistics word (in flight, high water): a ghost variable (see eager()). */
const isStat = (a) => a >= H_PART && a < HEADER_WORDS;

export class CheckFailure extends Error {
  constructor(kind, message, trace) {
    super(`${kind}: ${message}${trace ? `\ntrace (last 60 steps):\n${trace}` : ''}`);
    this.kind = kind;
  }
}

/** SharedWords that replays a thread's history, then captures its next op. */
class ReplayMem {
  constructor() { this.hist = null; this.k = 0; this.pk = -1; this.pa = 0; this.pv = 0; this.pw = 0; this.cpK = 0; this.cpA = 0; this.sum = []; }
  /**
   * Driver checkpoint between two API calls.  There the thread's whole local
   * state is the driver's variables plus the TrackedTable instance's fields,
   * so the state key can use that summary instead of the history before it
   * (exact: equal summaries and equal later results mean equal local states).
   * The summary of prefix length k is computed when the replay reaches the
   * checkpoint at the end of the history, i.e. on the peek at that length.
   */
  cp(table, a, b, c) {
    this.cpK = this.k;
    this.cpA = a; // the driver's request index: which request the ops up to the next checkpoint belong to
    if (this.k === this.hist.length) {
      let s = `${a},${b},${c}`;
      for (const f of Object.keys(table)) {
        if (f === 'mem' || f === 'capacity') continue;
        const v = table[f];
        s += ';' + (ArrayBuffer.isView(v) ? v.join(',') : v);
      }
      this.sum[this.k] = s;
    }
  }
  op(kind, addr, v, w) {
    if (this.k < this.hist.length) return this.hist[this.k++];
    this.pk = kind; this.pa = addr; this.pv = v; this.pw = w;
    throw SUSPEND;
  }
  load(i) { return this.op(LOAD, i, 0, 0); }
  store(i, v) { this.op(STORE, i, v | 0, 0); }
  add(i, v) { return this.op(ADD, i, v | 0, 0); }
  sub(i, v) { return this.op(SUB, i, v | 0, 0); }
  or(i, v) { return this.op(OR, i, v | 0, 0); }
  exchange(i, v) { return this.op(XCHG, i, v | 0, 0); }
  cas(i, e, r) { return this.op(CAS, i, e | 0, r | 0); }
}

const MASK63 = (1n << 63n) - 1n;
/** int64 -> [hi, lo] int32 pair. */
export function split64(x) {
  return [Number(BigInt.asIntN(32, x >> 32n)), Number(BigInt.asIntN(32, x))];
}
/** 2^63-1 aligned down (the XFS post-EOF overlap end). */
export const END_MAX = (align) => MASK63 - (MASK63 % BigInt(align));

export function conflicts(a, b) {
  return (a.ser || b.ser) && a.start < b.end && b.start < a.end;
}

/**
 * A scenario: { name, capacity, threads: [[req...]...], Table?, bits?, death? }
 * req: { start: bigint, end: bigint, ser: boolean, type?: number }
 * bits: the participant bit of each thread (distinct, 0..30; default 0, 1, 2, ...).  Every
 * thread runs its OWN Table instance over the one shared memory, as separate threads do.
 * death: { thread, wakeOthers, teardown? }: thread `thread` may die at any scheduling point (a KILL
 * transition, explored at every step: the thread runs no further op).  A reaper, one more
 * model thread that runs only after the death, then does what a context's teardown does:
 * releaseOwned() of the dead participant's bit (with the other participants' mask as
 * `others` if wakeOthers, else 0) and rings the mask it returns.  The dead thread's requests
 * leave the checks (their kernel I/O is drained before the teardown); every other thread must
 * still finish: a state where all of them are parked is a deadlock, whether or not a death
 * could still happen.  (Dropping them is sound before the teardown too: until the reaper's
 * first op, memory is what it would be had the dying thread just not been scheduled, and that
 * execution, with its requests still checked, is explored as well.)  The key carries the death
 * flag and leaves the dead thread's history out: nothing reads it any more.
 */
export class Model {
  constructor(scn) {
    this.name = scn.name;
    this.capacity = scn.capacity;
    this.Table = scn.Table ?? TrackedTable;
    this.nThreads = scn.threads.length;
    // Model threads scheduled: the participants, then the reaper (if a death is modelled).
    this.death = scn.death ?? null;
    this.teardown = scn.death?.teardown ?? releaseOwned; // a mutant may replace it
    this.nRun = this.nThreads + (this.death ? 1 : 0);
    this.reaper = this.death ? this.nThreads : -1;
    this.dead = false;
    this.serResidue = 0; // see kill()
    this.kills = 0; // KILL transitions taken (summed over everything explored)
    if (this.death && !(this.death.thread >= 0 && this.death.thread < this.nThreads)) throw new Error(`[${scn.name}] death.thread ${this.death.thread}`);
    this.bits = scn.bits ?? scn.threads.map((_, t) => t);
    if (this.bits.length !== this.nThreads) throw new Error(`[${this.name}] ${this.bits.length} bits for ${this.nThreads} threads`);
    this.threadOfBit = new Int32Array(32).fill(-1);
    this.bits.forEach((b, t) => {
      if (!Number.isInteger(b) || b < 0 || b >= MAX_WORKERS || this.threadOfBit[b] >= 0) throw new Error(`[${this.name}] bad participant bits ${this.bits}`);
      this.threadOfBit[b] = t;
    });
    this.tableWords = TrackedTable.wordsFor(this.capacity);
    this.doorbell = this.tableWords; // doorbell of thread t (participant bit bits[t]) at doorbell + t
    this.trace = [];
    this.instances = new Array(this.nThreads).fill(null); // thread t's latest Table instance
    this.mem = new Int32Array(this.tableWords + this.nThreads);
    this.mem.set(new Int32Array(TrackedTable.create(this.capacity)));
    this.reqs = [];
    this.threadReqs = scn.threads.map((list) => list.map((r) => {
      const [sHi, sLo] = split64(r.start), [eHi, eLo] = split64(r.end);
      const q = { id: this.reqs.length, ...r, type: r.type ?? (r.ser ? 3 : 2), sHi, sLo, eHi, eLo };
      this.reqs.push(q);
      return q;
    }));
    const n = this.reqs.length;
    this.conf = this.reqs.map((a) => this.reqs.map((b) => a !== b && conflicts(a, b)));
    // Bookkeeping (a function of the histories; the age order of unreleased requests is also
    // stated in the state key, see key()).
    // Each request's place in the age order, from its own ops on the ticket counter: an add
    // (a drawn ticket x: place "x") or, on the ticketless fast path, a load that read x (place
    // "just before x": every ticket drawn before the load is older, every later one newer).
    // A slow-path request loads, then draws: the draw overrides the load.
    this.ticket = new Array(n).fill(null);
    this.early = new Int8Array(n);         // 1: the place comes from a load (just before ticket[id])
    this.status = new Int8Array(n);        // 0 pending, 1 admitted, 2 released
    this.hist = Array.from({ length: this.nRun }, () => []);
    this.ghost = Array.from({ length: this.nRun }, () => []);
    this.rm = Array.from({ length: this.nRun }, () => new ReplayMem());
    this.programs = this.threadReqs.map((list, w) => this.makeProgram(w, list));
    if (this.death) this.programs.push(this.makeReaper());
    this.next = []; // per model thread: [kind, addr, v, w] or null when finished
    for (let t = 0; t < this.nRun; t++) this.next.push(this.peek(t));
    this.parks = 0; this.fulls = 0; this.blocks = 0;
    // Per thread: PARKs after FULL completed (woken), and exchanges of the table-level waiter
    // mask that handed that thread's bit to a releaser (summed over everything explored).
    this.fullParks = new Array(this.nThreads).fill(0);
    this.fullWakes = new Array(this.nThreads).fill(0);
  }

  /** Rings every participant in `mask` through `mem` (its doorbell word); `who` names the ringer in a failure. */
  ring(mem, mask, who) {
    const all = mask;
    for (let b = 0; mask !== 0; b++, mask >>>= 1) {
      if ((mask & 1) === 0) continue;
      const t = this.threadOfBit[b];
      if (t < 0) this.fail('stray wake', `${who} was handed wake mask 0x${(all >>> 0).toString(16)}: bit ${b} belongs to no participant`);
      mem.op(OR, this.doorbell + t, 1, 0);
    }
  }

  /** The dead participant's teardown (see the scenario's `death`). */
  makeReaper() {
    const { capacity } = this, d = this.death.thread, bit = this.bits[d];
    let others = 0;
    if (this.death.wakeOthers) for (let t = 0; t < this.nThreads; t++) if (t !== d) others |= 1 << this.bits[t];
    return (mem) => this.ring(mem, this.teardown(mem, capacity, bit, others), `the reaper of participant ${bit}`);
  }

  makeProgram(w, list) {
    const { Table, capacity, doorbell } = this;
    const bit = this.bits[w];
    return (mem) => {
      // One instance per participant (and per replay): its private caches are this thread's alone.
      const table = new Table(mem, capacity);
      this.instances[w] = table;
      const ring = (mask) => this.ring(mem, mask, `participant ${bit}`);
      for (let qi = 0; qi < list.length; qi++) {
        const q = list[qi];
        let h;
        for (;;) {
          mem.cp(table, qi, 0, 0);
          h = table.register(bit, q.type, q.ser, q.sHi, q.sLo, q.eHi, q.eLo);
          if (h !== FULL) break;
          mem.cp(table, qi, 1, 0);
          mem.op(PARK, doorbell + w, 1 /* FULL */, 0);
        }
        mem.cp(table, qi, 2, h);
        ring(table.takeWakeups());
        for (;;) {
          mem.cp(table, qi, 3, h);
          if (table.tryAdmit(bit, h) === ADMITTED) break;
          mem.cp(table, qi, 4, h);
          mem.op(PARK, doorbell + w, 2 /* BLOCKED */, 0);
        }
        mem.cp(table, qi, 5, h);
        mem.op(EVENT, EV_ADMIT, q.id, h);
        mem.cp(table, qi, 6, h);
        mem.op(EVENT, EV_RELEASE, q.id, 0);
        mem.cp(table, qi, 7, h);
        const wake = table.release(h);
        mem.cp(table, qi, 8, wake);
        ring(wake);
      }
      mem.cp(table, list.length, 9, 0);
    };
  }

  /** Re-run thread t from the start; return its next op, or null if it finished. */
  peek(t) {
    const rm = this.rm[t];
    rm.hist = this.hist[t]; rm.k = 0;
    try {
      this.programs[t](rm);
    } catch (e) {
      if (e === SUSPEND) return [rm.pk, rm.pa, rm.pv, rm.pw, rm.cpK, rm.cpA];
      throw e;
    }
    if (rm.k !== rm.hist.length) throw new Error('nondeterministic thread program');
    rm.finalCp = rm.cpK;
    return null;
  }

  enabled(t) {
    const op = this.next[t];
    if (t === this.reaper && !this.dead) return false;
    return op !== null && (op[0] !== PARK || this.mem[op[1]] !== 0);
  }

  /** The death can still happen: the dying thread has not died and not finished. */
  canKill() { return this.death !== null && !this.dead && this.next[this.death.thread] !== null; }

  /** The dying thread dies before its next op. Returns an undo record. */
  kill() {
    const t = this.death.thread, op = this.next[t];
    const was = this.threadReqs[t].map((q) => this.status[q.id]);
    for (const q of this.threadReqs[t]) this.status[q.id] = 2;
    // What the teardown must leave in serialisingInFlight: the dead thread's net count, less one
    // per published (RANGED/ACTIVE) serialising entry it still owns (releaseOwned() subtracts
    // those): 1 if it died inside its serialising window, else 0.
    let net = 0;
    for (let i = 0; i < this.trace.length; i += 3) {
      const o = this.trace[i + 1];
      if (this.trace[i] === t && o[1] === H_SER_IN_FLIGHT && (o[0] === ADD || o[0] === SUB)) net += o[0] === ADD ? o[2] : -o[2];
    }
    for (let s = 0; s < this.capacity; s++) {
      const st = this.mem[HEADER_WORDS + s * SLOT_WORDS + S_STATE];
      if ((st & ST_MASK) >= ST_RANGED /* or ACTIVE */ && (st & SER_BIT) !== 0 && ((st >>> OWNER_SHIFT) & OWNER_MASK) === this.bits[t]) net--;
    }
    this.serResidue = net;
    this.dead = true;
    this.kills++;
    this.next[t] = null;
    this.trace.push(t, [KILL, 0, 0, 0], 0);
    return { t, op, was };
  }

  unkill(u) {
    this.trace.length -= 3;
    this.next[u.t] = u.op;
    this.dead = false;
    this.serResidue = 0;
    this.threadReqs[u.t].forEach((q, i) => { this.status[q.id] = u.was[i]; });
  }

  /**
   * Ops executed without a scheduling point before them (merged with the
   * thread's previous op):
   *  - ops on the participants' statistics lines (in flight, high water:
   *    [H_PART, HEADER_WORDS)).  They are ghost variables for the properties
   *    checked: their values only ever flow into other statistics ops
   *    (countInFlight's high-water compare), never into a slot,
   *    ticket, mask or admission decision, so where they interleave cannot
   *    change the projection of an execution onto the other ops.  For the
   *    same reason they are left out of the state key.
   *  - the ADMIT event: a pure check with no memory effect; running it at the
   *    earliest possible moment (right after tryAdmit's last op) is the
   *    strongest version of the check.
   */
  eager(op) {
    return op !== null && ((op[0] === EVENT && op[1] === EV_ADMIT) || (op[0] !== PARK && op[0] !== EVENT && isStat(op[1])));
  }

  /** Performs thread t's next op (and any eager ops after it). Returns an undo record. Throws CheckFailure. */
  step(t) {
    const undo = [this.step1(t)];
    while (this.eager(this.next[t])) undo.push(this.step1(t));
    return undo;
  }

  unstep(list) {
    for (let i = list.length - 1; i >= 0; i--) this.unstep1(list[i]);
  }

  step1(t) {
    const op = this.next[t];
    const [kind, a, v, w] = op;
    const m = this.mem;
    const old = kind === EVENT ? 0 : m[a];
    let res = 0, undo = null;
    switch (kind) {
      case LOAD: res = old; break;
      case STORE: m[a] = v; break;
      case ADD: res = old; m[a] = old + v; break;
      case SUB: res = old; m[a] = old - v; break;
      case OR: res = old; m[a] = old | v; break;
      case XCHG: res = old; m[a] = v; break;
      case CAS: res = old; if (old === v) m[a] = w; break;
      case PARK: res = old; m[a] = 0; this.parks++; if (v === 1) this.fullParks[t]++; break;
      case EVENT: undo = this.event(t, a, v, w); break;
    }
    if (kind === XCHG && a === H_FULL_WAITERS && old !== 0) {
      for (let u = 0; u < this.nThreads; u++) if ((old & (1 << this.bits[u])) !== 0) this.fullWakes[u]++;
    }
    if ((kind === ADD || kind === LOAD) && a === H_TICKET) {
      // Only register() touches the counter; op[5] is the request the driver is registering.
      const q = this.threadReqs[t][op[5]];
      const was = this.ticket[q.id], wasEarly = this.early[q.id];
      this.ticket[q.id] = old;
      this.early[q.id] = kind === LOAD ? 1 : 0;
      undo = () => { this.ticket[q.id] = was; this.early[q.id] = wasEarly; };
    }
    this.hist[t].push(res);
    this.ghost[t].push(kind !== EVENT && kind !== PARK && isStat(a));
    this.trace.push(t, op, res);
    this.next[t] = this.peek(t);
    return { t, a, old, op, undo };
  }

  unstep1(u) {
    if (u.op[0] !== EVENT) this.mem[u.a] = u.old;
    if (u.undo) u.undo();
    this.hist[u.t].pop();
    this.ghost[u.t].pop();
    this.trace.length -= 3;
    this.next[u.t] = u.op;
  }

  /** o is older than q in the age order (tickets compare modulo 2^32, as the table's do). */
  older(o, q) {
    const d = (this.ticket[o] - this.ticket[q]) | 0;
    return d < 0 || (d === 0 && this.early[o] === 1 && this.early[q] === 0);
  }

  event(t, kind, id, h) {
    const q = this.reqs[id];
    if (kind === EV_ADMIT) {
      const ticket = this.instances[t].ticketOf(h);
      if (this.ticket[id] === null) this.fail('bookkeeping', `req ${id} admitted without a place in the age order`);
      // A drawn ticket is the counter's value; a fast-path one is the table's choice (checked
      // only through the order properties below and the slot's ticket word).
      if (this.early[id] === 0 && this.ticket[id] !== ticket) this.fail('bookkeeping', `req ${id} ticket ${ticket} != ${this.ticket[id]}`);
      this.checkEntry(t, q, h, ticket);
      for (const o of this.reqs) {
        if (o === q || !this.conf[id][o.id]) continue;
        if (this.status[o.id] === 1) {
          this.fail('conflicting admission', `req ${id}${q.ser ? ' (serialising)' : ''} admitted while conflicting req ${o.id}${o.ser ? ' (serialising)' : ''} is admitted`);
        }
        if (this.status[o.id] === 0 && this.ticket[o.id] !== null && this.older(o.id, id)) {
          this.fail('order violation', `req ${id} (${this.place(id)}) admitted before older conflicting req ${o.id} (${this.place(o.id)}) was released`);
        }
      }
      // 3. A serialising entry excludes everything overlapping (type plays no part).
      for (const o of this.reqs) {
        if (o !== q && this.status[o.id] === 1 && (q.ser || o.ser) && q.start < o.end && o.start < q.end) {
          this.fail('serialising exclusion', `req ${id} overlaps admitted req ${o.id}`);
        }
      }
      this.status[id] = 1;
      return () => { this.status[id] = 0; };
    }
    if (this.status[id] !== 1) this.fail('bookkeeping', `release of req ${id} not admitted`);
    this.status[id] = 2;
    return () => { this.status[id] = 1; };
  }

  place(id) { return this.early[id] ? `ticketless, just before ticket ${this.ticket[id]}` : `ticket ${this.ticket[id]}`; }

  /**
   * The admitted request's shared entry: its handle's slot is ACTIVE in the handle's generation
   * and holds its ticket; no other admitted request holds the same drawn ticket; and its state
   * word names the admitting thread's participant bit as owner (releaseOwnedBy relies on it), its
   * serialising flag, and its range, as the scanners of the other instances see them.
   */
  checkEntry(t, q, h, ticket) {
    const m = this.mem;
    const found = h & SLOT_MASK, gen = (h >>> SLOT_BITS) & GEN_MASK;
    if (found >= this.capacity) this.fail('entry', `req ${q.id}: handle ${h} names slot ${found}`);
    const base = HEADER_WORDS + found * SLOT_WORDS, st = m[base + S_STATE];
    if ((st & ST_MASK) !== ST_ACTIVE || ((st >>> GEN_SHIFT) & GEN_MASK) !== gen || m[base + S_TICKET] !== ticket) {
      this.fail('entry', `req ${q.id} admitted without its slot ${found} ACTIVE in generation ${gen} holding ticket ${ticket}`);
    }
    if (this.early[q.id] === 0) {
      for (const o of this.reqs) {
        if (o !== q && this.status[o.id] === 1 && this.early[o.id] === 0 && this.ticket[o.id] === this.ticket[q.id]) this.fail('entry', `reqs ${q.id} and ${o.id} drew the same ticket`);
      }
    }
    const owner = (st >>> OWNER_SHIFT) & OWNER_MASK;
    if (owner !== this.bits[t]) this.fail('owner', `req ${q.id} of participant ${this.bits[t]}: slot ${found} names owner ${owner}`);
    if (((st & SER_BIT) !== 0) !== q.ser) this.fail('entry', `req ${q.id}: slot ${found} serialising flag ${(st & SER_BIT) !== 0}`);
    if (m[base + S_START_HI] !== q.sHi || m[base + S_START_LO] !== q.sLo || m[base + S_END_HI] !== q.eHi || m[base + S_END_LO] !== q.eLo) {
      this.fail('entry', `req ${q.id}: slot ${found} range (${m[base + S_START_HI]}, ${m[base + S_START_LO]})..(${m[base + S_END_HI]}, ${m[base + S_END_LO]}) != (${q.sHi}, ${q.sLo})..(${q.eHi}, ${q.eLo})`);
    }
  }

  /** Every thread finished (or died), and a death's teardown ran. */
  done() {
    for (let t = 0; t < this.nThreads; t++) if (this.next[t] !== null) return false;
    return !this.dead || this.next[this.reaper] === null;
  }

  /** Checks at a final state: every request ran, the table is empty again. */
  checkFinal() {
    for (let i = 0; i < this.reqs.length; i++) if (this.status[i] !== 2) this.fail('lost request', `req ${i} never ran`);
    const m = this.mem;
    let inFlight = 0;
    for (let p = 0; p < MAX_WORKERS; p++) inFlight += m[H_PART + p * H_PART_WORDS + P_IN_FLIGHT];
    // A participant that died between entering the serialising count and publishing its range,
    // or between freeing its slot and leaving the count, leaves it one high (releaseOwned()):
    // exactly what kill() worked out from its own ops and entries, nothing else.
    const serLeft = m[H_SER_IN_FLIGHT];
    if (serLeft !== (this.dead ? this.serResidue : 0) || inFlight !== 0) this.fail('counters', `serialisingInFlight ${serLeft} inFlight ${inFlight} at the end`);
    for (let s = 0; s < this.capacity; s++) {
      if ((m[HEADER_WORDS + s * SLOT_WORDS + S_STATE] & ST_MASK) !== ST_FREE) this.fail('leak', `slot ${s} not free at the end`);
    }
  }

  key() {
    const m = this.mem;
    // Without the ghost words (see eager()).
    let k = `${m.subarray(0, H_PART).join(',')}|${m.subarray(HEADER_WORDS).join(',')}`;
    if (this.death) k += this.dead ? `|dead${this.serResidue}` : '|alive';
    for (let t = 0; t < this.nRun; t++) {
      if (this.dead && t === this.death.thread) continue; // it runs no more: its history matters no longer
      const h = this.hist[t], g = this.ghost[t];
      const op = this.next[t];
      const cpK = op === null ? this.rm[t].finalCp : op[4];
      k += '|' + this.rm[t].sum[cpK];
      for (let i = cpK; i < h.length; i++) if (!g[i]) k += ',' + h[i];
    }
    // The age order of the requests still in play, which the order check reads. It follows from
    // the histories (the results of the counter ops) only through the table's own fields in the
    // checkpoint summary; stated here, it cannot merge states a table variant keeps apart.
    k += '|';
    for (let i = 0; i < this.reqs.length; i++) if (this.status[i] !== 2) k += `${this.ticket[i]}${this.early[i] ? 'e' : ''},`;
    return k;
  }

  fail(kind, msg) {
    throw new CheckFailure(kind, `[${this.name}] ${msg}`, this.formatTrace());
  }

  formatTrace() {
    const lines = [];
    const tr = this.trace;
    for (let i = Math.max(0, tr.length - 180); i < tr.length; i += 3) {
      const [kind, a, v, w] = tr[i + 1];
      const who = tr[i] === this.reaper ? 'R' : `T${tr[i]}`;
      lines.push(`  ${who} ${KIND_NAMES[kind]}(${a}${kind === STORE || (kind >= ADD && kind !== KILL) ? `, ${v}` : ''}${kind === CAS || kind === EVENT ? `, ${w}` : ''}) -> ${tr[i + 2]}`);
    }
    return lines.join('\n');
  }
}

/**
 * Exhaustive DFS with exact state matching.  Fails on: a conflicting
 * admission, an order violation, a deadlock (unfinished threads all parked),
 * a cycle (a state revisited while on the DFS stack), an execution longer
 * than maxDepth steps.
 */
export function explore(scn, { maxDepth = 5000, maxStates = Infinity } = {}) {
  const m = new Model(scn);
  const seen = new Map(); // key -> 1 on the DFS stack, 2 finished
  let states = 0, transitions = 0, finals = 0, maxSeen = 0;
  const t0 = performance.now();
  const dfs = (depth) => {
    const k = m.key();
    const mark = seen.get(k);
    if (mark === 1) m.fail('livelock', 'cycle in the state graph');
    if (mark === 2) return;
    seen.set(k, 1);
    if (++states > maxStates) throw new Error(`[${scn.name}] more than ${maxStates} states`);
    if (states % 500000 === 0) console.log(`  ... ${states} states ${Math.round(performance.now() - t0)} ms`);
    if (depth > maxSeen) maxSeen = depth;
    if (depth > maxDepth) m.fail('livelock', `execution longer than ${maxDepth} steps`);
    let any = false;
    for (let t = 0; t < m.nRun; t++) {
      if (!m.enabled(t)) continue;
      any = true;
      transitions++;
      const u = m.step(t);
      dfs(depth + 1);
      m.unstep(u);
    }
    if (!any && !m.done()) {
      const parked = m.next.slice(0, m.nThreads).map((op, t) => (op === null ? `T${t} ${m.dead && t === m.death.thread ? 'dead' : 'done'}` : `T${t} parked on doorbell ${op[1] - m.doorbell}`)).join(', ');
      m.fail('deadlock', `no thread can run (${parked})`);
    }
    if (m.canKill()) {
      transitions++;
      const u = m.kill();
      dfs(depth + 1);
      m.unkill(u);
    } else if (!any) {
      finals++;
      m.checkFinal();
    }
    seen.set(k, 2);
  };
  dfs(0);
  return {
    name: scn.name, states, transitions, finals, maxDepth: maxSeen, parks: m.parks, ms: Math.round(performance.now() - t0),
    bits: m.bits, fullParks: m.fullParks, fullWakes: m.fullWakes, instances: m.instances, kills: m.kills,
  };
}

/** Small deterministic PRNG (mulberry32). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * PCT (probabilistic concurrency testing, Burckhardt et al. 2010): random
 * distinct thread priorities, d-1 random change points in [0, k) steps at which
 * the running thread drops to the lowest priorities; always run the
 * highest-priority enabled thread.  One execution per call.
 */
export function pctRun(scn, seed, { d = 3, k = 600, maxSteps = 20000 } = {}) {
  const m = new Model(scn);
  const r = rng(seed);
  const n = m.nThreads;
  const prio = Array.from({ length: n }, (_, i) => d + i);
  for (let i = n - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [prio[i], prio[j]] = [prio[j], prio[i]]; }
  const change = new Map();
  for (let i = 1; i < d; i++) change.set(Math.floor(r() * k), d - i);
  // With a death: the step at which it happens (if the thread is still running then), and the
  // reaper's priority (the highest: the teardown runs as soon as the thread is gone).
  const killAt = m.death ? Math.floor(r() * k) : -1;
  if (m.death) prio.push(d + n);
  const runnable = m.nRun;
  let steps = 0, died = false;
  for (;;) {
    if (steps === killAt && m.canKill()) { m.kill(); died = true; }
    let best = -1;
    for (let t = 0; t < runnable; t++) if (m.enabled(t) && (best < 0 || prio[t] > prio[best])) best = t;
    if (best < 0) {
      if (!m.done()) m.fail('deadlock', 'no thread can run');
      m.checkFinal();
      return { steps, parks: m.parks, fullParks: m.fullParks, fullWakes: m.fullWakes, died };
    }
    if (change.has(steps)) {
      prio[best] = change.get(steps);
      best = -1;
      for (let t = 0; t < runnable; t++) if (m.enabled(t) && (best < 0 || prio[t] > prio[best])) best = t;
    }
    m.step(best);
    if (++steps > maxSteps) m.fail('livelock', `execution longer than ${maxSteps} steps`);
  }
}

// ---------------------------------------------------------------------------
// Real-threads hammer: a worker_threads body (started by table-check.test.mjs
// with workerData.role === 'hammer').  Each worker loops register / tryAdmit /
// park on its doorbell (Atomics.wait) / release, and while admitted marks the
// 4 KiB units its overlap range covers in a shared occupancy array: a
// serialising request adds 0x10000 per unit, a non-serialising one adds 1.  A
// conflict is a serialising mark seeing any other mark, or any mark seeing a
// serialising one.

import { isMainThread, workerData, parentPort } from 'node:worker_threads';
import { AtomicWords } from '../../dist/src/table.js';

export const UNITS = 16;
// `worker` is the thread's participant bit (0..30, any subset); `parts`, if given, the mask of
// every participant's bit: a wake-up for any other bit is counted as stray.
function hammer({ sab, bells, occ, stats, capacity, worker, iters, seed, serPct, parts }) {
  const table = new TrackedTable(new AtomicWords(new Int32Array(sab)), capacity);
  const db = new Int32Array(bells);
  const oc = new Int32Array(occ);
  const st = new Int32Array(stats); // 0 conflicts, 1 blocked, 2 full, 3 done, 4 stray wake bits (if parts)
  let stray = 0;
  const r = rng(seed);
  const park = () => {
    while (Atomics.exchange(db, worker, 0) === 0) Atomics.wait(db, worker, 0, 50);
  };
  const ring = (mask) => {
    if (parts !== undefined && (mask & ~parts) !== 0) stray++;
    for (let b = 0; mask !== 0; b++, mask >>>= 1) {
      if (mask & 1) { Atomics.store(db, b, 1); Atomics.notify(db, b); }
    }
  };
  const MAXHI = 0x7fffffff, MAXLO = -4096; // 2^63-1 aligned down to 4096
  let conflicts = 0, blocked = 0, full = 0;
  for (let i = 0; i < iters; i++) {
    const ser = r() * 100 < serPct;
    const u0 = Math.floor(r() * UNITS);
    const toEnd = ser && r() < 0.1; // XFS post-EOF workaround range
    const u1 = toEnd ? UNITS : Math.min(UNITS, u0 + 1 + Math.floor(r() * 3));
    const eHi = toEnd ? MAXHI : 0, eLo = toEnd ? MAXLO : u1 * 4096;
    let h;
    while ((h = table.register(worker, ser ? 3 : 1, ser, 0, u0 * 4096, eHi, eLo)) === FULL) { full++; park(); }
    ring(table.takeWakeups());
    while (table.tryAdmit(worker, h) !== ADMITTED) { blocked++; park(); }
    const inc = ser ? 0x10000 : 1;
    for (let u = u0; u < u1; u++) {
      const old = Atomics.add(oc, u, inc);
      if (ser ? old !== 0 : (old >>> 16) !== 0) conflicts++;
    }
    for (let u = u0; u < u1; u++) Atomics.sub(oc, u, inc);
    ring(table.release(h));
  }
  Atomics.add(st, 0, conflicts); Atomics.add(st, 1, blocked); Atomics.add(st, 2, full);
  if (parts !== undefined) Atomics.add(st, 4, stray);
  parentPort.postMessage('done');
}

if (!isMainThread && workerData?.role === 'hammer') hammer(workerData);
