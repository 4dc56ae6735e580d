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
  private readonly saved: { bufferKb: string; on: string };
  private readonly bufferKb: number;

  /** `events`: "subsystem/event" names; those this kernel lacks are left out. */
  constructor(events: string[], bufferKb = 40000) {
    this.events = events.filter((e) => existsSync(join(TRACEFS, 'events', e)));
    this.bufferKb = bufferKb;
    const kb = this.readFile('buffer_size_kb');
    // "1408", or "7 (expanded: 1408)" before the buffer was first used.
    this.saved = { bufferKb: (/expanded: (\d+)/.exec(kb) ?? /^(\d+)/.exec(kb) ?? ['', '1408'])[1], on: this.readFile('tracing_on').trim() };
  }

  /**
   * Sizes the buffer and switches the events on, with recording still off. Switching events on
   * patches kernel code and resizing allocates the buffer: do it before a measured window, not in it.
   */
  prepare(): void {
    this.write('tracing_on', '0');
    this.write('buffer_size_kb', String(this.bufferKb));
    this.write('set_event', '');
    for (const e of this.events) this.write(join('events', e, 'enable'), '1');
    this.write('trace', '');
  }

  /** Empties the buffer and starts recording (two small writes). */
  start(): void {
    this.write('trace', '');
    this.write('tracing_on', '1');
  }

  /** Stops recording (one small write: cheap enough inside a measured window). */
  stop(): void { this.write('tracing_on', '0'); }

  /** The recorded text; then the buffer is emptied. */
  take(): string {
    const text = this.readFile('trace');
    this.write('trace', '');
    return text;
  }

  /** Puts tracefs back as it was (best effort: this runs in finally blocks). */
  restore(): void {
    try {
      this.write('tracing_on', '0');
      this.write('set_event', '');
      this.write('trace', '');
      this.write('buffer_size_kb', this.saved.bufferKb);
      this.write('tracing_on', this.saved.on);
    } catch { /* tracefs went away: nothing to restore */ }
  }

  private readFile(f: string): string { return readFileSync(join(TRACEFS, f), 'utf8'); }
  private write(f: string, v: string): void { writeFileSync(join(TRACEFS, f), v); }
}

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

export function dist(values: number[]): Dist {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return { n: 0, p50: NaN, p90: NaN, mean: NaN };
  return { n: v.length, p50: v[v.length >> 1], p90: v[Math.min(v.length - 1, Math.floor(v.length * 0.9))], mean: v.reduce((a, b) => a + b, 0) / v.length };
}

export interface SchedReport {
  /** Microseconds recorded (first to last event). */
  windowUs: number;
  /** The watched tasks (command name `comm`): from their wake-up to running, and each stretch they ran. */
  wakeToRun: Dist;
  runSlice: Dist;
  /** Per class of task, % of one CPU over the window: the watched tasks, loop and other kworkers, ksoftirqd, idle, the rest. */
  cpuPct: Record<string, number>;
}

/** The class a task's command name belongs to, for cpuPct. */
function taskClass(comm: string, watched: string): string {
  if (comm === watched) return watched;
  if (comm.startsWith('kworker/')) return 'kworker';
  if (comm.startsWith('ksoftirqd/')) return 'ksoftirqd';
  if (comm.startsWith('swapper/')) return 'idle';
  return 'other';
}

/**
 * Scheduling of the tasks named `watched` (e.g. "node" or "fio") from sched_wakeup and
 * sched_switch events: how long a woken task waited for a CPU, how long it ran each time, and
 * how the CPUs' time split between classes of tasks. A CPU's time before its first switch in
 * the window is not counted (whose it was is not known).
 */
export function schedReport(text: string, watched: string): SchedReport {
  const wokenAt = new Map<number, number>(), ranAt = new Map<number, number>(), cpuSince = new Map<number, number>();
  const wait: number[] = [], slices: number[] = [], byClass: Record<string, number> = {};
  let first = NaN, last = NaN;
  for (const line of text.split('\n')) {
    const e = parseLine(line);
    if (e === null) continue;
    if (Number.isNaN(first)) first = e.us;
    last = e.us;
    if (e.name === 'sched_wakeup') {
      const w = /comm=(.+) pid=(\d+) prio/.exec(e.rest);
      if (w !== null && w[1] === watched) { const pid = Number(w[2]); if (!wokenAt.has(pid)) wokenAt.set(pid, e.us); }
      continue;
    }
    if (e.name !== 'sched_switch') continue;
    const s = /prev_comm=(.+) prev_pid=(\d+) prev_prio=.* next_comm=(.+) next_pid=(\d+) next_prio/.exec(e.rest);
    if (s === null) continue;
    const prev = s[1], prevPid = Number(s[2]), next = s[3], nextPid = Number(s[4]);
    const since = cpuSince.get(e.cpu);
    if (since !== undefined) { const c = taskClass(prev, watched); byClass[c] = (byClass[c] ?? 0) + (e.us - since); }
    cpuSince.set(e.cpu, e.us);
    if (prev === watched) {
      const r = ranAt.get(prevPid);
      if (r !== undefined) { slices.push(e.us - r); ranAt.delete(prevPid); }
    }
    if (next === watched) {
      const w = wokenAt.get(nextPid);
      if (w !== undefined) { wait.push(e.us - w); wokenAt.delete(nextPid); }
      ranAt.set(nextPid, e.us);
    }
  }
  const windowUs = Number.isNaN(first) ? 0 : last - first;
  const cpuPct: Record<string, number> = {};
  for (const [k, v] of Object.entries(byClass)) cpuPct[k] = windowUs > 0 ? (100 * v) / windowUs : 0;
  return { windowUs, wakeToRun: dist(wait), runSlice: dist(slices), cpuPct };
}
