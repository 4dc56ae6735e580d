/**
 * /proc/PID/stat, read in one place (proc(5)).
 *
 * The second field is the command name in parentheses, and it may hold spaces and ')'. So the
 * fields are counted from the last ')': statFields(text)[i] is field i + 3 of proc(5), e.g.
 * [0] state (3), [6] flags (9), [11] utime (14), [12] stime (15), [13] cutime (16),
 * [14] cstime (17), [19] starttime (22). Times are in clock ticks (clockTicks()).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Index into statFields() of a proc(5) field number. */
export const STAT = { flags: 9 - 3, utime: 14 - 3, stime: 15 - 3, cutime: 16 - 3, cstime: 17 - 3, starttime: 22 - 3 } as const;

/** The fields of a /proc/PID/stat text after the command name: [i] is proc(5) field i + 3. */
export function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).trim().split(' ');
}

/** The command name of a /proc/PID/stat text (field 2, without its parentheses). */
export function statComm(text: string): string {
  return text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
}

/** The fields of /proc/PID/stat, or null when the process is gone or cannot be read. */
export function readStat(pid: number | 'self'): string[] | null {
  try { return statFields(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return null; }
}

let ticks = 0;
/** Clock ticks per second of /proc/PID/stat's times: sysconf(_SC_CLK_TCK), 100 (Linux's USER_HZ) when getconf is missing. */
export function clockTicks(): number {
  if (ticks === 0) {
    ticks = 100;
    try { const t = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()); if (Number.isInteger(t) && t > 0) ticks = t; } catch { /* no getconf */ }
  }
  return ticks;
}

/** Seconds of CPU in stat fields `f` (user + system, every thread), or with `children`, of its waited-for children; NaN if unreadable. */
export function cpuSecondsOf(f: string[], children = false): number {
  const t = children ? Number(f[STAT.cutime]) + Number(f[STAT.cstime]) : Number(f[STAT.utime]) + Number(f[STAT.stime]);
  return Number.isFinite(t) ? t / clockTicks() : NaN;
}

/** Seconds of CPU process `pid` has used (user + system, every thread it has or had), or NaN when it cannot be read. */
export function processCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const f = readStat(pid);
  return f === null ? NaN : cpuSecondsOf(f);
}
