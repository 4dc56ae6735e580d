// `--cpus SERVER:CLIENT` of the NBD benches (bench/nbd-stages.mjs, bench/nbd-ab.mjs): each server
// starts under `taskset -c SERVER` and fio under `taskset -c CLIENT`, so that servers are compared
// at one placement rather than the scheduler's. On the 2-core VM the placement alone moves a
// server's QD32 random reads by a quarter (docs/SERVE-PERF.md, "Requests read into one buffer").
import { availableParallelism } from 'node:os';
import { haveCommand } from '../volume.js';

const CPU_LIST = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;

/**
 * Parses SERVER:CLIENT (two CPU lists as taskset takes them: 0, 1, 0-1, 0,2). Returns the two
 * lists, or a message saying what is wrong (a bad list, a CPU this machine does not have, no
 * taskset). `undefined` in: no pinning.
 */
export function parseCpus(raw: string | undefined): { server?: string; client?: string } | string {
  if (raw === undefined) return {};
  const parts = raw.split(':');
  if (!(parts.length === 2 && parts.every((p) => CPU_LIST.test(p)))) return `--cpus ${raw}: give SERVER:CLIENT, two CPU lists as taskset takes them, e.g. --cpus 0:0 or --cpus 1:0`;
  if (!haveCommand('taskset')) return '--cpus needs taskset (Debian package util-linux)';
  // Every CPU named must be one this process may run on (taskset would fail inside a round).
  const online = availableParallelism();
  for (const list of parts) for (const part of list.split(',')) {
    const [lo, hi = lo] = part.split('-').map(Number);
    if (lo > hi || hi >= online) return `--cpus ${raw}: "${part}" is not a range of CPUs from 0 to ${online - 1} (this machine has ${online})`;
  }
  return { server: parts[0], client: parts[1] };
}

/** `argv` under `taskset -c cpus` (unchanged when cpus is undefined). */
export function pinned(argv: string[], cpus: string | undefined): string[] {
  return cpus === undefined ? argv : ['taskset', '-c', cpus, ...argv];
}
