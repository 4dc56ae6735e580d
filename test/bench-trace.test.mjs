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
  const r = schedReport(SCHED, 'node');
  near(r.windowUs, 100, 'window');
  assert.is(r.wakeToRun.n, 2);
  near(r.wakeToRun.p50, 10, 'woken -> running p50');
  near(r.wakeToRun.mean, 7.5, 'woken -> running mean');
  assert.is(r.runSlice.n, 2);
  near(r.runSlice.mean, 40, 'run length');
  // A CPU's time before its first switch in the window is nobody's: the kworker's 20 us are not counted.
  near(r.cpuPct.node, 80, 'node');
  near(r.cpuPct.idle, 65, 'idle');
  near(r.cpuPct.ksoftirqd, 10, 'ksoftirqd');
  assert.is(r.cpuPct.kworker, undefined);
  // fio ran from 80 us to the end without a switch out: no run counted, no CPU time.
  const f = schedReport(SCHED, 'fio');
  assert.is(f.runSlice.n, 0);
  assert.is(f.wakeToRun.n, 0);
  assert.is(f.cpuPct.fio, undefined);
  near(f.cpuPct.other, 80, 'node as "other" when fio is watched');
});

test.run();
