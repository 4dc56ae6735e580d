// How a device's queue fills and drains over time, from the block layer's trace (tracefs
// block_rq_issue, block_rq_requeue and block_rq_complete), for bench/nbd-queues.mjs --trace: the
// share of the traced time the device held 0, 1-4, 5-15, 16-24 or 25 and more reads and writes,
// and the stretches in which it held none. A mean number in flight (/proc/diskstats) cannot tell
// a steady queue from waves (everything at the device, then nothing): this can.
import { isLostLine } from './tracefs.js';

/** The buckets of in-flight counts, in order. */
export const INFLIGHT_BUCKETS = ['0', '1-4', '5-15', '16-24', '25+'] as const;
export type InflightBucket = (typeof INFLIGHT_BUCKETS)[number];

const bucketOf = (n: number): InflightBucket => (n === 0 ? '0' : n <= 4 ? '1-4' : n <= 15 ? '5-15' : n <= 24 ? '16-24' : '25+');

export interface InflightReport {
  /** Reads and writes issued and completed in the trace. */
  issued: number; completed: number;
  /** Those in flight when the trace started (completed in it with no issue in it). */
  atStart: number;
  /** Microseconds traced, from the first event to the last. */
  spanUs: number;
  /** Share of spanUs at each in-flight count. */
  share: Record<InflightBucket, number>;
  /** Time-weighted mean in flight over spanUs. */
  mean: number;
  /** Stretches with nothing in flight, at least `minGapUs` long, from a completion to the next issue: how many, and their mean length (us; NaN if none). */
  gaps: number; gapMeanUs: number;
  /** Events the trace buffer dropped: with any, the figures are not to be trusted. */
  lost: number;
}

// "... 3156.029400: block_rq_complete: 254,0 RS () 498041912 + 8 be,0,4 [0]"
// "... 3156.029510: block_rq_issue: 254,0 RS 4096 () 497931208 + 8 be,0,4 [node]"
const EVENT = / (\d+\.\d+): block_rq_(issue|requeue|complete): (\d+,\d+) (\S+) .*?\) (\d+) \+ (\d+)/;

interface Ev { t: number; kind: 'issue' | 'requeue' | 'complete'; key: string }

/**
 * Parses a tracefs text for device `dev` ("MAJOR,MINOR" of the whole disk, as the block events
 * print it; a partition's I/O shows under its disk). Counts reads and writes with data (the rwbs
 * field holds R or W, and the length is not 0); flushes and discards do not count, so a device
 * busy only with a flush counts as empty. Requests are matched by sector and length: one that
 * completes with no issue in the trace was in flight when it started, and counts from the first
 * event; a requeued one leaves the count until it is issued again.
 */
export function inflightReport(text: string, dev: string, minGapUs = 20): InflightReport {
  const evs: Ev[] = [];
  let lost = 0;
  for (const line of text.split('\n')) {
    if (isLostLine(line)) { lost += Number(/LOST (\d+)/.exec(line)![1]); continue; }
    const m = EVENT.exec(line);
    if (m === null || m[3] !== dev || !/[RW]/.test(m[4]) || m[6] === '0') continue;
    evs.push({ t: Number(m[1]) * 1e6, kind: m[2] as Ev['kind'], key: `${m[5]}+${m[6]}` });
  }
  // First pass: completions with no issue before them in the trace were in flight at its start.
  const open = new Map<string, number>();
  const take = (k: string): boolean => { const c = open.get(k) ?? 0; if (c === 0) return false; if (c === 1) open.delete(k); else open.set(k, c - 1); return true; };
  let atStart = 0;
  for (const e of evs) {
    if (e.kind === 'issue') open.set(e.key, (open.get(e.key) ?? 0) + 1);
    else if (!take(e.key) && e.kind === 'complete') atStart++;
  }
  const time: Record<InflightBucket, number> = { '0': 0, '1-4': 0, '5-15': 0, '16-24': 0, '25+': 0 };
  let n = atStart, last = NaN, weighted = 0, issued = 0, completed = 0;
  let emptySince = NaN, gaps = 0, gapUs = 0; // a stretch counts from a completion only
  for (const e of evs) {
    if (!Number.isNaN(last)) { time[bucketOf(n)] += e.t - last; weighted += n * (e.t - last); }
    last = e.t;
    if (e.kind === 'issue') {
      issued++;
      if (n === 0 && !Number.isNaN(emptySince) && e.t - emptySince >= minGapUs) { gaps++; gapUs += e.t - emptySince; }
      n++;
    } else {
      if (e.kind === 'complete') completed++;
      n = Math.max(0, n - 1);
      if (n === 0) emptySince = e.t;
    }
  }
  const spanUs = evs.length > 0 ? last - evs[0].t : 0;
  const share = Object.fromEntries(INFLIGHT_BUCKETS.map((b) => [b, spanUs > 0 ? time[b] / spanUs : NaN])) as Record<InflightBucket, number>;
  return { issued, completed, atStart, spanUs, share, mean: spanUs > 0 ? weighted / spanUs : NaN, gaps, gapMeanUs: gaps > 0 ? gapUs / gaps : NaN, lost };
}
