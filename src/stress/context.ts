// The shared machinery of a stress run: operation streams (seeded), per-file models, the
// verify backlog, bad-block accounting and counters. Workloads (workloads.ts) drive it.
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine } from '../engine.js';
import type { File } from '../file.js';
import { RingfenceError } from '../errors.js';
import { Rng, StreamDigest } from './rng.js';
import { ThreadedFile, type StressFile, type WriterThreads } from './threads.js';
import {
  BAD_CLASSES, UnitModel, classify, expectedCrc, type BadBlock, type BadClass, type Expected, type Verdict,
} from './verify.js';

export type WorkloadName = 'qcow2-alloc' | 'append-race' | 'eof-extend' | 'mixed';
export const WORKLOADS: readonly WorkloadName[] = ['qcow2-alloc', 'append-race', 'eof-extend', 'mixed'];

export interface StreamParams {
  workload: WorkloadName;
  seed: number;
  qd: number;
  clusterSize: number;
  blockSize: number;
}

/** One deterministic operation stream: its own Rng, digest, sequence numbers and op budget. */
export class Stream {
  readonly rng: Rng;
  readonly digest: StreamDigest;
  private seq = 0;
  constructor(readonly ctx: StressContext, readonly lane: number, readonly budget: number | null) {
    this.rng = new Rng((ctx.params.seed ^ Math.imul(lane + 1, 0x9e3779b1)) >>> 0);
    this.digest = new StreamDigest(`${JSON.stringify(ctx.params)}/lane${lane}`);
  }
  get generated(): number { return this.digest.count; }
  /** May this stream generate `n` more operations? (time, --ops budget, interruption) */
  canGenerate(n = 1): boolean {
    if (this.ctx.stopping()) return false;
    return this.budget === null || this.generated + n <= this.budget;
  }
  nextSeq(): number { return ++this.seq; }
}

/** A file under test with its model. */
export interface Target {
  /** A File, or with --threads a ThreadedFile (its writes run in the writer threads). */
  file: StressFile;
  name: string;
  path: string;
  model: UnitModel;
  direct: boolean;
}

export interface SizeError { file: string; expected: number; actual: number; when: 'run' | 'final' }

export interface ContextOptions {
  params: StreamParams;
  engine: Engine;
  dir: string;
  durationMs: number | null;
  ops: number | null;
  log: (line: string) => void;
  /** --threads: the writer threads the mutations go to (null: this thread's engine does all). */
  threads?: WriterThreads | null;
}

const FIRST_BAD = 10;

export class StressContext {
  readonly params: StreamParams;
  readonly engine: Engine;
  readonly dir: string;
  readonly log: (line: string) => void;
  readonly startedAt = performance.now();
  readonly deadline: number | null;
  readonly opsBudget: number | null;
  readonly streams: Stream[] = [];
  readonly targets: Target[] = [];
  readonly notes: string[] = [];

  // Counters.
  ops = 0;
  bytesWritten = 0;
  bytesZeroed = 0;
  bytesVerified = 0;
  verifyReads = 0;
  epochs = 0;
  readonly bad: Record<BadClass, number> = { lost: 0, stale: 0, misdirected: 0, torn: 0 };
  readonly firstBad: BadBlock[] = [];
  readonly sizeErrors: SizeError[] = [];
  sizeErrorCount = 0;
  /** Milliseconds into the run when the first bad block or size error was found. */
  firstBadMs: number | null = null;
  private readonly badKeys = new Set<string>();
  private readonly fileStats = new Map<string, ReturnType<File['stats']>>();
  private interrupted = false;
  fatal: Error | null = null;

  constructor(o: ContextOptions) {
    this.params = o.params;
    this.engine = o.engine;
    this.dir = o.dir;
    this.log = o.log;
    this.deadline = o.durationMs === null ? null : this.startedAt + o.durationMs;
    this.opsBudget = o.ops;
    this.threads = o.threads ?? null;
  }

  readonly threads: WriterThreads | null;

  /** Fetches the writer threads' statistics (before tableStats() and closeAll()). */
  async refreshStats(): Promise<void> {
    for (const t of this.targets) if (t.file instanceof ThreadedFile) await t.file.refreshStats().catch(() => {});
  }

  /** Creates `lanes` streams; an --ops budget is split between them deterministically. */
  makeStreams(lanes: number): Stream[] {
    for (let i = 0; i < lanes; i++) {
      const b = this.opsBudget === null ? null : Math.floor(this.opsBudget / lanes) + (i < this.opsBudget % lanes ? 1 : 0);
      this.streams.push(new Stream(this, i, b));
    }
    return this.streams;
  }

  stopping(): boolean {
    return this.interrupted || this.fatal !== null || (this.deadline !== null && performance.now() >= this.deadline);
  }
  interrupt(): void { this.interrupted = true; }

  get elapsedMs(): number { return performance.now() - this.startedAt; }
  get badTotal(): number { return BAD_CLASSES.reduce((a, c) => a + this.bad[c], 0); }

  /** The digest of every stream, combined in lane order. */
  streamDigest(): { digest: string; ops: number } {
    const h = createHash('sha256');
    let ops = 0;
    for (const s of this.streams) { h.update(s.digest.digest()); ops += s.generated; }
    return { digest: h.digest('hex').slice(0, 32), ops };
  }

  /** Opens (creating, truncating) a file in the volume. Falls back to buffered I/O where O_DIRECT is refused. */
  async open(name: string, unit: number, opts: { direct?: boolean } = {}): Promise<Target> {
    const path = join(this.dir, `ringfence-stress-${name}`);
    let direct = opts.direct ?? true;
    let file: File;
    try {
      file = await this.engine.open(path, { create: true, truncate: true, direct });
    } catch (err) {
      if (!direct || (err as RingfenceError).code !== 'EINVAL') throw err;
      direct = false;
      file = await this.engine.open(path, { create: true, truncate: true, direct: false });
      this.note(`this filesystem refuses O_DIRECT, so the files are opened with buffered I/O ({ direct: false })`);
    }
    let sf: StressFile = file;
    if (this.threads !== null) {
      // The writer threads open it too: their engines join the file's one table.
      try {
        const participants = await this.threads.open(path, direct);
        this.note(`--threads ${this.threads.writers.length}: writes, zero-writes and truncates run in ${this.threads.writers.length} writer threads, each with its own engine; ${participants} I/O contexts share the file's tracked-request table`);
      } catch (err) {
        await file.close().catch(() => {});
        throw err;
      }
      sf = new ThreadedFile(file, this.threads);
    }
    const t: Target = { file: sf, name, path, model: new UnitModel(unit), direct };
    this.targets.push(t);
    return t;
  }

  /** Closes a target (keeping its statistics) and reopens it with other options. */
  async reopen(t: Target, opts: { direct: boolean }): Promise<Target> {
    if (t.file instanceof ThreadedFile) await t.file.refreshStats().catch(() => {});
    this.fileStats.set(t.name + '#' + this.fileStats.size, t.file.stats());
    await t.file.close();
    this.targets.splice(this.targets.indexOf(t), 1);
    return this.open(t.name, t.model.unit, opts);
  }

  note(s: string): void { if (!this.notes.includes(s)) this.notes.push(s); }

  /** Checks the units of a read that returned `n` bytes of buf (read at `off`) against the model. */
  check(t: Target, buf: Uint8Array, off: number, len: number, n: number, when: 'run' | 'final'): number {
    const U = t.model.unit, seed = this.params.seed;
    let bad = 0;
    for (let at = 0; at < len; at += U) {
      const uoff = off + at;
      const exp: Expected = { offset: uoff, seq: t.model.seqAt(uoff / U), seed };
      const v = classify(buf, at, U, Math.min(U, n - at), exp);
      if (v.cls !== null) { this.recordBad(t, uoff, U, exp, v, when); bad++; }
    }
    this.bytesVerified += Math.max(0, n);
    return bad;
  }

  private recordBad(t: Target, off: number, len: number, exp: Expected, v: Verdict, when: 'run' | 'final'): void {
    const key = `${t.name}:${off}:${exp.seq}`;
    if (this.badKeys.has(key)) return;
    this.badKeys.add(key);
    this.bad[v.cls!]++;
    this.firstBadMs ??= Math.round(this.elapsedMs);
    if (this.firstBad.length < FIRST_BAD) {
      this.firstBad.push({
        offset: off, length: len, class: v.cls!, when, file: t.name,
        expected: { seq: exp.seq, offset: off, crc: exp.seq === 0 ? null : expectedCrc(len, off, exp.seq, exp.seed), zero: exp.seq === 0 },
        found: v.found,
      });
    }
  }

  sizeError(t: Target, expected: number, actual: number, when: 'run' | 'final'): void {
    this.sizeErrorCount++;
    this.firstBadMs ??= Math.round(this.elapsedMs);
    if (this.sizeErrors.length < FIRST_BAD) this.sizeErrors.push({ file: t.name, expected, actual, when });
  }

  /** Reads [off, off+len) through the engine into buf and checks it. */
  async readCheck(t: Target, buf: Uint8Array, off: number, len: number, when: 'run' | 'final'): Promise<number> {
    const view = buf.byteLength === len ? buf : buf.subarray(0, len);
    const n = await t.file.read(view, off);
    this.verifyReads++;
    return this.check(t, view, off, len, n, when);
  }

  /** Verifies the whole file against its model: every unit, and the size. */
  async verifyAll(t: Target, when: 'run' | 'final' = 'final'): Promise<boolean> {
    const actual = Number(await t.file.size());
    const U = t.model.unit;
    const end = Math.ceil(Math.max(actual, t.model.size) / U) * U;
    const chunk = Math.max(U, Math.floor((1 << 20) / U) * U);
    let next = 0;
    const lanes = 4;
    await Promise.all(Array.from({ length: lanes }, async () => {
      const buf = this.engine.alloc(chunk);
      try {
        while (next < end) {
          const off = next;
          next += chunk;
          await this.readCheck(t, buf, off, Math.min(chunk, end - off), when);
        }
      } finally { this.engine.free(buf); }
    }));
    const ok = actual === t.model.size;
    if (!ok) this.sizeError(t, t.model.size, actual, when);
    return ok;
  }

  /** Per-file table statistics, summed over every file opened in the run. */
  tableStats(): { serialised: number; tracked: number; waits: number; waitNsTotal: number; waitNsMax: number; emulatedFallocates: number; tableHighWater: number } {
    const all = [...this.fileStats.values(), ...this.targets.map((t) => t.file.stats())];
    return {
      serialised: all.reduce((a, s) => a + s.serialising, 0),
      tracked: all.reduce((a, s) => a + s.tracked, 0),
      waits: all.reduce((a, s) => a + s.waits, 0),
      waitNsTotal: all.reduce((a, s) => a + s.waitNsTotal, 0),
      waitNsMax: all.reduce((a, s) => Math.max(a, s.waitNsMax), 0),
      emulatedFallocates: all.reduce((a, s) => a + s.emulatedFallocates, 0),
      tableHighWater: all.reduce((a, s) => Math.max(a, s.tableHighWater), 0),
    };
  }

  /** Keeps the statistics, closes every file and deletes it. */
  async closeAll(): Promise<void> {
    await this.refreshStats();
    for (const t of this.targets) {
      try { this.fileStats.set(t.name, t.file.stats()); } catch { /* closed */ }
    }
    const ts = this.targets.splice(0);
    for (const t of ts) {
      await t.file.close().catch(() => {});
      rmSync(t.path, { force: true });
    }
  }
}

/** A queue of completed writes waiting to be read back, with bounded memory. */
export class Backlog<T> {
  private items: T[] = [];
  private head = 0;
  private waiters: (() => void)[] = [];
  private closed = false;
  dropped = 0;
  constructor(private readonly cap: number) {}
  push(x: T): void {
    if (this.items.length - this.head >= this.cap) { this.head++; this.dropped++; }
    this.items.push(x);
    this.waiters.shift()?.();
  }
  /** Resolves to the next item, or null once closed and empty. */
  async pop(): Promise<T | null> {
    for (;;) {
      if (this.head < this.items.length) {
        const x = this.items[this.head++];
        if (this.head > 1024 && this.head * 2 > this.items.length) { this.items = this.items.slice(this.head); this.head = 0; }
        return x;
      }
      if (this.closed) return null;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
  close(): void { this.closed = true; for (const w of this.waiters.splice(0)) w(); }
  reopen(): void { this.closed = false; }
  get length(): number { return this.items.length - this.head; }
}
