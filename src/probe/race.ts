// The dynamic check: does a post-EOF zero-write (fallocate FALLOC_FL_ZERO_RANGE) racing with an
// O_DIRECT write past it lose the write here? Runs straight against the kernel through the
// engine with the workaround off ('never'), or, for calibration, with the pre-5.5 XFS
// semantics emulated. Two trial kinds, alternating, each in both submission orders:
//
//   generic/586: truncate(0); writeZeroes(0, bs) || write(data, bs);
//                then size must be 2*bs, block 0 zero, block 1 the data.
//   qcow2:       truncate(C); writeZeroes(C, C) (a new cluster past EOF) || write(data, 2C + j*bs)
//                (a data block in the next cluster, on the other worker);
//                then size must be 2C + (j+1)*bs, [C, 2C + j*bs) zero, the block the data.
//
// The two requests of a pair go to different workers (the engine spreads requests round-robin
// over its 2 workers), so they are in the kernel at the same time.
import { Engine } from '../engine.js';
import type { File } from '../file.js';
import { RingfenceError } from '../errors.js';
import type { BackendChoice } from '../types.js';
import type { Scratch } from './scratch.js';

export type TrialKind = 'generic/586' | 'qcow2';

export interface RaceOptions {
  /** Trials run until this many milliseconds have passed (after set-up)... */
  budgetMs?: number;
  /** ...or exactly this many trials (takes precedence). */
  iterations?: number;
  /** Emulate the pre-5.5 XFS fallocate (calibration). Default false: the real kernel. */
  emulate?: boolean | { windowUs?: number };
  backend?: BackendChoice;
  /** Scratch file names are prefixed with this (e.g. "cal-" for calibration). */
  prefix?: string;
}

export interface KindCount { trials: number; lost: number }

export interface RaceResult {
  emulated: boolean;
  windowUs: number | null;
  /** Set when the race cannot run here (e.g. no FALLOC_FL_ZERO_RANGE): no trials were made. */
  notApplicable: string | null;
  trials: number;
  /** Trials that lost (or corrupted) the racing write. */
  lost: number;
  kinds: Record<TrialKind, KindCount>;
  /** The first few lost writes, described. */
  examples: string[];
  /** Time spent on trials (the budget applies to this), and the slowest trial. */
  elapsedMs: number;
  maxTrialMs: number;
  /** Engine start, scratch files and the ZERO_RANGE check (outside the budget). */
  setupMs: number;
  backends: string[];
  direct: boolean;
  directNote: string;
  blockSize: number;
  clusterSize: number;
}

/** A set-up failure of the race (not a verdict): the CLI exits 2 with the message. */
export class RaceSetupError extends Error {}

const MAX_EXAMPLES = 3;

async function openScratch(engine: Engine, path: string): Promise<{ file: File; direct: boolean; note: string }> {
  try {
    return { file: await engine.open(path, { create: true, truncate: true, direct: true, xfsWorkaround: 'never' }), direct: true, note: 'O_DIRECT' };
  } catch (err) {
    if ((err as RingfenceError).code !== 'EINVAL') throw err;
    const file = await engine.open(path, { create: true, truncate: true, direct: false, xfsWorkaround: 'never' });
    return { file, direct: false, note: 'buffered: this filesystem refuses O_DIRECT (the kernel bug needed AIO+O_DIRECT, so this is weaker evidence)' };
  }
}

function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function stamp(buf: Uint8Array, trial: number): void {
  // Distinct contents per trial, never all zero: a stale or missing block cannot pass.
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i + 8 <= buf.length; i += 8) { dv.setUint32(i, 0x52464e43 ^ i); dv.setUint32(i + 4, trial >>> 0); }
}

/** Runs the race in `scratch`; every file it creates is inside `scratch.dir`. */
export async function runRace(scratch: Scratch, opts: RaceOptions = {}): Promise<RaceResult> {
  const emulate = opts.emulate ?? false;
  const prefix = opts.prefix ?? '';
  const tSetup = performance.now();
  let engine: Engine;
  try {
    engine = await Engine.start({ workers: 2, queueDepth: 8, bufferPoolBytes: 4 << 20, backend: opts.backend ?? 'auto', xfsWorkaround: 'never', emulateXfsFallocateBug: emulate });
  } catch (err) {
    throw new RaceSetupError(`could not start the I/O engine for the race: ${(err as Error).message}`);
  }
  const files: File[] = [];
  let t0 = -1;
  const result: RaceResult = {
    emulated: emulate !== false, windowUs: emulate === false ? null : engine.options.emulateWindowUs, notApplicable: null,
    trials: 0, lost: 0, kinds: { 'generic/586': { trials: 0, lost: 0 }, qcow2: { trials: 0, lost: 0 } }, examples: [],
    elapsedMs: 0, maxTrialMs: 0, setupMs: 0, backends: engine.info().workers.map((w) => w.backend), direct: true, directNote: '', blockSize: 0, clusterSize: 0,
  };
  try {
    const a = await openScratch(engine, scratch.file(`${prefix}race-586.img`));
    files.push(a.file);
    const q = (await openScratch(engine, scratch.file(`${prefix}race-qcow2.img`))).file;
    files.push(q);
    const f = a.file;
    result.direct = a.direct; result.directNote = a.note;
    const align = Math.max(f.info().alignment, q.info().alignment, 1);
    const bs = Math.ceil(4096 / align) * align;
    const C = Math.max(65536, bs * 16);
    result.blockSize = bs; result.clusterSize = C;

    // Can this filesystem zero a range at all? (tmpfs cannot: EOPNOTSUPP.)
    try {
      await f.writeZeroes(0, bs);
      await f.truncate(0);
    } catch (err) {
      const code = (err as RingfenceError).code;
      if (code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'ENOSYS') {
        result.notApplicable = `fallocate(FALLOC_FL_ZERO_RANGE) is not supported here (${code}): zero-writes cannot race with writes on this filesystem`;
        return result;
      }
      throw err;
    }

    const data = engine.alloc(bs);
    const back = engine.alloc(2 * C);
    const bpc = C / bs;
    // The budget counts trials only: engine start-up and the first open can take a while.
    t0 = performance.now();
    result.setupMs = Math.round(t0 - tSetup);
    const deadline = opts.iterations === undefined ? t0 + (opts.budgetMs ?? 5000) : Infinity;
    const limit = opts.iterations ?? Infinity;
    try {
      for (let i = 0, tt = t0, now = t0; i < limit && now < deadline; i++, tt = now) {
        const kind: TrialKind = (i & 1) === 0 ? 'generic/586' : 'qcow2';
        const zeroFirst = (i & 2) === 0;
        stamp(data, i);
        let problem: string | null = null;
        if (kind === 'generic/586') {
          await f.truncate(0);
          const z = (): Promise<number> => f.writeZeroes(0, bs), w = (): Promise<number> => f.write(data, bs);
          await (zeroFirst ? Promise.all([z(), w()]) : Promise.all([w(), z()]));
          const size = await f.size();
          const n = await f.read(back.subarray(0, 2 * bs), 0);
          if (size !== BigInt(2 * bs)) problem = `size ${size}, expected ${2 * bs}: the write at ${bs} was truncated away`;
          else if (n !== 2 * bs) problem = `read back ${n} of ${2 * bs} bytes`;
          else if (!isZero(back.subarray(0, bs))) problem = `the zeroed block at 0 is not zero`;
          else if (Buffer.compare(back.subarray(bs, 2 * bs), data) !== 0) problem = `the block at ${bs} does not hold the data written`;
        } else {
          const j = (i >> 2) % bpc;
          const wOff = 2 * C + j * bs, end = wOff + bs;
          await q.truncate(C);
          const z = (): Promise<number> => q.writeZeroes(C, C), w = (): Promise<number> => q.write(data, wOff);
          await (zeroFirst ? Promise.all([z(), w()]) : Promise.all([w(), z()]));
          const size = await q.size();
          const n = await q.read(back.subarray(0, end - C), C);
          if (size !== BigInt(end)) problem = `size ${size}, expected ${end}: the write into the next cluster (at ${wOff}) was truncated away`;
          else if (n !== end - C) problem = `read back ${n} of ${end - C} bytes`;
          else if (!isZero(back.subarray(0, wOff - C))) problem = `the zeroed cluster at ${C} (or the gap before ${wOff}) is not zero`;
          else if (Buffer.compare(back.subarray(wOff - C, end - C), data) !== 0) problem = `the block at ${wOff} does not hold the data written`;
        }
        now = performance.now();
        if (now - tt > result.maxTrialMs) result.maxTrialMs = Math.round((now - tt) * 10) / 10;
        result.trials++;
        result.kinds[kind].trials++;
        if (problem !== null) {
          result.lost++;
          result.kinds[kind].lost++;
          if (result.examples.length < MAX_EXAMPLES) result.examples.push(`trial ${i} (${kind}, ${zeroFirst ? 'zero-write' : 'write'} submitted first): ${problem}`);
        }
      }
    } finally {
      engine.free(data);
      engine.free(back);
    }
    return result;
  } catch (err) {
    if (err instanceof RaceSetupError) throw err;
    const e = err as RingfenceError;
    const hint = e.code === 'ENOSPC' ? 'free some space (the race needs well under 1 MiB) or pick another directory'
      : e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS' ? 'pick a directory you can write to'
      : 'see the error; run without --race for the static facts only';
    throw new RaceSetupError(`the race could not run in ${scratch.dir}: ${e.message}; ${hint}`);
  } finally {
    if (t0 >= 0) result.elapsedMs = Math.round(performance.now() - t0);
    else result.setupMs = Math.round(performance.now() - tSetup);
    for (const file of files) { try { await file.close(); } catch { /* engine closes it */ } }
    await engine.close();
  }
}
