// The demo: writes, reads back and verifies a file through every backend, and prints IOPS.
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { Engine } from './engine.js';
import { BACKENDS, type BackendName } from './backends.js';
import type { Volume } from './volume.js';
import { atExit } from './cleanup.js';

/** Limits of `ringfence demo --blocks` (4 KiB blocks per backend: 4 KiB to 4 GiB). */
export const DEMO_MAX_BLOCKS = 1 << 20;
export const DEMO_BLOCK = 4096;

export interface DemoResult { backend: BackendName; ok: boolean; verifiedBytes: number; writeIops: number; readIops: number; error?: string }

function fill(buf: Uint8Array, block: number, seed: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i < buf.byteLength; i += 4) dv.setUint32(i, Math.imul(block + 1, 2654435761) ^ Math.imul(i + seed, 40503), true);
}

export async function runDemo(vol: Volume, opts: { blocks?: number; qd?: number; log?: (s: string) => void } = {}): Promise<DemoResult[]> {
  const log = opts.log ?? (() => {});
  const blocks = opts.blocks ?? 8192, qd = opts.qd ?? 32, bs = DEMO_BLOCK;
  if (!Number.isInteger(blocks) || blocks < 1 || blocks > DEMO_MAX_BLOCKS) throw new RangeError(`blocks must be an integer from 1 to ${DEMO_MAX_BLOCKS}; got ${blocks}`);
  if (!Number.isInteger(qd) || qd < 1 || qd > 1024) throw new RangeError(`qd must be an integer from 1 to 1024; got ${qd}`);
  const results: DemoResult[] = [];
  for (const backend of BACKENDS) {
    const path = join(vol.dir, `demo-${backend}.dat`);
    let engine: Engine | null = null;
    // In an existing --dir the file is the user's disk space: removed on a signal too.
    const unregister = atExit(() => rmSync(path, { force: true }));
    try {
      engine = await Engine.start({ backend, workers: 2, queueDepth: qd });
      const direct = vol.fs !== 'tmpfs';
      const file = await engine.open(path, { create: true, truncate: true, direct });
      const bufs = Array.from({ length: qd }, () => engine!.alloc(bs));
      const order = shuffle(blocks, 7);
      const run = async (op: 'write' | 'read'): Promise<number> => {
        let next = 0, bad = 0;
        const t0 = performance.now();
        await Promise.all(bufs.map(async (buf) => {
          const expect = new Uint8Array(bs);
          while (next < blocks) {
            const b = order[next++];
            if (op === 'write') { fill(buf, b, 1); await file.write(buf, b * bs); }
            else {
              const n = await file.read(buf, b * bs);
              fill(expect, b, 1);
              if (n !== bs || Buffer.compare(buf, expect) !== 0) bad++;
            }
          }
        }));
        const secs = (performance.now() - t0) / 1000;
        if (bad > 0) throw new Error(`${bad} blocks did not read back what was written`);
        return blocks / secs;
      };
      const writeIops = await run('write');
      await file.flush();
      const readIops = await run('read');
      await file.close();
      const r: DemoResult = { backend, ok: true, verifiedBytes: blocks * bs, writeIops, readIops };
      log(`${backend.padEnd(8)} ok  verified ${blocks * bs >= 2 ** 20 ? `${(blocks * bs / 2 ** 20).toFixed(0)} MiB` : `${blocks * bs / 1024} KiB`}  write ${fmt(writeIops)} IOPS  read ${fmt(readIops)} IOPS  (4 KiB random, QD${qd}${direct ? ', O_DIRECT' : ''})`);
      results.push(r);
    } catch (err) {
      log(`${backend.padEnd(8)} FAILED: ${(err as Error).message}`);
      results.push({ backend, ok: false, verifiedBytes: 0, writeIops: 0, readIops: 0, error: (err as Error).message });
    } finally {
      await engine?.close();
      rmSync(path, { force: true });
      unregister();
    }
  }
  return results;
}

function fmt(n: number): string { return n >= 1000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0); }

function shuffle(n: number, seed: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let s = seed >>> 0;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}
