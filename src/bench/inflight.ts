// How a device's queue fills and drains over time, from the block layer's trace (tracefs
// block_rq_issue and block_rq_complete), for bench/nbd-queues.mjs --trace: the share of the
// traced time the device held 0, 1-4, 5-15, 16-24 or 25 and more requests, and the stretches in
// which it held none. A mean number in flight (/proc/diskstats) cannot tell a steady queue from
// waves (everything at the device, then nothing): this can.

/** The buckets of in-flight counts, in order. */
export const INFLIGHT_BUCKETS = ['0', '1-4', '5-15', '16-24', '25+'] as const;
export type InflightBucket = (typeof INFLIGHT_BUCKETS)[number];

const bucketOf = (n: number): InflightBucket => (n === 0 ? '0' : n <= 4 ? '1-4' : n <= 15 ? '5-15' : n <= 24 ? '16-24' : '25+');

export interface InflightReport {
  /** Requests issued and completed in the trace (reads and writes of the device). */
  issued: number; completed: number;
  /** Microseconds traced, from the first event to the last. */
  spanUs: number;
  /** Share of spanUs at each in-flight count. */
  share: Record<InflightBucket, number>;
  /** Time-weighted mean in flight over spanUs. */
  mean: number;
  /** Stretches with nothing in flight, at least `minGapUs` long, between a completion and the next issue: how many, and their mean length (us; NaN if none). */
  gaps: number; gapMeanUs: number;
}

/**
 * Parses a tracefs text for device `dev` ("MAJOR,MINOR", as the block events print it). Only
 * reads and writes count (the rwbs field holds R or W; flushes, discards and the like do not). A
 * request in flight when the trace starts completes without an issue: the count never goes
 * below 0, so the first moments undercount by at most the depth the trace started at.
 */
export function inflightReport(text: string, dev: string, minGapUs = 20): InflightReport {
  const re = / (\d+\.\d+): block_rq_(issue|complete): (\d+,\d+) (\S+)/;
  const time: Record<InflightBucket, number> = { '0': 0, '1-4': 0, '5-15': 0, '16-24': 0, '25+': 0 };
  let n = 0, last = NaN, first = NaN, weighted = 0, issued = 0, completed = 0;
  let emptySince = NaN, gaps = 0, gapUs = 0;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (m === null || m[3] !== dev || !/[RW]/.test(m[4])) continue;
    const t = Number(m[1]) * 1e6;
    if (Number.isNaN(first)) first = t;
    else { time[bucketOf(n)] += t - last; weighted += n * (t - last); }
    last = t;
    if (m[2] === 'issue') {
      issued++;
      if (n === 0 && !Number.isNaN(emptySince) && t - emptySince >= minGapUs) { gaps++; gapUs += t - emptySince; }
      n++;
    } else {
      completed++;
      n = Math.max(0, n - 1);
      if (n === 0) emptySince = t;
    }
  }
  const spanUs = Number.isNaN(first) ? 0 : last - first;
  const share = Object.fromEntries(INFLIGHT_BUCKETS.map((b) => [b, spanUs > 0 ? time[b] / spanUs : NaN])) as Record<InflightBucket, number>;
  return { issued, completed, spanUs, share, mean: spanUs > 0 ? weighted / spanUs : NaN, gaps, gapMeanUs: gaps > 0 ? gapUs / gaps : NaN };
}
