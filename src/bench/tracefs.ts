// The kernel's tracefs for the benchmarks that look inside a run (bench/nbd-stages.mjs,
// bench/threads.mjs --trace): record a window of events, then parse the text. Root only.
// Whatever a Tracer changes (the events, the per-CPU buffer size, tracing_on) is put back by
// restore(). Only one tracer can use tracefs's main buffer at a time: another tool that uses it
// (trace-cmd, perf's ftrace) must not run meanwhile.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const TRACEFS = '/sys/kernel/tracing';

/** Why tracing cannot be used here, or null when it can. */
export function tracefsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (it writes to tracefs)';
  if (!existsSync(join(TRACEFS, 'trace'))) return `needs tracefs at ${TRACEFS} (mount -t tracefs none ${TRACEFS})`;
  return null;
}

export class Tracer {
  private readonly events: string[];
  private readonly bufferKb: number;
  /** What prepare() changes, as it was: restore() writes it back. */
  private readonly saved: { bufferKb: string | null; on: string; events: string[]; clock: string | null };
  private prepared = false;

  /** `events`: "subsystem/event" names; those this kernel lacks are left out. */
  constructor(events: string[], bufferKb = 40000) {
    this.events = events.filter((e) => existsSync(join(TRACEFS, 'events', e)));
    this.bufferKb = bufferKb;
    const kb = this.readFile('buffer_size_kb');
    // "1408", or "7 (expanded: 1408)" before the buffer was first used; "X" when the CPUs'
    // sizes differ (then it is left as it is).
    const size = /expanded: (\d+)/.exec(kb) ?? /^(\d+)/.exec(kb);
    const clock = /\[(\w+)\]/.exec(this.readFile('trace_clock'));
    this.saved = {
      bufferKb: size === null ? null : size[1], on: this.readFile('tracing_on').trim(),
      events: this.readFile('set_event').split('\n').filter(Boolean), clock: clock === null ? null : clock[1],
    };
  }

  /**
   * Sizes the buffer, picks a clock that is the same on every CPU, and switches the events on,
   * with recording still off. Switching events on patches kernel code and resizing allocates
   * the buffer: do it before a measured window, not in it.
   */
  prepare(): void {
    this.prepared = true;
    this.write('tracing_on', '0');
    if (this.saved.bufferKb !== null) this.write('buffer_size_kb', String(this.bufferKb));
    this.write('trace_clock', 'mono');
    this.write('set_event', '');
    for (const e of this.events) this.write(join('events', e, 'enable'), '1');
    this.write('trace', '');
  }

  /** Starts recording into the (empty) buffer: one small write, cheap inside a measured window. */
  start(): void { this.write('tracing_on', '1'); }

  /** Stops recording (one small write). */
  stop(): void { this.write('tracing_on', '0'); }

  /** The recorded text; then the buffer is emptied (outside a measured window: this blocks for a while). */
  take(): string {
    const text = this.readFile('trace');
    this.write('trace', '');
    return text;
  }

  /** Puts back what prepare() changed, each setting on its own (best effort: this runs at exit). */
  restore(): void {
    if (!this.prepared) return;
    this.prepared = false;
    const put = (f: string, v: string): void => { try { this.write(f, v); } catch { /* tracefs went away */ } };
    put('tracing_on', '0');
    put('set_event', '');
    for (const e of this.saved.events) put('set_event', e + '\n');
    put('trace', '');
    if (this.saved.clock !== null) put('trace_clock', this.saved.clock);
    if (this.saved.bufferKb !== null) put('buffer_size_kb', this.saved.bufferKb);
    put('tracing_on', this.saved.on);
  }

  private readFile(f: string): string { return readFileSync(join(TRACEFS, f), 'utf8'); }
  private write(f: string, v: string): void { writeFileSync(join(TRACEFS, f), v, { flag: f === 'set_event' && v !== '' ? 'a' : 'w' }); }
}

/** A line that says the buffer dropped events (then no interval may span it). */
export function isLostLine(line: string): boolean { return /\[LOST \d+ EVENTS\]/.test(line); }

/** One line of tracefs's text output. */
export interface TraceLine { comm: string; pid: number; cpu: number; us: number; name: string; rest: string }

// "  fio-14224   [000] .....  9504.976970: sys_sendto(fd: 6, ...)"
const LINE = /^\s*(.+)-(\d+)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+):\s+(\w+):?\s?(.*)$/;

/** Parses one line (null for comments and lines of another shape). Times in microseconds. */
export function parseLine(line: string): TraceLine | null {
  if (line.length === 0 || line.startsWith('#')) return null;
  const m = LINE.exec(line);
  if (m === null) return null;
  return { comm: m[1], pid: Number(m[2]), cpu: Number(m[3]), us: Number(m[4]) * 1e6, name: m[5], rest: m[6] };
}

export interface Dist { n: number; p50: number; p90: number; mean: number }

/** The p-th percentile of sorted values, nearest rank (p50 of [5, 10] is 5). */
export function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}

export function dist(values: number[]): Dist {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return { n: 0, p50: NaN, p90: NaN, mean: NaN };
  return { n: v.length, p50: percentile(v, 0.5), p90: percentile(v, 0.9), mean: v.reduce((a, b) => a + b, 0) / v.length };
}

export interface SchedReport {
  /** Microseconds recorded (first to last event). */
  windowUs: number;
  /**
   * The watched tasks: from a wake-up out of sleep to running (a wake-up of a task that was
   * preempted, not asleep, is not one), and each stretch they ran (switched in to switched out).
   */
  wakeToRun: Dist;
  runSlice: Dist;
  /** Per class of task, % of one CPU over the window: "watched", kworker, ksoftirqd, idle, other. */
  cpuPct: Record<string, number>;
  /** Events the buffer dropped (intervals across a loss are not counted). */
  lost: number;
}

/** Which tasks are watched: these thread ids, or else every task with this command name. */
export interface Watched { pids?: readonly number[]; comm?: string }

function taskClass(comm: string, pid: number, w: (comm: string, pid: number) => boolean): string {
  if (w(comm, pid)) return 'watched';
  if (comm.startsWith('kworker/')) return 'kworker';
  if (comm.startsWith('ksoftirqd/')) return 'ksoftirqd';
  if (comm.startsWith('swapper/')) return 'idle';
  return 'other';
}

/**
 * Scheduling of the watched tasks from sched_wakeup and sched_switch events: how long a woken
 * task waited for a CPU, how long it ran each time, and how the CPUs' time split between
 * classes of tasks (a CPU's time before its first switch is its first switch's previous
 * task's, and after its last switch the next task's).
 */
export function schedReport(text: string, watched: Watched): SchedReport {
  const pidSet = watched.pids ? new Set(watched.pids) : null;
  const isWatched = (comm: string, pid: number): boolean => (pidSet !== null ? pidSet.has(pid) : comm === watched.comm);
  const asleep = new Set<number>(), wokenAt = new Map<number, number>(), ranAt = new Map<number, number>();
  const cpuSince = new Map<number, { us: number; comm: string; pid: number }>();
  const wait: number[] = [], slices: number[] = [], byClass: Record<string, number> = {};
  let first = NaN, last = NaN, lost = 0;
  const credit = (comm: string, pid: number, us: number): void => {
    const c = taskClass(comm, pid, isWatched);
    byClass[c] = (byClass[c] ?? 0) + us;
  };
  for (const line of text.split('\n')) {
    if (isLostLine(line)) {
      // Whatever happened in the gap is unknown: forget every open interval.
      lost += Number(/LOST (\d+)/.exec(line)![1]);
      asleep.clear(); wokenAt.clear(); ranAt.clear(); cpuSince.clear();
      continue;
    }
    const e = parseLine(line);
    if (e === null) continue;
    if (Number.isNaN(first)) first = e.us;
    last = e.us;
    if (e.name === 'sched_wakeup') {
      const m = /comm=(.+) pid=(\d+) prio/.exec(e.rest);
      if (m === null) continue;
      const pid = Number(m[2]);
      if (isWatched(m[1], pid) && asleep.delete(pid)) wokenAt.set(pid, e.us);
      continue;
    }
    if (e.name !== 'sched_switch') continue;
    const m = /prev_comm=(.+) prev_pid=(\d+) prev_prio=\S+ prev_state=(\S+) ==> next_comm=(.+) next_pid=(\d+) next_prio/.exec(e.rest);
    if (m === null) continue;
    const prev = m[1], prevPid = Number(m[2]), prevState = m[3], next = m[4], nextPid = Number(m[5]);
    const since = cpuSince.get(e.cpu);
    // Before a CPU's first switch its time is the previous task's (unknown after a loss).
    if (since !== undefined) credit(prev, prevPid, e.us - since.us); else if (lost === 0) credit(prev, prevPid, e.us - first);
    cpuSince.set(e.cpu, { us: e.us, comm: next, pid: nextPid });
    if (isWatched(prev, prevPid)) {
      const r = ranAt.get(prevPid);
      if (r !== undefined) slices.push(e.us - r);
      ranAt.delete(prevPid);
      wokenAt.delete(prevPid);
      // Preempted ("R", "R+") it stays runnable; otherwise it sleeps until a wake-up.
      if (prevState.startsWith('R')) asleep.delete(prevPid); else asleep.add(prevPid);
    }
    if (isWatched(next, nextPid)) {
      const w = wokenAt.get(nextPid);
      if (w !== undefined) wait.push(e.us - w);
      wokenAt.delete(nextPid);
      asleep.delete(nextPid);
      ranAt.set(nextPid, e.us);
    }
  }
  for (const c of cpuSince.values()) credit(c.comm, c.pid, last - c.us);
  const windowUs = Number.isNaN(first) ? 0 : last - first;
  const cpuPct: Record<string, number> = {};
  for (const [k, v] of Object.entries(byClass)) cpuPct[k] = windowUs > 0 ? (100 * v) / windowUs : 0;
  return { windowUs, wakeToRun: dist(wait), runSlice: dist(slices), cpuPct, lost };
}
