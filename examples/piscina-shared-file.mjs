// Several threads writing one file, each through its own ringfence engine, with a piscina pool.
//
//   node examples/piscina-shared-file.mjs [path]
//
// path: the image to write (it is overwritten), on a filesystem that supports O_DIRECT (ext4,
// XFS, btrfs; tmpfs only since Linux 6.6). Default: a temporary file in /var/tmp, removed at
// the end (a path you give is kept).
// Needs piscina (a devDependency of this repo: npm install). Runs in about a second.
//
// What it shows. A 64 MiB image is split into 64 parts of about 1 MiB, and a pool of 4 threads
// writes them (piscina hands the parts out to whichever thread is free). Each pool thread
// starts one Engine of its own on its first task and keeps it for the next ones (see
// examples/piscina-task.mjs). Many part boundaries are deliberately NOT 4 KiB-aligned (odd byte
// offsets), so two neighbouring parts, which different threads may write at the same time, end
// and begin inside the same disk block. The file is opened with O_DIRECT, which can only write
// whole blocks, so the engine writes such an edge by read-modify-write of the block; if two
// threads did that at once, the later write-back would carry a stale copy of the other
// thread's bytes and undo them. It cannot happen because every engine in the process that
// opens the same file (same device + inode) joins ONE process-wide tracked-request table: a
// padded write holds a serialising entry there, and a neighbour's write into that block waits
// for it, whichever thread it comes from. The image is written twice (a cold pass, then a warm
// one with a different pattern through the same threads and engines); after each pass the main
// thread reads the whole file back through its own engine and checks every byte. The last line
// says "verification: PASSED" or "verification: FAILED"; on a failure the exit status is 1.
//
// Closing the pool threads' engines. Piscina has no per-thread teardown hook (no callback runs
// on a pool thread before it exits). This example closes them explicitly, before destroying
// the pool, with one 'close' task per thread that waits at a barrier until every thread has
// one (piscina-task.mjs explains why that reaches each thread exactly once): the file handles
// leave the shared table in order, and we can print each thread's final statistics. If
// something fails first, the pool is simply destroyed with the engines still open: when a
// thread exits with an open engine, ringfence's native cleanup hook drains that thread's
// kernel I/O and takes it out of the shared table, which is safe (docs/GUARANTEES.md), just
// less tidy.
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// Inside this repository 'ringfence' resolves to the package itself (Node's self-reference by
// package name, through package.json "exports"), exactly as it does for an installed user.
import { Engine } from 'ringfence';
import { Piscina } from 'piscina';
import { fillPattern } from './piscina-task.mjs';

const MiB = 1 << 20;
const SIZE = 64 * MiB;
const PARTS = 64;
const THREADS = 4;

const given = process.argv[2];
const path = given ?? join(existsSync('/var/tmp') ? '/var/tmp' : tmpdir(), `ringfence-piscina-${process.pid}.img`);

// Part k is [bound[k], bound[k + 1]). Boundaries k = 3, 6, 9, ... sit exactly on a 1 MiB mark;
// the others are moved by an odd number of bytes (1..4093), so they are aligned to no block size.
const bound = [0];
for (let k = 1; k < PARTS; k++) bound.push(k * MiB + (k % 3 === 0 ? 0 : 1 + 2 * ((k * 1373) % 2047)));
bound.push(SIZE);
const unalignedBounds = bound.filter((b) => b % 4096 !== 0).length;

const engine = await Engine.start({ bufferPoolBytes: 16 << 20 });
let file = null;
let pool = null;
let failed = false;
try {
  // This thread's engine creates the file and gives it its size (sparse: it reads as zeros).
  // It keeps the file open, so this thread is a participant of the shared table as well.
  file = await engine.open(path, { create: true, truncate: true });
  await file.truncate(SIZE);
  const info = file.info();
  console.log(`ringfence + piscina: ${THREADS} pool threads write one ${SIZE / MiB} MiB file through an engine each`);
  console.log(`  file: ${path} (${info.xfsWorkaround.fs}, ${info.direct ? 'O_DIRECT' : 'buffered'}, alignment ${info.alignment} bytes)`);
  console.log(`  parts: ${PARTS} of about 1 MiB; ${unalignedBounds} of the ${PARTS - 1} boundaries are not 4 KiB-aligned`);

  pool = new Piscina({
    filename: new URL('./piscina-task.mjs', import.meta.url).href,
    minThreads: THREADS,
    maxThreads: THREADS,
    idleTimeout: Infinity,       // keep every thread (and its engine) for the whole run
    concurrentTasksPerWorker: 1, // the default; the close barrier relies on it
  });

  // Two passes over the whole image. Pass 1 is cold: each pool thread boots and starts its
  // engine on its first part. Pass 2 overwrites everything with a shifted pattern through the
  // same threads and engines, and padded writes now read blocks full of pass-1 data.
  const seen = [];
  for (const pass of [1, 2]) {
    // Hand every part to the pool at once; piscina queues them and feeds its threads.
    const t0 = performance.now();
    const done = await Promise.all(bound.slice(0, -1).map((start, k) => pool.run({ op: 'write', path, pass, start, end: bound[k + 1] })));
    const secs = (performance.now() - t0) / 1000;
    seen.push(...done.map((d) => d.participants));
    const bad = await verify(pass);
    const how = pass === 1 ? 'cold: the pool threads boot and start their engines' : 'warm: the same threads reuse their engines';
    console.log(`pass ${pass} (${how}): ${SIZE / MiB} MiB in ${secs.toFixed(2)} s, ${(SIZE / 1e6 / secs).toFixed(0)} MB/s; read back: ${bad === 0 ? 'all bytes right' : `${bad} bytes WRONG`}`);
    if (bad !== 0) failed = true;
  }

  // One close task per thread (they block at a shared counter until all have arrived).
  const arrived = new SharedArrayBuffer(4);
  const closed = await Promise.all(Array.from({ length: THREADS }, () => pool.run({ op: 'close', arrived, threads: THREADS })));
  await pool.destroy();
  pool = null;

  const used = closed.filter((c) => c.parts > 0);
  const padded = used.reduce((n, c) => n + c.stats.serialising, 0);
  const waits = used.reduce((n, c) => n + c.stats.waits, 0);
  console.log(`  pool threads that ran parts: ${used.length} of ${THREADS} (parts per thread: ${used.map((c) => c.parts).join(', ')}; engine start + open: ${used.map((c) => c.startMs.toFixed(0)).join(', ')} ms)`);
  console.log(`  table participants seen by tasks: up to ${Math.max(...seen)} (${used.length} pool engines + the main thread's)`);
  console.log(`  padded edge writes (serialising entries): ${padded}, expected ${4 * unalignedBounds} (two per unaligned boundary, per pass)`);
  // A wait: a write found an entry it overlaps (a neighbour's padded write into the same block)
  // and was held back until it finished. How often neighbours meet depends on the scheduling
  // of the run (fewer CPUs than threads: less often); that no byte is lost does not.
  console.log(`  writes that waited for an overlapping entry (neighbours meeting in a block): ${waits}`);
  console.log(`  table participants after the pool threads closed their engines: ${file.stats().tableParticipants} (the main thread)`);
  console.log(failed ? 'verification: FAILED (see the passes above)' : `verification: PASSED, every byte of both passes (2 x ${SIZE}) matched the pattern`);
} finally {
  // On an error, threads may still have their engines open: destroying the pool ends those
  // threads, and the native cleanup hooks tear the engines down (see the header).
  if (pool) await pool.destroy();
  if (file) await file.close();
  await engine.close();
  if (!given) rmSync(path, { force: true });
}
if (failed) process.exitCode = 1;

/** Reads the whole image back through the main thread's engine; returns the wrong bytes' count. */
async function verify(pass) {
  const CHUNK = 4 * MiB;
  const buf = engine.alloc(CHUNK);
  const want = Buffer.alloc(CHUNK);
  let bad = 0;
  try {
    for (let off = 0; off < SIZE; off += CHUNK) {
      const n = await file.read(buf, off);
      if (n !== CHUNK) throw new Error(`short read at ${off}: ${n} of ${CHUNK} bytes`);
      if (fillPattern(want, off, pass).equals(buf)) continue; // the usual case: 4 MiB at once
      for (let i = 0; i < CHUNK; i++) {
        if (buf[i] === want[i]) continue;
        if (bad++ === 0) {
          const k = bound.findLastIndex((b) => b <= off + i);
          console.log(`  pass ${pass}: first wrong byte at offset ${off + i} (part ${k}, [${bound[k]}, ${bound[k + 1]})): ${buf[i]}, expected ${want[i]}`);
        }
      }
    }
  } finally {
    engine.free(buf);
  }
  return bad;
}
