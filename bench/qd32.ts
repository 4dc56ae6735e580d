// 4 KiB O_DIRECT random read and write at QD32: ringfence against node:fs/promises, one run.
// Usage: node dist/bench/qd32.js [--dir PATH | --xfs SIZE] [--seconds N] [--workers N]
import { open as fsOpen } from 'node:fs/promises';
import { constants as fsc, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '../src/index.js';
import { defaultVolume, dirVolume, makeXfsVolume, parseSize } from '../src/volume.js';
import { blockStream } from './common.js';
import { prepareDataFile as prepareFile } from '../src/bench/data.js';

const { values } = parseArgs({ options: {
  dir: { type: 'string' }, xfs: { type: 'string' }, seconds: { type: 'string', default: '3' },
  workers: { type: 'string', default: '2' }, qd: { type: 'string', default: '32' }, size: { type: 'string', default: '256M' },
} });
const seconds = Number(values.seconds), qd = Number(values.qd), size = parseSize(values.size!);
const BS = 4096, blocks = size / BS;
const vol = values.dir ? dirVolume(values.dir) : values.xfs ? makeXfsVolume(parseSize(values.xfs)) : defaultVolume();

async function timed(loop: (stop: () => boolean) => Promise<number>): Promise<number> {
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const ops = await loop(() => performance.now() >= deadline);
  return ops / ((performance.now() - t0) / 1000);
}

async function ringfence(rw: 'read' | 'write', path: string): Promise<number> {
  const engine = await Engine.start({ workers: Number(values.workers), queueDepth: qd });
  try {
    const f = await engine.open(path);
    return await timed(async (stop) => {
      let ops = 0;
      await Promise.all(Array.from({ length: qd }, async (_, i) => {
        const buf = engine.alloc(BS), next = blockStream(i + 1, blocks);
        while (!stop()) {
          for (let k = 0; k < 64; k++) { await (rw === 'read' ? f.read(buf, next() * BS) : f.write(buf, next() * BS)); ops++; }
        }
      }));
      return ops;
    });
  } finally { await engine.close(); }
}

async function nodeFs(rw: 'read' | 'write', path: string): Promise<number> {
  const fh = await fsOpen(path, fsc.O_RDWR | fsc.O_DIRECT);
  try {
    return await timed(async (stop) => {
      let ops = 0;
      await Promise.all(Array.from({ length: qd }, async (_, i) => {
        const buf = alignedSlice(big, i), next = blockStream(i + 1, blocks);
        while (!stop()) {
          for (let k = 0; k < 64; k++) { await (rw === 'read' ? fh.read(buf, 0, BS, next() * BS) : fh.write(buf, 0, BS, next() * BS)); ops++; }
        }
      }));
      return ops;
    });
  } finally { await fh.close(); }
}

// One Buffer for all of node:fs's loops. Node exposes no addresses, so findShift() probes for the
// first offset inside it that O_DIRECT accepts, and every slice starts at that offset plus 4 KiB steps.
const big = Buffer.alloc(BS * (qd + 2));
let shift = 0;
function alignedSlice(_b: Buffer, i: number): Buffer {
  return big.subarray(shift + i * BS, shift + (i + 1) * BS);
}

async function findShift(path: string): Promise<void> {
  const fh = await fsOpen(path, fsc.O_RDONLY | fsc.O_DIRECT);
  try {
    for (shift = 0; shift < BS; shift += 16) {
      try { await fh.read(big.subarray(shift, shift + BS), 0, BS, 0); return; } catch { /* misaligned */ }
    }
    throw new Error('no O_DIRECT-aligned offset found in a Buffer');
  } finally { await fh.close(); }
}

try {
  console.log(`# 4 KiB O_DIRECT random I/O at QD${qd}, ${seconds}s per engine, on ${vol.note}`);
  const path = join(vol.dir, 'bench.dat');
  prepareFile(path, size);
  await findShift(path);
  const rows: { rw: string; rf: number; fs: number }[] = [];
  for (const rw of ['read', 'write'] as const) {
    // Interleave: node, ringfence, node, ringfence; keep the best of each.
    let rf = 0, fs = 0;
    for (let rep = 0; rep < 2; rep++) {
      fs = Math.max(fs, await nodeFs(rw, path));
      rf = Math.max(rf, await ringfence(rw, path));
    }
    rows.push({ rw: `rand${rw}`, rf, fs });
    console.log(`rand${rw.padEnd(5)}  ringfence ${(rf / 1000).toFixed(1)}k IOPS   node:fs/promises ${(fs / 1000).toFixed(1)}k IOPS   ratio ${(rf / fs).toFixed(2)}x`);
  }
  rmSync(path, { force: true });
  if (process.argv.includes('--json')) console.log(JSON.stringify(rows));
} finally {
  vol.cleanup();
}
