// The stages of QD1 NBD requests, from the text of a kernel trace (tracefs's `trace` file) that
// holds the client's and the server's system calls and the block layer's issue and complete
// events. bench/nbd-stages.mjs records the trace; this file only parses it.
//
// A request is one cycle of the client (fio's nbd engine, one request in flight): from the
// send of its 28-byte request header to the send of the next one. Inside it, in order:
//   sent      the client waits in poll()
//   srvRuns   the server's thread runs (its first traced event)
//   issue     the block layer issues the I/O
//   kickEnd   the server's submitting io_uring_enter returns (the virtio notify is inside it)
//   complete  the device's completion (block_rq_complete)
//   srvRuns2  the server's thread runs again
//   reply     the server's reply write(2) (not an 8-byte eventfd write), writev(2), sendmsg(2) or sendto(2)
//             (ringfence's reply sent by the engine at completion, native/reply.cc) starts
//   fioRuns   the client runs again
// A cycle in which any of them is missing (a trace window's edges, a request that was not
// QD1-shaped) is not counted.
//
// Off the request's path, and reported on its own: how long the server keeps running after its
// reply (the reply call's return to the server's next waiting call): the rest of its work for
// the request (ringfence's JavaScript settling it), and the client's run if the client, woken
// on the server's CPU, preempted it. When the server's own part is longer than the client's
// turnaround, the next request waits for it (in the next cycle's "server wakes"). It may end
// after the client's next send: it is followed into the next cycle.
//
// With the scheduler's sched_wakeup and sched_switch events in the trace, "client wakes" is
// looked into too: the reply's start -> the client's wake-up (on a remote CPU, the wake-up is
// traced when that CPU takes the interrupt), the wake-up -> the client switched in, and what the
// client's CPU ran until then: the server, which it preempted (the server left runnable) or
// which slept, the idle task (the client was woken on a CPU with nothing to run) or another task;
// or the client was woken before it had gone to sleep (no switch-in).

import { dist, isLostLine, parseLine } from './tracefs.js';

/** The stages, in the order of a request, each as the difference of two boundaries. */
export const STAGES: readonly { name: string; from: Boundary; to: Boundary }[] = [
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
  /** The server's reply call returns; the server next waits (its waiting call starts). */
  replyEnd?: number; srvWaits?: number;
  /** The CPU the client sent the request on, and the one the server first ran on for it. */
  clientCpu: number; serverCpu?: number;
  /** The CPU the server sent the reply on, and the one the client ran on when it woke for it. */
  replyCpu?: number; fioCpu?: number;
  /** After the reply (scheduler events): the client's wake-up, its switch-in, and what it took the CPU from. */
  fioWoken?: number; fioIn?: number; fioFrom?: ClientCpuFrom;
}

/** The fields of a Cycle that are times (the stages' boundaries are among them). */
type Boundary = Exclude<{ [K in keyof Cycle]-?: Exclude<Cycle[K], undefined> extends number ? K : never }[keyof Cycle], `${string}Cpu`>;

/** What ran on the client's CPU just before it ran for the reply. */
export type ClientCpuFrom = 'preempted the server' | 'the server slept' | 'idle' | 'another task' | 'fio had not left its CPU';
export const CLIENT_CPU_FROM: readonly ClientCpuFrom[] = ['preempted the server', 'the server slept', 'idle', 'another task', 'fio had not left its CPU'];

export interface StageReport {
  /** Cycles seen, and those with every boundary (the ones counted). */
  traced: number;
  requests: number;
  /** Per stage name: the median and the mean over the counted requests, microseconds. */
  p50: Record<string, number>;
  mean: Record<string, number>;
  /**
   * The share of the counted requests (0 to 1) whose first server event (the return of its wait,
   * or the block layer's issue when it was running already) was on the CPU the client had sent
   * them from. Waking a thread on another CPU takes an inter-processor interrupt (on a VM, an
   * exit); the scheduler decides where each thread runs (bench/nbd-stages.mjs --cpus pins them).
   */
  sameCpu: number;
  /**
   * The share of the counted requests whose client woke for the reply on the CPU the server sent
   * it from: there it runs once the server sleeps or is preempted; elsewhere the server's send
   * must wake another CPU.
   */
  replySameCpu: number;
  /**
   * The server's run after its reply (replyEnd to srvWaits), microseconds: median and mean over
   * the counted requests that have both (NaN: none), and how many those are.
   */
  afterReply: { p50: number; mean: number; requests: number };
  /**
   * From the scheduler's events (requests: the counted ones with the client's wake-up after the
   * reply, and either its switch-in or, woken before it slept, its next event; 0 when the trace
   * has no scheduler events): the median of the reply's start -> the client's wake-up and of the
   * wake-up -> its switch-in, microseconds, and the share (0 to 1) of those requests by what the
   * client's CPU ran until it switched in ("fio had not left its CPU": woken before it slept).
   */
  clientWake: {
    requests: number; wokenP50: number; switchedInP50: number; from: Record<ClientCpuFrom, number>;
    /** Per class: the p50 of "client wakes" (the reply's start -> the client runs) and of the server's run after its reply (NaN: none). */
    byFrom: Record<ClientCpuFrom, { clientWakes: number; afterReply: number }>;
  };
}

/** A system call that waits for events, and returns when the thread has something to do. */
const WAITS = new Set(['sys_epoll_pwait', 'sys_epoll_wait', 'sys_ppoll', 'sys_poll', 'sys_select', 'sys_pselect6']);

const WAKEUP = /^comm=.+ pid=(\d+) prio=/;
const SWITCH = /prev_pid=(\d+) prev_prio=\S+ prev_state=(\S+) ==> next_comm=.+ next_pid=(\d+) next_prio/;

/** "254,0 RS 4096 () 80474472 + 8 ..." -> "254,0 80474472": the device and the sector. */
function blockKey(rest: string): string | null {
  const m = /^(\d+,\d+) \S+ (?:\d+ )?\(.*?\) (\d+) \+/.exec(rest);
  return m === null ? null : `${m[1]} ${m[2]}`;
}

/**
 * Splits the trace into cycles of the client (the thread that sends the 28-byte request headers;
 * command name `clientComm`) and the server thread `serverPid`. "The server runs" is the first
 * return of one of its waiting system calls (epoll_pwait, ppoll, ...) after the client has sent
 * the request (or after the completion): the work it still does for the previous request does
 * not count as the next one's. If none returns before the server acts (it was running already),
 * the boundary is the client's send (or the completion) itself. The device's completion is the
 * block_rq_complete of the issued request's own device and sector.
 */
export function parseCycles(text: string, serverPid: number, clientComm = 'fio'): Cycle[] {
  const cycles: Cycle[] = [];
  let c: Cycle | null = null, client = -1, issued: string | null = null;
  /** The cycle whose server run after the reply is being followed (it may outlive the cycle). */
  let tail: Cycle | null = null;
  let replyCall = '';
  for (const line of text.split('\n')) {
    if (isLostLine(line)) { c = null; tail = null; continue; } // no cycle may span events the buffer dropped
    const e = parseLine(line);
    if (e === null) continue;
    const { comm, pid, cpu, us: t, name, rest } = e;
    const enter = rest.startsWith('(');
    if (tail !== null && pid === serverPid) {
      if (tail.replyEnd === undefined) { if (!enter && name === replyCall) tail.replyEnd = t; }
      else if (enter && WAITS.has(name)) { tail.srvWaits = t; tail = null; }
    }
    if (comm === clientComm && name === 'sys_sendto' && enter && rest.includes('len: 0x1c,') && (client < 0 || pid === client)) {
      client = pid;
      if (c !== null) { c.end = t; cycles.push(c); }
      c = { start: t, clientCpu: cpu };
      continue;
    }
    if (c === null) continue;
    const fromClient = pid === client, server = pid === serverPid;
    const serverWakes = server && !enter && WAITS.has(name);
    if (c.sent === undefined) { if (fromClient && name === 'sys_poll' && enter) c.sent = t; continue; }
    if (c.issue === undefined) {
      if (serverWakes && c.srvRuns === undefined) { c.srvRuns = t; c.serverCpu = cpu; }
      if (name === 'block_rq_issue' && rest.endsWith(`[${comm}]`) && server) {
        // No wait returned since the client finished sending: the server was already running
        // (it woke on the first part of a write, or was finishing the previous request).
        c.srvRuns ??= c.sent;
        c.serverCpu ??= cpu;
        c.issue = t; issued = blockKey(rest);
      }
      continue;
    }
    if (c.complete === undefined) {
      if (c.kickEnd === undefined && server && name === 'sys_io_uring_enter' && !enter) c.kickEnd = t;
      if (name === 'block_rq_complete' && issued !== null && blockKey(rest) === issued) c.complete = t;
      continue;
    }
    if (c.reply === undefined) {
      if (serverWakes && c.srvRuns2 === undefined) c.srvRuns2 = t;
      const write = name === 'sys_write' && !rest.includes('count: 8)');
      if (server && enter && (write || name === 'sys_sendmsg' || name === 'sys_writev' || name === 'sys_sendto')) {
        c.srvRuns2 ??= c.complete; // it was running when the completion came
        c.reply = t; c.replyCpu = cpu;
        tail = c; replyCall = name;
      }
      continue;
    }
    if (c.fioRuns !== undefined) continue;
    // The client's own scheduler lines (it is preempted, or wakes itself) are not it running again.
    if (name === 'sched_wakeup') {
      const m = WAKEUP.exec(rest);
      if (m !== null && Number(m[1]) === client) c.fioWoken ??= t;
    } else if (name === 'sched_switch') {
      if (c.fioWoken === undefined || c.fioIn !== undefined) continue;
      const m = SWITCH.exec(rest);
      if (m !== null && Number(m[3]) === client) {
        const prev = Number(m[1]);
        c.fioIn = t;
        c.fioFrom = prev === serverPid ? (m[2].startsWith('R') ? 'preempted the server' : 'the server slept') : prev === 0 ? 'idle' : 'another task';
      }
    } else if (fromClient) {
      c.fioRuns = t; c.fioCpu = cpu;
      // Woken while it was still on its CPU (it had not gone to sleep yet): no switch-in.
      if (c.fioWoken !== undefined && c.fioIn === undefined) c.fioFrom = 'fio had not left its CPU';
    }
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
  const report: StageReport = { traced: cycles.length, requests: ok.length, p50: {}, mean: {}, afterReply: { p50: NaN, mean: NaN, requests: 0 },
    clientWake: { requests: 0, wokenP50: NaN, switchedInP50: NaN, from: {} as Record<ClientCpuFrom, number>, byFrom: {} as StageReport['clientWake']['byFrom'] },
    sameCpu: ok.length === 0 ? NaN : ok.filter((x) => x.serverCpu === x.clientCpu).length / ok.length,
    replySameCpu: ok.length === 0 ? NaN : ok.filter((x) => x.fioCpu === x.replyCpu).length / ok.length };
  for (const s of STAGES) {
    const d = dist(ok.map((x) => span(x, s)));
    report.p50[s.name] = d.p50;
    report.mean[s.name] = d.mean;
  }
  const afterReply = (v: Cycle[]): number[] => v.filter((x) => x.replyEnd !== undefined && x.srvWaits !== undefined).map((x) => x.srvWaits! - x.replyEnd!);
  const after = afterReply(ok);
  const d = dist(after);
  report.afterReply = { p50: d.p50, mean: d.mean, requests: after.length };
  const woke = ok.filter((x) => x.fioFrom !== undefined);
  const switched = woke.filter((x) => x.fioIn !== undefined);
  const from = Object.fromEntries(CLIENT_CPU_FROM.map((k) => [k, woke.length === 0 ? NaN : woke.filter((x) => x.fioFrom === k).length / woke.length]));
  const byFrom = Object.fromEntries(CLIENT_CPU_FROM.map((k) => {
    const v = woke.filter((x) => x.fioFrom === k);
    return [k, { clientWakes: dist(v.map((x) => x.fioRuns! - x.reply!)).p50, afterReply: dist(afterReply(v)).p50 }];
  }));
  report.clientWake = {
    requests: woke.length, from: from as Record<ClientCpuFrom, number>, byFrom: byFrom as StageReport['clientWake']['byFrom'],
    wokenP50: dist(woke.map((x) => x.fioWoken! - x.reply!)).p50, switchedInP50: dist(switched.map((x) => x.fioIn! - x.fioWoken!)).p50,
  };
  return report;
}
