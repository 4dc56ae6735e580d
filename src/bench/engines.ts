// The engines `ringfence bench` measures, each on the same file with the same job.
import { spawn } from 'node:child_process';
import { open as fsOpen } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import type { Histogram } from 'hdr-histogram-js';
import { Engine } from '../engine.js';
import type { File } from '../file.js';
import { haveCommand } from '../volume.js';
import { fioTime } from './fio-time.js';
import { cpuSecondsOf, statFields } from '../procstat.js';

export type Rw = 'read' | 'write' | 'randread' | 'randwrite' | 'randrw';
export const RW_VALUES: readonly Rw[] = ['read', 'write', 'randread', 'randwrite', 'randrw'];

export interface Job { rw: Rw; bs: number; qd: number; seconds: number; path: string; size: number; direct: boolean }

export interface Result {
  engine: string;
  rw: Rw;
  qd: number;
  bs: number;
  ios: number;
  seconds: number;
  iops: number;
  mibs: number;
  p50us: number;
  p99us: number;
  p999us: number;
  /** CPU time (user + system, all threads) per I/O, microseconds. */
  cpuUsPerIo: number;
}

export interface BenchEngine {
  name: string;
  /** Why it cannot run this job (or at all), or null. */
  skip(job: Job): string | null;
  run(job: Job): Promise<Result>;
}

/** A per-loop offset stream: sequential loops share one cursor, random ones use xorshift. */
function offsets(job: Job, seed: number, shared: { next: number }): () => number {
  const blocks = Math.floor(job.size / job.bs);
  if (job.rw === 'read' || job.rw === 'write') {
    return () => { const b = shared.next; shared.next = (b + 1) % blocks; return b * job.bs; };
  }
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return (s % blocks) * job.bs; };
}

function isWrite(job: Job, i: number): boolean {
  return job.rw === 'write' || job.rw === 'randwrite' || (job.rw === 'randrw' && (i & 1) === 1);
}

/**
 * hdr-histogram-js is an optional dependency, loaded only by `ringfence bench` (a library-only
 * install, `npm install --omit=optional`, leaves it out): a clear message when it is missing.
 */
let hdrModule: Promise<typeof import('hdr-histogram-js')> | undefined;
export function loadHdr(): Promise<typeof import('hdr-histogram-js')> {
  hdrModule ??= import('hdr-histogram-js').catch((err: NodeJS.ErrnoException) => {
    hdrModule = undefined;
    if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new Error('ringfence bench needs the optional dependency hdr-histogram-js, which is not installed ' +
      '(npm install --omit=optional leaves it out): run `npm install hdr-histogram-js`', { cause: err });
  });
  return hdrModule;
}

async function histogram(): Promise<Histogram> {
  const hdr = await loadHdr();
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60e9, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

function result(engine: string, job: Job, ios: number, seconds: number, h: Histogram, cpuUs: number): Result {
  return {
    engine, rw: job.rw, qd: job.qd, bs: job.bs, ios, seconds, iops: ios / seconds, mibs: (ios * job.bs) / seconds / 2 ** 20,
    p50us: h.getValueAtPercentile(50) / 1000, p99us: h.getValueAtPercentile(99) / 1000, p999us: h.getValueAtPercentile(99.9) / 1000,
    cpuUsPerIo: ios > 0 ? cpuUs / ios : 0,
  };
}

function cpuNow(): number { const c = process.cpuUsage(); return c.user + c.system; }

/**
 * job.qd concurrent loops, each awaiting one request at a time until the deadline, timing every
 * request into one histogram. `io(loop, isWrite, offset)` issues one request of loop `q`.
 */
async function perRequestLoops(engine: string, job: Job, io: (q: number, write: boolean, offset: number) => Promise<unknown>): Promise<Result> {
  const h = await histogram();
  const shared = { next: 0 };
  const deadline = performance.now() + job.seconds * 1000;
  let ios = 0;
  const cpu0 = cpuNow(), t0 = performance.now();
  await Promise.all(Array.from({ length: job.qd }, async (_, q) => {
    const next = offsets(job, q + 1, shared);
    for (let i = q; performance.now() < deadline; i += job.qd) {
      const t = performance.now();
      await io(q, isWrite(job, i), next());
      h.recordValue(Math.max(1, Math.round((performance.now() - t) * 1e6)));
      ios++;
    }
  }));
  return result(engine, job, ios, (performance.now() - t0) / 1000, h, cpuNow() - cpu0);
}

/**
 * ringfence through the per-request promise API: qd loops of read()/write(). `name`
 * 'ringfence' is the engine with its default options (inline mode); 'ringfence-workers' the
 * same API on offload workers.
 */
export function ringfencePerRequest(getEngine: () => Promise<Engine>, name = 'ringfence'): BenchEngine {
  return {
    name,
    skip: () => null,
    async run(job) {
      const engine = await getEngine();
      const f = await engine.open(job.path, { direct: job.direct });
      try {
        const bufs = Array.from({ length: job.qd }, () => engine.alloc(job.bs));
        const r = await perRequestLoops(name, job, (q, write, off) => (write ? f.write(bufs[q], off) : f.read(bufs[q], off)));
        for (const b of bufs) engine.free(b);
        return r;
      } finally { await f.close(); }
    },
  };
}

/** ringfence through the batch API: qd/8 batches of 8 operations kept in flight. */
export function ringfenceBatch(getEngine: () => Promise<Engine>): BenchEngine {
  return {
    name: 'ringfence-batch',
    skip: (job) => (job.qd < 2 ? 'batches need QD >= 2' : null),
    async run(job) {
      const engine = await getEngine();
      const f: File = await engine.open(job.path, { direct: job.direct });
      try {
        const h = await histogram();
        const shared = { next: 0 };
        const per = Math.min(8, job.qd), loops = Math.max(1, Math.floor(job.qd / per));
        const deadline = performance.now() + job.seconds * 1000;
        let ios = 0;
        const cpu0 = cpuNow(), t0 = performance.now();
        await Promise.all(Array.from({ length: loops }, async (_, q) => {
          const next = offsets(job, q + 1, shared);
          const ops = Array.from({ length: per }, (_, k) => ({ op: isWrite(job, k) ? 'write' : 'read', buffer: engine.alloc(job.bs), offset: 0 } as { op: 'read' | 'write'; buffer: Uint8Array; offset: number }));
          while (performance.now() < deadline) {
            for (const o of ops) o.offset = next();
            const t = performance.now();
            await f.submit(ops);
            const ns = Math.max(1, Math.round((performance.now() - t) * 1e6));
            for (let k = 0; k < per; k++) h.recordValue(ns);
            ios += per;
          }
          for (const o of ops) engine.free(o.buffer);
        }));
        return result('ringfence-batch', job, ios, (performance.now() - t0) / 1000, h, cpuNow() - cpu0);
      } finally { await f.close(); }
    },
  };
}

/** node:fs/promises with its default threadpool: qd loops of FileHandle.read()/write(). */
export function nodeFs(): BenchEngine {
  return {
    name: 'node:fs',
    skip: () => null,
    async run(job) {
      const fh = await fsOpen(job.path, fsc.O_RDWR | (job.direct ? fsc.O_DIRECT : 0));
      try {
        // Node gives no buffer addresses: probe one Buffer for the first offset O_DIRECT accepts.
        const big = Buffer.alloc(job.bs * (job.qd + 1) + 4096);
        let shift = 0;
        if (job.direct) {
          for (; shift < 4096; shift += 16) {
            try { await fh.read(big.subarray(shift, shift + job.bs), 0, job.bs, 0); break; } catch { /* misaligned */ }
          }
        }
        const bufs = Array.from({ length: job.qd }, (_, q) => big.subarray(shift + q * job.bs, shift + (q + 1) * job.bs));
        return await perRequestLoops('node:fs', job, (q, write, off) => (write ? fh.write(bufs[q], 0, job.bs, off) : fh.read(bufs[q], 0, job.bs, off)));
      } finally { await fh.close(); }
    },
  };
}

/** Whether this Node's libuv may use io_uring for file I/O (Node >= 22.13 / 23.6 never does). */
export function nodeUsesUringForFiles(version = process.versions.node): boolean {
  const [maj, min] = version.split('.').map(Number);
  return maj < 22 || (maj === 22 && min < 13) || (maj === 23 && min < 6);
}

/**
 * node:fs/promises with UV_USE_IO_URING=1, in a child process (libuv reads the variable once,
 * at start): the io_uring path a Node 20 user can switch on. The child runs the node:fs
 * engine above on the same job and prints its result.
 */
export function nodeFsUring(): BenchEngine {
  return {
    name: 'node:fs-uring',
    skip: () => (nodeUsesUringForFiles() ? null
      : `Node ${process.versions.node} never uses io_uring for files (libuv dropped it in Node 22.13 / 23.6), so UV_USE_IO_URING=1 changes nothing: run the bench with Node 20 to measure it`),
    async run(job) {
      const child = new URL('./nodefs-child.js', import.meta.url);
      const out = await runChild(process.execPath, [child.pathname, JSON.stringify(job)], { ...process.env, UV_USE_IO_URING: '1' });
      return { ...(JSON.parse(out) as Result), engine: 'node:fs-uring' };
    },
  };
}

function runChild(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${code}: ${err.trim().split('\n').slice(-3).join(' ')}`))));
  });
}

interface FioSide { iops: number; bw_bytes: number; total_ios: number; lat_ns: { percentile?: Record<string, number> } }

/**
 * fio with the io_uring or libaio engine, parsed from --output-format=json. `fixed`: io_uring
 * with registered buffers and files (fio's fixedbufs, registerfiles), the ceiling for a ring.
 */
export function fio(ioengine: 'io_uring' | 'libaio', fixed = false): BenchEngine {
  const name = `fio-${ioengine}${fixed ? '-fixed' : ''}`;
  return {
    name,
    skip: () => (haveCommand('fio') ? null : 'fio is not installed (apt-get install fio)'),
    async run(job) {
      const out = await runChild('fio', [
        '--name=bench', `--filename=${job.path}`, `--size=${job.size}`, `--rw=${job.rw}`, `--bs=${job.bs}`, `--ioengine=${ioengine}`,
        // Engine options must follow --ioengine.
        ...(fixed ? ['--fixedbufs', '--registerfiles'] : []),
        `--direct=${job.direct ? 1 : 0}`, `--iodepth=${job.qd}`, `--runtime=${fioTime(job.seconds)}`, '--time_based', '--output-format=json',
        // Total latency (submission to completion), like the other engines' figures: fio's
        // default percentiles are completion latency only, which excludes the submit call.
        '--percentile_list=50:99:99.9', '--lat_percentiles=1', '--randrepeat=0', '--norandommap',
      ]);
      const j = JSON.parse(out.slice(out.indexOf('{'))).jobs[0] as { read: FioSide; write: FioSide; usr_cpu: number; sys_cpu: number; job_runtime: number };
      const sides = [j.read, j.write].filter((s) => s.total_ios > 0);
      const ios = sides.reduce((a, s) => a + s.total_ios, 0);
      const seconds = j.job_runtime / 1000;
      const pct = (p: string): number => Math.max(...sides.map((s) => s.lat_ns.percentile?.[p] ?? 0)) / 1000;
      const cpuUs = ((j.usr_cpu + j.sys_cpu) / 100) * seconds * 1e6;
      return {
        engine: name, rw: job.rw, qd: job.qd, bs: job.bs, ios, seconds, iops: ios / seconds,
        mibs: (ios * job.bs) / seconds / 2 ** 20, p50us: pct('50.000000'), p99us: pct('99.000000'), p999us: pct('99.900000'),
        cpuUsPerIo: ios > 0 ? cpuUs / ios : 0,
      };
    },
  };
}

/** qemu-img bench (QEMU's block layer), io_uring, sequential workloads only. */
export function qemuImg(): BenchEngine {
  return {
    name: 'qemu-img',
    skip: (job) => (!haveCommand('qemu-img') ? 'qemu-img is not installed (apt-get install qemu-utils)'
      : job.rw !== 'read' && job.rw !== 'write' ? 'qemu-img bench only does sequential I/O' : null),
    async run(job) {
      // Calibrate the request count to the runtime with one short run.
      const once = async (count: number): Promise<{ secs: number; cpuUs: number }> => {
        const args = ['bench', '-f', 'raw', '-t', job.direct ? 'none' : 'writeback', '-i', 'io_uring', '-c', String(count), '-d', String(job.qd),
          '-s', String(job.bs), '-S', String(job.bs), ...(job.rw === 'write' ? ['-w'] : []), job.path];
        // The shell reports its children's CPU time (cutime + cstime, fields 16-17 of /proc/$$/stat)
        // on the last line, after qemu-img's own output (no temporary file: qemu-img has exited by then).
        const out = await runChild('sh', ['-c', `qemu-img "$@" 2>&1; rc=$?; echo; cat /proc/$$/stat; exit $rc`, 'sh', ...args]);
        const m = /Run completed in ([\d.]+) seconds/.exec(out);
        if (!m) throw new Error(`unexpected qemu-img output: ${out.slice(0, 200)}`);
        return { secs: Number(m[1]), cpuUs: cpuSecondsOf(statFields(out.trim().split('\n').pop()!), true) * 1e6 };
      };
      const probe = await once(8192);
      const count = Math.max(8192, Math.round((8192 / Math.max(probe.secs, 1e-3)) * job.seconds));
      const r = await once(count);
      const h = await histogram();
      return { ...result('qemu-img', job, count, r.secs, h, r.cpuUs), p50us: NaN, p99us: NaN, p999us: NaN };
    },
  };
}
