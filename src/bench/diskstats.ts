// The block layer's own counters for one device, from /proc/diskstats (the kernel's
// Documentation/admin-guide/iostats.rst), as bench/nbd-queues.mjs reads them around a window of
// a fio job: how many reads and writes the device completed, how long each spent from its
// arrival in the block layer to its completion, and so how many were in flight there on
// average. Reading them costs two reads of one proc file per window, nothing in between (no
// tracing, no sampling), so it does not move the run it measures.
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';

/** One line of /proc/diskstats, the fields this module uses (ms fields are milliseconds). */
export interface DiskCounters {
  /** Reads and writes completed. */
  reads: number; writes: number;
  /** Milliseconds spent by all reads, by all writes (arrival to completion, summed over requests). */
  readMs: number; writeMs: number;
  /** Milliseconds the device had at least one request (of any kind) in flight. */
  busyMs: number;
  /** Cache flushes completed (0 on kernels before 5.5, which do not count them). */
  flushes: number;
}

/**
 * The major and minor numbers of a device from stat's `dev` (Linux's dev_t layout: glibc's
 * gnu_dev_major and gnu_dev_minor). Throws for a number above 2^53, which a double cannot hold
 * exactly (the kernel's own dev_t has 32 bits, so stat never gives one).
 */
export function deviceNumbers(dev: number): { major: number; minor: number } {
  if (!(Number.isSafeInteger(dev) && dev >= 0)) throw new RangeError(`deviceNumbers: ${dev} is not a device number stat could give`);
  const lo = dev % 2 ** 32, hi = Math.floor(dev / 2 ** 32);
  const major = ((lo >>> 8) & 0xfff) | ((hi & 0xfffff000) >>> 0);
  const minor = (lo & 0xff) | ((Math.floor(dev / 4096) % 2 ** 32) & 0xffffff00);
  return { major: major >>> 0, minor: minor >>> 0 };
}

/**
 * The counters of device major:minor in the text of /proc/diskstats, or null if it has no line
 * for it (a file on tmpfs, overlayfs or a network filesystem has none). A line has 14 fields
 * since Linux 2.6, 18 since 4.18 (discards) and 20 since 5.5 (flushes).
 */
export function parseDiskstats(text: string, major: number, minor: number): (DiskCounters & { name: string }) | null {
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 14 || Number(f[0]) !== major || Number(f[1]) !== minor) continue;
    const n = (i: number) => Number(f[i]);
    return { name: f[2], reads: n(3), readMs: n(6), writes: n(7), writeMs: n(10), busyMs: n(12), flushes: f.length >= 20 ? n(18) : 0 };
  }
  return null;
}

/** b - a of a counter the kernel prints as 32 bits (its ms fields wrap after 49.7 days of I/O time). */
const delta32 = (a: number, b: number) => (b - a + 2 ** 32) % 2 ** 32;

/**
 * What the device did with reads and writes between two readings `wallMs` apart: their
 * completions per second, their mean time from arrival to completion (us), their mean number in
 * flight (their summed time over the wall time; discards and flushes, which the kernel's
 * weighted time also counts, are left out), the share of the time the device was busy with
 * anything, and the cache flushes completed.
 */
export function diskWindow(a: DiskCounters, b: DiskCounters, wallMs: number): { iops: number; latencyUs: number; inFlight: number; busy: number; flushes: number } {
  if (!(wallMs > 0)) throw new RangeError(`diskWindow: a window of ${wallMs} ms`);
  const ios = (b.reads - a.reads) + (b.writes - a.writes);
  const ms = delta32(a.readMs, b.readMs) + delta32(a.writeMs, b.writeMs);
  return {
    iops: (ios * 1000) / wallMs,
    latencyUs: ios > 0 ? (ms * 1000) / ios : NaN,
    inFlight: ms / wallMs,
    busy: delta32(a.busyMs, b.busyMs) / wallMs,
    flushes: b.flushes - a.flushes,
  };
}

/**
 * "MAJOR,MINOR" of the whole disk that device major:minor is or is a partition of (from
 * /sys/dev/block), as the block layer's trace events name it.
 */
export function wholeDisk(major: number, minor: number): string {
  const sys = `/sys/dev/block/${major}:${minor}`;
  try {
    if (existsSync(`${sys}/partition`)) return readFileSync(`${realpathSync(sys)}/../dev`, 'utf8').trim().replace(':', ',');
  } catch { /* no sysfs: the device itself */ }
  return `${major},${minor}`;
}

/**
 * A reader for the device `path` is on: each call returns its counters now. Throws, saying why,
 * when the path's device has no line in /proc/diskstats.
 */
export function diskCountersFor(path: string): { name: string; major: number; minor: number; disk: string; read(): DiskCounters } {
  const dev = statSync(path, { bigint: true }).dev;
  const { major, minor } = deviceNumbers(Number(dev));
  const first = parseDiskstats(readFileSync('/proc/diskstats', 'utf8'), major, minor);
  if (first === null) {
    throw new Error(`${path} is on device ${major}:${minor}, which has no line in /proc/diskstats (tmpfs, overlayfs or a network filesystem?): give a directory on a block device (bench/nbd-queues.mjs: --dir)`);
  }
  return {
    name: first.name, major, minor, disk: wholeDisk(major, minor),
    read: () => {
      const c = parseDiskstats(readFileSync('/proc/diskstats', 'utf8'), major, minor);
      if (c === null) throw new Error(`device ${major}:${minor} (${first.name}) left /proc/diskstats`);
      return c;
    },
  };
}
