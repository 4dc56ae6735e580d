// The benchmarks' tracefs parsers: bench/nbd-stages.mjs's (src/bench/stages.ts) on an excerpt of
// a real trace, qemu-nbd (pid 14237) serving fio's QD1 random reads, recorded by the bench on
// this machine; and bench/threads.mjs --trace's (schedReport, src/bench/tracefs.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCycles, stageReport } from '../dist/src/bench/stages.js';
import { schedReport } from '../dist/src/bench/tracefs.js';

const TRACE = `# tracer: nop
#
             fio-14246   [000] .....  9509.577625: sys_sendto(fd: 6, buff: 0x5624981117b0, len: 0x1c, flags: 0x4000, addr: 0, addr_len: 0)
             fio-14246   [000] .....  9509.577632: sys_sendto -> 0x1c
             fio-14246   [000] .....  9509.577633: sys_poll(ufds: 0x7ffc21a11fc0, nfds: 1, timeout_msecs: 0xffffffff)
          <idle>-0       [001] dNh2.  9509.577634: sched_wakeup: comm=qemu-nbd pid=14237 prio=120 target_cpu=001
             fio-14246   [000] d..2.  9509.577635: sched_switch: prev_comm=fio prev_pid=14246 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
        qemu-nbd-14237   [001] .....  9509.577637: sys_ppoll -> 0x1
        qemu-nbd-14237   [001] .....  9509.577639: sys_write(fd: 7, buf: 0x7f7da3efedb0, count: 8)
        qemu-nbd-14237   [001] .....  9509.577639: sys_write -> 0x8
        qemu-nbd-14237   [001] .....  9509.577641: sys_recvmsg(fd: 0xb, msg: 0x7f7da3efedc0, flags: 0)
        qemu-nbd-14237   [001] .....  9509.577643: sys_recvmsg -> 0x1c
        qemu-nbd-14237   [001] .....  9509.577645: sys_io_uring_enter(fd: 9, to_submit: 1, min_complete: 0, flags: 0, argp: 0, argsz: 8)
        qemu-nbd-14237   [001] .....  9509.577648: block_rq_issue: 254,0 RS 4096 () 80474472 + 8 be,0,4 [qemu-nbd]
        qemu-nbd-14237   [001] .....  9509.577681: sys_io_uring_enter -> 0x1
        qemu-nbd-14237   [001] .....  9509.577683: sys_ppoll(ufds: 0x561e5b1e6100, nfds: 6, tsp: 0x7ffee44b18d0, sigmask: 0, sigsetsize: 8)
        qemu-nbd-14237   [001] d..2.  9509.577702: sched_switch: prev_comm=qemu-nbd prev_pid=14237 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
          <idle>-0       [001] d.h1.  9509.577709: irq_handler_entry: irq=36 name=virtio1-req.0
          <idle>-0       [001] ..s1.  9509.577710: block_rq_complete: 254,0 RS () 80474472 + 8 be,0,4 [0]
          <idle>-0       [001] dNs4.  9509.577711: sched_wakeup: comm=qemu-nbd pid=14237 prio=120 target_cpu=001
        qemu-nbd-14237   [001] .....  9509.577713: sys_ppoll -> 0xfffffffffffffdfe
        qemu-nbd-14237   [001] .....  9509.577714: sys_write(fd: 8, buf: 0x561e3e69e3a0, count: 8)
        qemu-nbd-14237   [001] .....  9509.577715: sys_ppoll(ufds: 0x561e5b1e6100, nfds: 7, tsp: 0, sigmask: 0, sigsetsize: 8)
        qemu-nbd-14237   [001] .....  9509.577716: sys_ppoll -> 0x1
        qemu-nbd-14237   [001] .....  9509.577718: sys_sendmsg(fd: 0xb, msg: 0x7f7da3efec20, flags: 0)
        qemu-nbd-14237   [001] .....  9509.577725: sys_sendmsg -> 0x101c
          <idle>-0       [000] dNh2.  9509.577727: sched_wakeup: comm=fio pid=14246 prio=120 target_cpu=000
             fio-14246   [000] .....  9509.577729: sys_poll -> 0x1
             fio-14246   [000] .....  9509.577730: sys_recvfrom(fd: 6, ubuf: 0x56249810f794, size: 0x10, flags: 0, addr: 0, addr_len: 0)
             fio-14246   [000] .....  9509.577738: sys_recvfrom -> 0x1000
             fio-14246   [000] .....  9509.577741: sys_sendto(fd: 6, buff: 0x5624981117b0, len: 0x1c, flags: 0x4000, addr: 0, addr_len: 0)
             fio-14246   [000] .....  9509.577748: sys_sendto -> 0x1c
             fio-14246   [000] .....  9509.577749: sys_poll(ufds: 0x7ffc21a11fc0, nfds: 1, timeout_msecs: 0xffffffff)
        qemu-nbd-14237   [001] .....  9509.577753: sys_ppoll -> 0x1
        qemu-nbd-14237   [001] .....  9509.577761: sys_io_uring_enter(fd: 9, to_submit: 1, min_complete: 0, flags: 0, argp: 0, argsz: 8)
        qemu-nbd-14237   [001] .....  9509.577764: block_rq_issue: 254,0 RS 4096 () 80102856 + 8 be,0,4 [qemu-nbd]
             fio-14246   [000] .....  9509.577900: sys_sendto(fd: 6, buff: 0x5624981117b0, len: 0x1c, flags: 0x4000, addr: 0, addr_len: 0)
`;

const near = (a, b, what) => assert.ok(Math.abs(a - b) < 1e-3, `${what}: ${a} us, expected ${b}`);

test('a QD1 read splits into its stages at the right events', () => {
  const r = stageReport(TRACE, 14237);
  // Two cycles were traced; the second has no completion, no reply and no client wake-up.
  assert.is(r.traced, 2);
  assert.is(r.requests, 1);
  const want = {
    'client sends': 8, 'server wakes': 4, 'server submits': 11, device: 62, '  of which the kick': 33,
    'server woken': 3, 'server replies': 5, 'client wakes': 11, 'client reads': 12, 'whole request': 116,
  };
  for (const [k, v] of Object.entries(want)) { near(r.p50[k], v, `${k} p50`); near(r.mean[k], v, `${k} mean`); }
});

test('the reply is the server\'s sendmsg, not its 8-byte eventfd write; other pids are not the server', () => {
  const [c] = parseCycles(TRACE, 14237);
  near(c.reply - c.start, 93, 'reply (the sendmsg at .577718)');
  near(c.srvRuns - c.start, 12, 'server runs (its ppoll return at .577637, not the idle task\'s wake-up at .577634)');
  // Another pid as the server: no server event, so no cycle is complete.
  assert.is(stageReport(TRACE, 14238).requests, 0);
});
test('stageReport: the server\'s run after its reply, to its next wait, followed past the client\'s next send', () => {
  // The excerpt has no wait of the server's between its reply and the next request: none measured.
  assert.is(stageReport(TRACE, 14237).afterReply.requests, 0);
  assert.ok(Number.isNaN(stageReport(TRACE, 14237).afterReply.p50));
  const wait = (at) => `        qemu-nbd-14237   [001] .....  9509.${at}: sys_ppoll(ufds: 0x561e5b1e6100, nfds: 6, tsp: 0x7ffee44b18d0, sigmask: 0, sigsetsize: 8)\n`;
  const after = (line, at) => TRACE.replace(line, (m) => m + '\n' + wait(at).trimEnd());
  // Before the client's next send: the reply returned at .577725, the wait starts at .577733.
  const early = after('             fio-14246   [000] .....  9509.577730: sys_recvfrom(fd: 6, ubuf: 0x56249810f794, size: 0x10, flags: 0, addr: 0, addr_len: 0)', '577733');
  assert.is.not(early, TRACE);
  let r = stageReport(early, 14237);
  assert.is(r.afterReply.requests, 1);
  near(r.afterReply.p50, 8, 'after the reply (p50)');
  near(r.afterReply.mean, 8, 'after the reply (mean)');
  // After the client's next send (.577741): still the first request's, 20 us.
  const late = after('             fio-14246   [000] .....  9509.577741: sys_sendto(fd: 6, buff: 0x5624981117b0, len: 0x1c, flags: 0x4000, addr: 0, addr_len: 0)', '577745');
  assert.is.not(late, TRACE);
  r = stageReport(late, 14237);
  assert.is(r.afterReply.requests, 1);
  near(r.afterReply.p50, 20, 'after the reply, past the next send');
  assert.is(r.requests, 1, 'the stages are unchanged');
  near(r.p50['whole request'], 116, 'whole request');
});

test('a reply sent with sendto (ringfence\'s reply sent by the engine at completion) is the reply too', () => {
  const t = TRACE.replace('sys_sendmsg(fd: 0xb, msg: 0x7f7da3efec20, flags: 0)', 'sys_sendto(fd: 0x1b, buff: 0x7f7da3efec20, len: 0x10, flags: 0x4040, addr: 0, addr_len: 0)')
    .replace('sys_sendmsg -> 0x101c', 'sys_sendto -> 0x10');
  assert.is.not(t, TRACE);
  const [c] = parseCycles(t, 14237);
  near(c.reply - c.start, 93, 'reply (the sendto at .577718)');
});
test('stageReport: the share of requests the server took up on the client\'s own CPU', () => {
  // In the excerpt, fio sends from CPU 0 and qemu-nbd wakes on CPU 1.
  assert.is(stageReport(TRACE, 14237).sameCpu, 0);
  assert.is(parseCycles(TRACE, 14237)[0].clientCpu, 0);
  assert.is(parseCycles(TRACE, 14237)[0].serverCpu, 1);
  // The same requests with the server on CPU 0 too.
  const same = TRACE.replace(/(qemu-nbd-14237 +)\[001\]/g, '$1[000]');
  assert.is(parseCycles(same, 14237)[0].serverCpu, 0);
  assert.is(stageReport(same, 14237).sameCpu, 1);
});

test('stageReport: the share of replies the client woke for on the server\'s CPU', () => {
  // The reply goes out on CPU 1, fio wakes for it on CPU 0.
  const [c] = parseCycles(TRACE, 14237);
  assert.is(c.replyCpu, 1);
  assert.is(c.fioCpu, 0);
  assert.is(stageReport(TRACE, 14237).replySameCpu, 0);
  // Only the reply moved to fio's CPU: the request was still taken up on CPU 1.
  const moved = TRACE.replace('qemu-nbd-14237   [001] .....  9509.577718: sys_sendmsg(', 'qemu-nbd-14237   [000] .....  9509.577718: sys_sendmsg(');
  assert.is.not(moved, TRACE);
  const r = stageReport(moved, 14237);
  assert.is(r.replySameCpu, 1);
  assert.is(r.sameCpu, 0);
});

test('stageReport: how the client got a CPU after the reply, from the scheduler\'s events', () => {
  // The excerpt has fio's wake-up (.577727) but no switch-in before fio's next event: as if it was
  // woken before it had gone to sleep.
  let r = stageReport(TRACE, 14237);
  assert.is(r.requests, 1);
  assert.is(r.clientWake.requests, 1);
  assert.is(r.clientWake.from['fio had not left its CPU'], 1);
  near(r.clientWake.wokenP50, 9, 'woken after the reply\'s start');
  assert.ok(Number.isNaN(r.clientWake.switchedInP50), 'no switch-in');
  // No wake-up of fio's traced after the reply (no scheduler events): not counted.
  const none = TRACE.replace('          <idle>-0       [000] dNh2.  9509.577727: sched_wakeup: comm=fio pid=14246 prio=120 target_cpu=000\n', '');
  assert.is.not(none, TRACE);
  assert.is(stageReport(none, 14237).clientWake.requests, 0);
  assert.ok(Number.isNaN(stageReport(none, 14237).clientWake.wokenP50));
  const WOKEN = '          <idle>-0       [000] dNh2.  9509.577727: sched_wakeup: comm=fio pid=14246 prio=120 target_cpu=000';
  const sw = (cpu, prev, pid, state, at) => `${prev.padStart(16)}-${pid}   [00${cpu}] d..2.  9509.${at}: sched_switch: prev_comm=${prev} prev_pid=${pid} prev_prio=120 prev_state=${state} ==> next_comm=fio next_pid=14246 next_prio=120`;
  // Woken on the idle CPU 0, switched in there 1 us later.
  const idle = TRACE.replace(WOKEN, WOKEN + '\n' + sw(0, 'swapper/0', 0, 'R', '577728'));
  assert.is.not(idle, TRACE);
  r = stageReport(idle, 14237);
  assert.is(r.clientWake.requests, 1);
  near(r.clientWake.wokenP50, 9, 'woken after the reply\'s start (.577718)');
  near(r.clientWake.switchedInP50, 1, 'switched in after the wake-up');
  assert.equal(r.clientWake.from, { 'preempted the server': 0, 'the server slept': 0, idle: 1, 'another task': 0, 'fio had not left its CPU': 0 });
  near(r.clientWake.byFrom.idle.clientWakes, 11, 'client wakes (the reply at .577718 to fio\'s poll return at .577729)');
  assert.ok(Number.isNaN(r.clientWake.byFrom.idle.afterReply), 'no wait of the server\'s after the reply in the excerpt');
  assert.ok(Number.isNaN(r.clientWake.byFrom['the server slept'].clientWakes));
  // Woken by the server's send on its own CPU 1: it preempts the server (left runnable), or runs
  // once the server sleeps.
  const onServer = (state, prevPid = 14237) => TRACE.replace(WOKEN, '')
    .replace('qemu-nbd-14237   [001] .....  9509.577725: sys_sendmsg -> 0x101c', (m) =>
      `        qemu-nbd-14237   [001] d..2.  9509.577720: sched_wakeup: comm=fio pid=14246 prio=120 target_cpu=001\n${m}\n${sw(1, 'qemu-nbd', prevPid, state, '577726')}`);
  assert.is.not(onServer('R+'), TRACE);
  r = stageReport(onServer('R+'), 14237);
  near(r.clientWake.wokenP50, 2, 'woken inside the sendmsg');
  near(r.clientWake.switchedInP50, 6, 'switched in when the sendmsg returned');
  assert.is(r.clientWake.from['preempted the server'], 1);
  assert.is(stageReport(onServer('S'), 14237).clientWake.from['the server slept'], 1);
  // Another thread of the server's process, or any other task, before it.
  assert.is(stageReport(onServer('R', 14240), 14237).clientWake.from['another task'], 1);
  // The first wake-up after the reply counts, and a switch-in only after it.
  const twice = idle.replace(WOKEN, WOKEN + '\n' + WOKEN.replace('577727', '577728'));
  assert.is.not(twice, idle);
  near(stageReport(twice, 14237).clientWake.wokenP50, 9, 'the first wake-up');
  const early = TRACE.replace(WOKEN, sw(0, 'swapper/0', 0, 'R', '577726') + '\n' + WOKEN);
  assert.is.not(early, TRACE);
  r = stageReport(early, 14237);
  assert.is(r.clientWake.requests, 1);
  assert.is(r.clientWake.from['fio had not left its CPU'], 1, 'a switch-in before the wake-up is not the one');
  // The client's own scheduler lines after the reply (preempted, before its poll returns) are
  // not it running for the reply: the stages stay as they are.
  const self = idle.replace('             fio-14246   [000] .....  9509.577729: sys_poll -> 0x1', (m) =>
    `             fio-14246   [000] d..2.  9509.577728: sched_switch: prev_comm=fio prev_pid=14246 prev_prio=120 prev_state=R+ ==> next_comm=kworker/0:1 next_pid=7 next_prio=120\n${m}`);
  assert.is.not(self, idle);
  r = stageReport(self, 14237);
  near(r.p50['client wakes'], 11, 'client wakes (to fio\'s poll return)');
  assert.is(r.clientWake.from.idle, 1);
  // A wake-up and a switch-in of another task are not the client's.
  const other = idle.replace('comm=fio pid=14246 prio', 'comm=fio pid=14247 prio');
  assert.is(stageReport(other, 14237).clientWake.requests, 0);
  assert.is(stageReport(idle.replace('next_pid=14246', 'next_pid=14247'), 14237).clientWake.from['fio had not left its CPU'], 1);
});

const SCHED = `# tracer: nop
          <idle>-0       [001] dNh2.  100.000010: sched_wakeup: comm=node pid=500 prio=120 target_cpu=001
          <idle>-0       [001] d..2.  100.000015: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=node next_pid=500 next_prio=120
     kworker/0:1-7       [000] d..2.  100.000020: sched_switch: prev_comm=kworker/0:1 prev_pid=7 prev_prio=120 prev_state=I ==> next_comm=ksoftirqd/0 next_pid=14 next_prio=120
     ksoftirqd/0-14      [000] d..2.  100.000030: sched_switch: prev_comm=ksoftirqd/0 prev_pid=14 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
            node-500     [001] d..2.  100.000055: sched_switch: prev_comm=node prev_pid=500 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
          <idle>-0       [001] dNh2.  100.000060: sched_wakeup: comm=node pid=500 prio=120 target_cpu=001
          <idle>-0       [001] d..2.  100.000070: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=node next_pid=500 next_prio=120
          <idle>-0       [000] d..2.  100.000080: sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=fio next_pid=600 next_prio=120
            node-500     [001] d..2.  100.000110: sched_switch: prev_comm=node prev_pid=500 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
`;

test('schedReport: wake-up to running, run lengths and CPU time by class', () => {
  const r = schedReport(SCHED, { comm: 'node' });
  near(r.windowUs, 100, 'window');
  // The wake-up at 10 us is of a task not seen asleep (its state before the window is unknown):
  // only the one at 60 us counts, 10 us before it ran.
  assert.is(r.wakeToRun.n, 1);
  near(r.wakeToRun.p50, 10, 'woken -> running');
  assert.is(r.runSlice.n, 2);
  near(r.runSlice.mean, 40, 'run length');
  // Two CPUs over 100 us: 200 us in all, before a CPU's first switch its previous task's, after
  // its last the next task's (fio, from 80 us to the end).
  near(r.cpuPct.watched, 80, 'node');
  near(r.cpuPct.idle, 70, 'idle');
  near(r.cpuPct.kworker, 10, 'kworker');
  near(r.cpuPct.ksoftirqd, 10, 'ksoftirqd');
  near(r.cpuPct.other, 30, 'fio, not watched');
  // The same by thread id.
  assert.equal(schedReport(SCHED, { pids: [500] }), r);
  // fio ran from 80 us to the end without a switch out: no run counted, its CPU time counted.
  const f = schedReport(SCHED, { comm: 'fio' });
  assert.is(f.runSlice.n, 0);
  assert.is(f.wakeToRun.n, 0);
  near(f.cpuPct.watched, 30, 'fio watched');
  near(f.cpuPct.other, 80, 'node as "other" when fio is watched');
});

test('schedReport: a wake-up of a preempted task is not a wake-up; nothing spans lost events', () => {
  const t = (us, what) => `            node-500     [001] d..2.  100.000${String(us).padStart(3, '0')}: ${what}`;
  const sw = (prev, pid, state, next, npid) => `sched_switch: prev_comm=${prev} prev_pid=${pid} prev_prio=120 prev_state=${state} ==> next_comm=${next} next_pid=${npid} next_prio=120`;
  const text = [
    t(10, sw('node', 500, 'S', 'swapper/1', 0)),           // asleep
    t(20, 'sched_wakeup: comm=node pid=500 prio=120 target_cpu=001'),
    t(30, sw('swapper/1', 0, 'R', 'node', 500)),           // woken 20 -> ran 30: 10 us
    t(40, sw('node', 500, 'R+', 'kworker/1:1', 7)),        // preempted, still runnable
    t(45, 'sched_wakeup: comm=node pid=500 prio=120 target_cpu=001'),
    t(60, sw('kworker/1:1', 7, 'I', 'node', 500)),         // back after preemption: not a wake-up
    t(70, sw('node', 500, 'S', 'swapper/1', 0)),
    t(75, 'sched_wakeup: comm=node pid=500 prio=120 target_cpu=001'),
    'CPU:1 [LOST 12 EVENTS]',
    t(90, sw('swapper/1', 0, 'R', 'node', 500)),           // its wake-up is forgotten with the loss
  ].join('\n');
  const r = schedReport(text, { comm: 'node' });
  assert.equal(r.wakeToRun.n, 1);
  near(r.wakeToRun.p50, 10, 'the one real wake-up');
  assert.equal(r.runSlice.n, 2); // 30-40 and 60-70; the run from 90 us has no end
  assert.is(r.lost, 12);
});

test('parseCycles: a server already running when the client finishes sending starts at the send', () => {
  // The server's wake-up at .577637 moved before fio's poll (.577633), as when it wakes on the
  // header of a write while fio still sends the payload.
  const lines = TRACE.split('\n');
  const wake = lines.findIndex((l) => l.includes('9509.577637: sys_ppoll -> 0x1'));
  const poll = lines.findIndex((l) => l.includes('9509.577633: sys_poll('));
  const moved = lines[wake].replace('.577637', '.577632');
  const rest = lines.filter((_, i) => i !== wake);
  const early = [...rest.slice(0, poll), moved, ...rest.slice(poll)].join('\n');
  const [c] = parseCycles(early, 14237);
  near(c.srvRuns - c.sent, 0, 'server wakes');
  near(c.issue - c.srvRuns, 15, 'server submits, from the send');
  assert.is(stageReport(early, 14237).requests, 1);
  // Its CPU is then the one of the block layer's issue (qemu-nbd's, CPU 1).
  assert.is(c.serverCpu, 1);
  const onZero = early.replace(/(qemu-nbd-14237 +)\[001\](.*block_rq_issue)/, '$1[000]$2');
  assert.is(parseCycles(onZero, 14237)[0].serverCpu, 0, 'the issue\'s CPU, not a wait\'s');
});

test('parseCycles: the completion is the issued request\'s own; a cycle across lost events is dropped', () => {
  const lines = TRACE.split('\n');
  const at = lines.findIndex((l) => l.includes('block_rq_complete'));
  // Another disk's completion just before: not this request's.
  const other = lines[at].replace('254,0 RS () 80474472', '254,16 WS () 123456');
  const withOther = [...lines.slice(0, at), other.replace('.577710', '.577700'), ...lines.slice(at)].join('\n');
  near(parseCycles(withOther, 14237)[0].complete - parseCycles(TRACE, 14237)[0].complete, 0, 'completion');
  const lost = [...lines.slice(0, at), 'CPU:1 [LOST 3 EVENTS]', ...lines.slice(at)].join('\n');
  assert.is(stageReport(lost, 14237).requests, 0);
});

test.run();
