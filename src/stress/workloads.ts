// The four stress workloads. Each generates its operations from seeded streams (so a seed
// names an operation stream), runs them with real concurrency through the engine, keeps a
// model of every file, reads completed writes back while it runs, and verifies every file
// completely at the end (and at every epoch boundary, when a file is recycled).
import { Backlog, type StressContext, type Stream, type Target, type WorkloadName } from './context.js';
import { DOp } from './rng.js';
import { MIN_UNIT, fillUnit } from './verify.js';

/** File-size limits per epoch (fixed, so that a seed always names the same stream). */
export const QCOW2_FILE_LIMIT = 128 << 20;
export const EOF_FILE_LIMIT = 8 << 20;
export const MIXED_REGION = 16 << 20;

/** Bytes of free space a workload needs on the volume. */
export function spaceNeeded(workload: WorkloadName, qd: number, clusterSize: number, blockSize: number): number {
  switch (workload) {
    case 'qcow2-alloc': return Math.max(QCOW2_FILE_LIMIT, clusterSize * 4) + (16 << 20);
    case 'append-race': return qd * blockSize * 4 + (1 << 20);
    case 'eof-extend': return qd * (EOF_FILE_LIMIT + blockSize) + (1 << 20);
    case 'mixed': return Math.max(MIXED_REGION, 64 * blockSize) + 16 * blockSize * 2 + (1 << 20);
  }
}

export function defaultQd(workload: WorkloadName): number {
  return workload === 'append-race' || workload === 'eof-extend' ? 4 : 8;
}

export async function runWorkload(ctx: StressContext): Promise<void> {
  switch (ctx.params.workload) {
    case 'qcow2-alloc': return qcow2Alloc(ctx);
    case 'append-race': return appendRace(ctx);
    case 'eof-extend': return eofExtend(ctx);
    case 'mixed': return mixed(ctx);
  }
}

/** Fills `units` consecutive units at file offset `off` into buf, one seq each (from seq0). */
function fillRun(ctx: StressContext, buf: Uint8Array, unit: number, off: number, units: number, seq0: number): void {
  for (let i = 0; i < units; i++) fillUnit(buf, i * unit, unit, off + i * unit, seq0 + i, ctx.params.seed);
}

/** Guards an engine call: the first failure stops the run (and is reported). */
function fail(ctx: StressContext, err: unknown): never {
  if (ctx.fatal === null) ctx.fatal = err as Error;
  throw err;
}

// ---- qcow2-alloc --------------------------------------------------------------------------

interface ClusterPlan { k: number; zeroSeq: number; start: number; blocks: number; seq0: number }

/**
 * qcow2's handle_alloc_space: writers allocate clusters at the growing end of one file. Each
 * takes the next cluster index, zero-writes the whole new cluster (past EOF), then writes a
 * run of data blocks into it, while the other writers do the same on later clusters.
 */
async function qcow2Alloc(ctx: StressContext): Promise<void> {
  const { clusterSize: C, blockSize: bs, qd } = ctx.params;
  const bpc = C / bs;
  const [stream] = ctx.makeStreams(1);
  const t = await ctx.open('qcow2-alloc.img', bs);
  checkAlignment(ctx, t, bs);
  const epochClusters = Math.max(4, Math.floor(QCOW2_FILE_LIMIT / C));
  let next = 0;

  const plan = (): ClusterPlan | null => {
    if (next >= epochClusters || !stream.canGenerate(2)) return null;
    const k = next++;
    const zeroSeq = stream.nextSeq();
    stream.digest.add(DOp.ZERO, k * C, C, zeroSeq);
    // A guest write that covers part of the cluster (qcow2 zero-fills the rest).
    const start = stream.rng.below(bpc);
    const blocks = 1 + stream.rng.below(bpc - start);
    const seq0 = stream.nextSeq();
    for (let i = 1; i < blocks; i++) stream.nextSeq();
    stream.digest.add(DOp.WRITE, k * C + start * bs, blocks * bs, seq0);
    return { k, zeroSeq, start, blocks, seq0 };
  };

  for (;;) {
    const backlog = new Backlog<{ off: number; len: number }>(4096);
    const writers = Array.from({ length: qd }, async () => {
      const buf = ctx.engine.alloc(C);
      try {
        for (let p = plan(); p !== null; p = plan()) {
          const base = p.k * C;
          await t.file.writeZeroes(base, C).catch((e) => fail(ctx, e));
          ctx.ops++; ctx.bytesZeroed += C;
          t.model.zero(base, C);
          const off = base + p.start * bs, len = p.blocks * bs;
          fillRun(ctx, buf, bs, off, p.blocks, p.seq0);
          await t.file.write(buf.subarray(0, len), off).catch((e) => fail(ctx, e));
          ctx.ops++; ctx.bytesWritten += len;
          for (let i = 0; i < p.blocks; i++) t.model.write(off / bs + i, p.seq0 + i);
          backlog.push({ off, len });
        }
      } finally { ctx.engine.free(buf); }
    });
    const verifiers = Array.from({ length: Math.max(1, qd >> 2) }, async () => {
      const buf = ctx.engine.alloc(C);
      try {
        for (let w = await backlog.pop(); w !== null; w = await backlog.pop()) {
          await ctx.readCheck(t, buf, w.off, w.len, 'run').catch((e) => fail(ctx, e));
        }
      } finally { ctx.engine.free(buf); }
    });
    const done = await Promise.allSettled(writers);
    backlog.close();
    await Promise.allSettled(verifiers);
    rethrow(done);
    if (ctx.fatal) throw ctx.fatal;
    // Epoch end (the file reached its limit) or the end of the run: verify everything.
    await ctx.verifyAll(t, next >= epochClusters && !ctx.stopping() ? 'run' : 'final');
    if (next < epochClusters || !stream.canGenerate(3)) break;
    stream.digest.add(DOp.EPOCH, 0, 0, stream.nextSeq());
    await t.file.truncate(0);
    ctx.ops++;
    t.model.reset();
    ctx.epochs++;
    next = 0;
  }
}

// ---- append-race ------------------------------------------------------------------------

/**
 * fstests generic/586: truncate to 0, then concurrently zero-write block 0 and write block 1;
 * the size must be two blocks and both blocks must hold what was written. One file per lane.
 */
async function appendRace(ctx: StressContext): Promise<void> {
  const { blockSize: bs, qd } = ctx.params;
  const streams = ctx.makeStreams(qd);
  await Promise.all(streams.map(async (s, lane) => {
    const t = await ctx.open(`append-race-${lane}.dat`, bs);
    checkAlignment(ctx, t, bs);
    const wbuf = ctx.engine.alloc(bs), rbuf = ctx.engine.alloc(2 * bs);
    try {
      while (s.canGenerate(3)) {
        s.digest.add(DOp.TRUNCATE, 0, 0, 0);
        const zeroSeq = s.nextSeq(), seq = s.nextSeq();
        const zeroFirst = s.rng.below(2) === 0;
        s.digest.add(zeroFirst ? DOp.ZERO : DOp.WRITE, zeroFirst ? 0 : bs, bs, zeroFirst ? zeroSeq : seq);
        s.digest.add(zeroFirst ? DOp.WRITE : DOp.ZERO, zeroFirst ? bs : 0, bs, zeroFirst ? seq : zeroSeq);
        await t.file.truncate(0).catch((e) => fail(ctx, e));
        t.model.reset();
        fillUnit(wbuf, 0, bs, bs, seq, ctx.params.seed);
        const z = (): Promise<number> => t.file.writeZeroes(0, bs);
        const w = (): Promise<number> => t.file.write(wbuf, bs);
        // Both requests are queued in the same tick: they go to different workers at once.
        await Promise.all(zeroFirst ? [z(), w()] : [w(), z()]).catch((e) => fail(ctx, e));
        ctx.ops += 3; ctx.bytesZeroed += bs; ctx.bytesWritten += bs;
        t.model.zero(0, bs);
        t.model.write(1, seq);
        const size = Number(await t.file.size());
        if (size !== 2 * bs) ctx.sizeError(t, 2 * bs, size, 'run');
        await ctx.readCheck(t, rbuf, 0, 2 * bs, 'run').catch((e) => fail(ctx, e));
      }
    } finally { ctx.engine.free(wbuf); ctx.engine.free(rbuf); }
    if (ctx.fatal) throw ctx.fatal;
    await ctx.verifyAll(t, 'final');
  }));
}

// ---- eof-extend -------------------------------------------------------------------------

/**
 * fstests generic/114 (aio-dio-eof-race): each iteration writes the block at EOF as
 * concurrent sub-block requests (all extending the file), sometimes with one piece as a
 * zero-write, then reads the block back and checks the size. One file per lane.
 */
async function eofExtend(ctx: StressContext): Promise<void> {
  const { blockSize: bs, qd } = ctx.params;
  const U = Math.max(MIN_UNIT, bs / 8);
  const pieces = bs / U;
  const streams = ctx.makeStreams(qd);
  const limitBlocks = Math.max(2, Math.floor(EOF_FILE_LIMIT / bs));
  await Promise.all(streams.map(async (s, lane) => {
    let t = await ctx.open(`eof-extend-${lane}.dat`, U);
    if (t.direct && t.file.info().alignment > U) {
      const a = t.file.info().alignment;
      t = await ctx.reopen(t, { direct: false });
      ctx.note(`O_DIRECT on these files needs ${a}-byte alignment, so ${U}-byte sub-block writes are impossible with it: eof-extend opened its files with { direct: false } (buffered I/O)`);
    } else if (t.direct) {
      ctx.note(`eof-extend: ${U}-byte sub-block writes with O_DIRECT (alignment ${t.file.info().alignment})`);
    }
    const wbuf = ctx.engine.alloc(bs), rbuf = ctx.engine.alloc(bs);
    let b = 0;
    try {
      while (s.canGenerate(pieces + 1)) {
        if (b >= limitBlocks) {
          await ctx.verifyAll(t, 'run').catch((e) => fail(ctx, e));
          if (!s.canGenerate(pieces + 1)) break;
          s.digest.add(DOp.EPOCH, 0, 0, s.nextSeq());
          await t.file.truncate(0).catch((e) => fail(ctx, e));
          ctx.ops++;
          t.model.reset();
          ctx.epochs++;
          b = 0;
        }
        const order = shuffle(pieces, s);
        const zp = s.rng.below(4) === 0 ? s.rng.below(pieces) : -1;
        const seqs: number[] = new Array(pieces);
        const base = b * bs;
        for (const p of order) {
          seqs[p] = s.nextSeq();
          s.digest.add(p === zp ? DOp.ZERO : DOp.WRITE, base + p * U, U, seqs[p]);
        }
        for (let p = 0; p < pieces; p++) if (p !== zp) fillUnit(wbuf, p * U, U, base + p * U, seqs[p], ctx.params.seed);
        await Promise.all(order.map((p) => p === zp
          ? t.file.writeZeroes(base + p * U, U)
          : t.file.write(wbuf.subarray(p * U, (p + 1) * U), base + p * U))).catch((e) => fail(ctx, e));
        ctx.ops += pieces;
        for (let p = 0; p < pieces; p++) {
          if (p === zp) { t.model.zero(base + p * U, U); ctx.bytesZeroed += U; }
          else { t.model.write(base / U + p, seqs[p]); ctx.bytesWritten += U; }
        }
        const size = Number(await t.file.size());
        if (size !== base + bs) ctx.sizeError(t, base + bs, size, 'run');
        await ctx.readCheck(t, rbuf, base, bs, 'run').catch((e) => fail(ctx, e));
        b++;
      }
    } finally { ctx.engine.free(wbuf); ctx.engine.free(rbuf); }
    if (ctx.fatal) throw ctx.fatal;
    await ctx.verifyAll(t, 'final');
  }));
}

function shuffle(n: number, s: Stream): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = s.rng.below(i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

// ---- mixed ------------------------------------------------------------------------------

type MixedOp = { kind: 'read' | 'write' | 'zero'; block: number; blocks: number; seq0: number } | { kind: 'truncate'; size: number };

/**
 * Random reads, writes, zero-writes and truncates against an exact in-memory model. Each
 * round issues up to --qd operations at once whose ranges do not overlap (a truncate runs
 * alone), so the model is exact after every round; reads are checked against it, and the
 * blocks written in one round are read back in the next (where no mutation overlaps them).
 */
async function mixed(ctx: StressContext): Promise<void> {
  const { blockSize: bs, qd } = ctx.params;
  const [s] = ctx.makeStreams(1);
  const t = await ctx.open('mixed.dat', bs);
  checkAlignment(ctx, t, bs);
  const regionBlocks = Math.max(64, Math.floor(MIXED_REGION / bs));
  const maxRun = 16;
  const bufs = Array.from({ length: qd * 2 }, () => ctx.engine.alloc(maxRun * bs));
  let backlog: { block: number; blocks: number }[] = [];
  try {
    while (s.canGenerate(1)) {
      // Generate one round.
      const round: MixedOp[] = [];
      if (s.rng.below(20) === 0) {
        const size = s.rng.below(regionBlocks + 1) * bs;
        s.digest.add(DOp.TRUNCATE, size, 0, 0);
        round.push({ kind: 'truncate', size });
      } else {
        for (let i = 0; i < qd && s.canGenerate(1); i++) {
          for (let attempt = 0; attempt < 8; attempt++) {
            const r = s.rng.below(100);
            const kind = r < 40 ? 'read' : r < 80 ? 'write' : 'zero';
            const block = s.rng.below(regionBlocks);
            const blocks = 1 + s.rng.below(Math.min(maxRun, regionBlocks - block));
            if (round.some((o) => o.kind !== 'truncate' && block < o.block + o.blocks && o.block < block + blocks)) continue;
            let seq0 = 0;
            if (kind === 'write') { seq0 = s.nextSeq(); for (let k = 1; k < blocks; k++) s.nextSeq(); }
            else if (kind === 'zero') seq0 = s.nextSeq();
            s.digest.add(kind === 'read' ? DOp.READ : kind === 'write' ? DOp.WRITE : DOp.ZERO, block * bs, blocks * bs, seq0);
            round.push({ kind, block, blocks, seq0 });
            break;
          }
        }
      }
      // Read back last round's writes where nothing in this round mutates them.
      const mutates = (b0: number, n: number): boolean => round.some((o) =>
        o.kind === 'truncate' ? o.size < (b0 + n) * bs : o.kind !== 'read' && b0 < o.block + o.blocks && o.block < b0 + n);
      const verify = backlog.filter((v) => !mutates(v.block, v.blocks));
      backlog = [];
      // Execute the round.
      const work: Promise<unknown>[] = [];
      let bi = 0;
      for (const o of round) {
        if (o.kind === 'truncate') { work.push(t.file.truncate(o.size)); continue; }
        const buf = bufs[bi++], off = o.block * bs, len = o.blocks * bs;
        if (o.kind === 'read') work.push(ctx.readCheck(t, buf, off, len, 'run'));
        else if (o.kind === 'zero') work.push(t.file.writeZeroes(off, len));
        else { fillRun(ctx, buf, bs, off, o.blocks, o.seq0); work.push(t.file.write(buf.subarray(0, len), off)); }
      }
      for (const v of verify) {
        if (bi >= bufs.length) break;
        work.push(ctx.readCheck(t, bufs[bi++], v.block * bs, v.blocks * bs, 'run'));
      }
      await Promise.all(work).catch((e) => fail(ctx, e));
      ctx.ops += round.length;
      // Apply the round to the model (the ranges are disjoint: order does not matter).
      for (const o of round) {
        if (o.kind === 'truncate') { t.model.truncate(o.size); continue; }
        if (o.kind === 'zero') { t.model.zero(o.block * bs, o.blocks * bs); ctx.bytesZeroed += o.blocks * bs; }
        if (o.kind === 'write') {
          for (let k = 0; k < o.blocks; k++) t.model.write(o.block + k, o.seq0 + k);
          ctx.bytesWritten += o.blocks * bs;
          backlog.push({ block: o.block, blocks: o.blocks });
        }
      }
      const size = Number(await t.file.size());
      if (size !== t.model.size) {
        ctx.sizeError(t, t.model.size, size, 'run');
        // Carry on from what the file really is, so one error is not reported every round;
        // the data it lost stays in the model and is reported by the reads.
        t.model.size = size;
      }
    }
  } finally { for (const b of bufs) ctx.engine.free(b); }
  if (ctx.fatal) throw ctx.fatal;
  await ctx.verifyAll(t, 'final');
}

function checkAlignment(ctx: StressContext, t: Target, bs: number): void {
  const a = t.file.info().alignment;
  if (t.direct && bs % a !== 0) {
    throw Object.assign(new Error(`--block-size ${bs} is not a multiple of this file's O_DIRECT alignment (${a} bytes): pass --block-size ${Math.max(a, 4096)}`), { usage: true });
  }
  void ctx;
}

function rethrow(results: PromiseSettledResult<unknown>[]): void {
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
