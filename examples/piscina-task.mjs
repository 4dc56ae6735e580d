// The task module of examples/piscina-shared-file.mjs (read that file first): what each piscina
// pool thread runs. Piscina loads it once per thread, so the module-level `state` below is the
// thread's own: one ringfence Engine per pool thread, started on the thread's first task and
// reused by every later task that lands on the same thread.
//
// Two kinds of task:
//   { op: 'write', path, pass, start, end }  write bytes [start, end) of the image: the pattern
//                                            of that pass (byteAt below)
//   { op: 'close', arrived, threads }        close this thread's engine, then wait at a barrier
//                                            until `threads` close tasks have arrived (below)
// Every task awaits all of its I/O before it returns. That matters with piscina: by default
// (atomics: 'sync') a pool thread is paused between tasks, event loop included, so I/O left
// running after a task returned would not be completed until the thread's next task. An idle
// engine is fine: it holds no table entry, so no other thread ever waits for it.
import { threadId } from 'node:worker_threads';
import { Engine } from 'ringfence';

/**
 * The image's expected content after pass `pass` (1 or 2) of the example: a byte that depends
 * only on its absolute offset and the pass, so any reader can check any range without knowing
 * who wrote it. It repeats every 65521 bytes (a prime: no block size divides it, so a block
 * written to the wrong place shows) and filling a buffer is a few memcpy's. Pass 2 uses the
 * same bytes shifted, so a byte left over from pass 1 is (almost always) wrong for pass 2.
 * Never 0: a byte lost to a stale read-modify-write in pass 1 would come back as the file's old
 * content (zeros: it starts sparse), which can never pass for the right value.
 */
const PERIOD = 65521;
const PAT = new Uint8Array(2 * PERIOD);
for (let i = 0; i < PERIOD; i++) {
  let h = Math.imul(i, 0x9e3779b1);
  h ^= h >>> 15;
  PAT[i] = PAT[i + PERIOD] = ((h >>> 24) % 255) + 1;
}
const shift = (pass) => (pass * 32749) % PERIOD;

export function byteAt(offset, pass) {
  return PAT[(offset + shift(pass)) % PERIOD];
}

/** Fills `buf` with the expected content of the range that starts at `offset`. */
export function fillPattern(buf, offset, pass) {
  for (let i = 0; i < buf.length; i += PERIOD) {
    const o = (offset + shift(pass) + i) % PERIOD;
    buf.set(PAT.subarray(o, o + Math.min(PERIOD, buf.length - i)), i);
  }
  return buf;
}

const BLOCK = 4096;      // split each part at 4 KiB boundaries: the aligned bulk goes straight to
const CHUNK = 256 << 10; // the kernel in 256 KiB writes; only the unaligned edges need padding
const MAX_PART = 2 << 20;

/** This thread's engine and open file, or null before its first task / after 'close'. */
let state = null;

function thread(path) {
  // A promise, not the engine itself, so that even two tasks racing on one thread (with
  // piscina's concurrentTasksPerWorker > 1) would share a single engine.
  state ??= (async () => {
    // mode 'inline' (the default): this thread owns its io_uring, and completions run on this
    // thread's event loop. A small buffer pool: there are several engines in the process.
    const t0 = performance.now();
    const engine = await Engine.start({ bufferPoolBytes: 8 << 20, queueDepth: 32 });
    // The same path (same device + inode) as every other thread and the main thread: the
    // engine joins the file's one process-wide tracked-request table as a new participant.
    const file = await engine.open(path, { create: true });
    return { engine, file, buf: engine.alloc(MAX_PART), parts: 0, startMs: performance.now() - t0 };
  })();
  return state;
}

async function writePart({ path, pass, start, end }) {
  const t = await thread(path);
  const { file, buf } = t;
  const len = end - start;
  if (len > MAX_PART) throw new Error(`part of ${len} bytes is larger than ${MAX_PART}`);
  fillPattern(buf.subarray(0, len), start, pass);

  // The pieces: an unaligned head up to the first 4 KiB boundary, aligned 256 KiB chunks, an
  // unaligned tail after the last boundary. (One f.write(buf, start) of the whole part works
  // too, but then it is all one padded write: copied through a bounce block, and serialising
  // against every request that overlaps any of it.) The head and the tail share a block with
  // the neighbouring parts, which other threads may be writing at the same moment; the engine
  // pads them by read-modify-write (read the block, put these bytes in, write the block back)
  // under a serialising entry in the shared table, so a neighbour's write into the same block
  // waits instead of being overwritten by a stale copy.
  const a = Math.min(end, Math.ceil(start / BLOCK) * BLOCK);
  const b = Math.max(a, Math.floor(end / BLOCK) * BLOCK);
  const pieces = [];
  if (a > start) pieces.push([start, a]);
  if (end > b) pieces.push([b, end]);
  for (let o = a; o < b; o += CHUNK) pieces.push([o, Math.min(b, o + CHUNK)]);
  const written = await Promise.all(pieces.map(([s, e]) => file.write(buf.subarray(s - start, e - start), s)));
  for (let i = 0; i < pieces.length; i++) {
    const [s, e] = pieces[i];
    if (written[i] !== e - s) throw new Error(`short write at ${s}: ${written[i]} of ${e - s} bytes`);
  }
  t.parts++;
  // The table's participants right now: every engine in the process with this file open.
  return { threadId, participants: file.stats().tableParticipants };
}

/**
 * Piscina has no per-thread teardown hook, so the main thread ends the pool with one 'close'
 * task per thread. Each one closes its thread's engine (waiting for nothing: every write task
 * awaited its I/O) and then BLOCKS until all of them have arrived: a thread runs one task at a
 * time (concurrentTasksPerWorker: 1), so N blocked close tasks must sit on N different threads,
 * and every thread's engine gets closed exactly once. The barrier times out rather than hang.
 */
async function closeThread({ arrived, threads }) {
  let result = { threadId, parts: 0, startMs: 0, stats: null };
  if (state) {
    const t = await state;
    state = null;
    result = { threadId, parts: t.parts, startMs: t.startMs, stats: t.file.stats() };
    t.engine.free(t.buf);
    await t.file.close();   // leaves the shared table: the participant count drops by one
    await t.engine.close(); // closes this thread's io_uring
  }
  const counter = new Int32Array(arrived);
  Atomics.add(counter, 0, 1);
  Atomics.notify(counter, 0);
  const deadline = Date.now() + 10_000;
  for (let n; (n = Atomics.load(counter, 0)) < threads;) {
    if (Date.now() > deadline) throw new Error(`close barrier: only ${n} of ${threads} threads arrived`);
    Atomics.wait(counter, 0, n, 100); // blocking is fine: nothing else runs on this thread now
  }
  return result;
}

export default function task(t) {
  if (t.op === 'write') return writePart(t);
  if (t.op === 'close') return closeThread(t);
  throw new Error(`unknown task ${t.op}`);
}
