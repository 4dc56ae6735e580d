// bench/nbd-queues.mjs's reading of /proc/diskstats (src/bench/diskstats.ts): the device of a
// path, its line, and what a window between two readings says.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync } from 'node:fs';
import { deviceNumbers, diskWindow, parseDiskstats } from '../dist/src/bench/diskstats.js';

// Two readings of a virtio disk 2 s apart (numbers made up, in the kernel's 20-field format),
// and the lines around it: a loop device, zram and a partition, which must not be taken for it;
// a 14-field line (kernels before 4.18) and a line cut short.
const A = ` 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   7       0 loop0 120 0 960 35 0 0 0 0 0 40 35 0 0 0 0 0 0
 254       0 vda 473413 58268 8898871 82259 172067 22896 3274400 95418 0 19692 178048 4275 78 538200 337 887 33
 254       1 vda1 400000 58000 8000000 80000 170000 22000 3200000 95000 0 19000 175000 4000 70 530000 0 0 0
   8       0 sda 1000 0 8000 500 2000 0 16000 900 0 1200 1400
   8      16 sdb 1000 0 8000`;
// 132000 reads and 100 writes more; their ms up by 46200 and 200; busy up by 1990 ms; 3 flushes
// (55 ms) and discards (700 ms) add 755 ms to the weighted time, which must not count.
const B = ` 254       0 vda 605413 58268 9954871 128459 172167 22896 3275200 95618 31 21682 225203 4285 78 548200 1037 890 88`;

test('parseDiskstats takes the line of major:minor and no other, in every format', () => {
  assert.equal(parseDiskstats(A, 254, 0), { name: 'vda', reads: 473413, readMs: 82259, writes: 172067, writeMs: 95418, busyMs: 19692, flushes: 887 });
  assert.is(parseDiskstats(A, 254, 1).name, 'vda1');
  assert.is(parseDiskstats(A, 7, 0).name, 'loop0');
  assert.equal(parseDiskstats(A, 8, 0), { name: 'sda', reads: 1000, readMs: 500, writes: 2000, writeMs: 900, busyMs: 1200, flushes: 0 });
  assert.is(parseDiskstats(A, 8, 16), null); // too short to be read
  assert.is(parseDiskstats(A, 254, 2), null);
  assert.is(parseDiskstats('', 254, 0), null);
});

test('diskWindow: reads and writes per second, their time each and in flight, busy share, flushes', () => {
  const w = diskWindow(parseDiskstats(A, 254, 0), parseDiskstats(B, 254, 0), 2000);
  assert.is(w.iops, 132100 / 2);
  assert.ok(Math.abs(w.latencyUs - (46400 * 1000) / 132100) < 1e-9);
  assert.is(w.inFlight, 46400 / 2000); // not the weighted time's 47155 / 2000
  assert.is(w.busy, 1990 / 2000);
  assert.is(w.flushes, 3);
  const same = diskWindow(parseDiskstats(A, 254, 0), parseDiskstats(A, 254, 0), 1000);
  assert.equal([same.iops, Number.isNaN(same.latencyUs), same.inFlight, same.busy, same.flushes], [0, true, 0, 0, 0]);
  assert.throws(() => diskWindow(parseDiskstats(A, 254, 0), parseDiskstats(B, 254, 0), 0), /window of 0 ms/);
});

test('diskWindow: the kernel\'s 32-bit ms counters wrapping inside the window', () => {
  const a = { reads: 10, readMs: 2 ** 32 - 100, writes: 0, writeMs: 5, busyMs: 2 ** 32 - 10, flushes: 0 };
  const b = { reads: 20, readMs: 300, writes: 0, writeMs: 5, busyMs: 990, flushes: 0 };
  const w = diskWindow(a, b, 1000);
  assert.equal([w.inFlight, w.latencyUs, w.busy], [0.4, 40000, 1]);
});

// glibc's gnu_dev_makedev, in numbers rather than 64-bit integers.
const makedev = (major, minor) => (minor & 0xff) + (major & 0xfff) * 2 ** 8 + Math.floor(minor / 256) * 2 ** 20 + Math.floor(major / 4096) * 2 ** 44;

test('deviceNumbers follows glibc\'s dev_t layout, small and large numbers', () => {
  assert.equal(deviceNumbers(0xfe00), { major: 254, minor: 0 });
  assert.equal(deviceNumbers(0x0701), { major: 7, minor: 1 });
  for (const [major, minor] of [[3, 261], [259, 5], [0x1fff, 0x12345], [0xfffff, 0xfffff], [8, 0x3456789]]) {
    assert.equal(deviceNumbers(makedev(major, minor)), { major, minor }, `${major}:${minor}`);
  }
  assert.throws(() => deviceNumbers(2 ** 53 + 2), /not a device number/);
});

test('deviceNumbers of stat("/").dev is the root mount\'s major:minor in /proc/self/mountinfo', () => {
  // mountinfo: ID PARENT MAJOR:MINOR ROOT MOUNT-POINT ...; the last mount on "/" is the one seen.
  const root = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[4] === '/').pop();
  const { major, minor } = deviceNumbers(statSync('/').dev);
  assert.is(`${major}:${minor}`, root[2]);
});

test.run();
