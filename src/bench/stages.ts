// The stages of QD1 NBD requests, from the text of a kernel trace (tracefs's `trace` file) that
// holds the client's and the server's system calls, the block layer's issue and complete events
// and the scheduler's wake-ups. bench/nbd-stages.mjs records the trace; this file only parses it.
//
// A request is one cycle of the client (fio's nbd engine, one request in flight): from the
// send of its 28-byte request header to the send of the next one. Inside it, in order:
//   sent      the client waits in poll()
//   srvRuns   the server's thread runs (its first traced event)
//   issue     the block layer issues the I/O
//   kickEnd   the server's submitting io_uring_enter returns (the virtio notify is inside it)
//   complete  the device's completion (block_rq_complete)
//   srvRuns2  the server's thread runs again
//   reply     the server's reply write(2) (not an 8-byte eventfd write), writev(2) or sendmsg(2) starts
//   fioRuns   the client runs again
// A cycle in which any of them is missing (a trace window's edges, a request that was not
// QD1-shaped) is not counted.

import { parseLine } from './tracefs.js';

/** The stages, in the order of a request, each as the difference of two boundaries. */
export const STAGES: readonly { name: string; from: keyof Cycle; to: keyof Cycle }[] = [
  { name: 'client sends', from: 'start', to: 'sent' },
  { name: 'server wakes', from: 'sent', to: 'srvRuns' },
  { name: 'server submits', from: 'srvRuns', to: 'issue' },
  { name: 'device', from: 'issue', to: 'complete' },
  { name: '  of which the kick', from: 'issue', to: 'kickEnd' },
  { name: 'server woken', from: 'complete', to: 'srvRuns2' },
  { name: 'server replies', from: 'srvRuns2', to: 'reply' },
  { name: 'client wakes', from: 'reply', to: 'fioRuns' },
  { name: 'client reads', from: 'fioRuns', to: 'end' },
  { name: 'whole request', from: 'start', to: 'end' },
];

/** One request's boundaries, in microseconds of trace time. */
export interface Cycle {
  start: number; sent?: number; srvRuns?: number; issue?: number; kickEnd?: number; complete?: number;
  srvRuns2?: number; reply?: number; fioRuns?: number; end?: number;
}

export interface StageReport {
  /** Cycles seen, and those with every boundary (the ones counted). */
  traced: number;
  requests: number;
  /** Per stage name: the median and the mean over the counted requests, microseconds. */
  p50: Record<string, number>;
  mean: Record<string, number>;
}

/** Splits the trace into cycles of the client `clientComm` and the server thread `serverPid`. */
export function parseCycles(text: string, serverPid: number, clientComm = 'fio'): Cycle[] {
  const cycles: Cycle[] = [];
  let c: Cycle | null = null;
  for (const line of text.split('\n')) {
    const e = parseLine(line);
    if (e === null) continue;
    const { comm, pid, us: t, name, rest } = e;
    const client = comm === clientComm, server = pid === serverPid, enter = rest.startsWith('(');
    if (client && name === 'sys_sendto' && enter && rest.includes('len: 0x1c,')) {
      if (c !== null) { c.end = t; cycles.push(c); }
      c = { start: t };
      continue;
    }
    if (c === null) continue;
    if (c.sent === undefined) { if (client && name === 'sys_poll' && enter) c.sent = t; continue; }
    if (c.srvRuns === undefined) { if (server) c.srvRuns = t; continue; }
    if (c.issue === undefined) { if (name === 'block_rq_issue') c.issue = t; continue; }
    if (c.kickEnd === undefined && server && name === 'sys_io_uring_enter' && !enter) c.kickEnd = t;
    if (c.complete === undefined) { if (name === 'block_rq_complete') c.complete = t; continue; }
    if (c.srvRuns2 === undefined) { if (server && t > c.complete) c.srvRuns2 = t; continue; }
    if (c.reply === undefined) {
      const write = name === 'sys_write' && !rest.includes('count: 8)');
      if (server && enter && (write || name === 'sys_sendmsg' || name === 'sys_writev')) c.reply = t;
      continue;
    }
    if (c.fioRuns === undefined && client) c.fioRuns = t;
  }
  return cycles;
}

/** The stages' medians and means over the complete cycles of a trace. */
export function stageReport(text: string, serverPid: number, clientComm = 'fio'): StageReport {
  const cycles = parseCycles(text, serverPid, clientComm);
  const span = (x: Cycle, s: (typeof STAGES)[number]): number => {
    const a = x[s.from], b = x[s.to];
    return a === undefined || b === undefined ? NaN : b - a;
  };
  const ok = cycles.filter((x) => STAGES.every((s) => { const v = span(x, s); return Number.isFinite(v) && v >= 0; }));
  const report: StageReport = { traced: cycles.length, requests: ok.length, p50: {}, mean: {} };
  for (const s of STAGES) {
    const v = ok.map((x) => span(x, s)).sort((a, b) => a - b);
    report.p50[s.name] = v.length > 0 ? v[v.length >> 1] : NaN;
    report.mean[s.name] = v.length > 0 ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
  }
  return report;
}
