// The tracked-request table's end-to-end cost: ringfence 4 KiB O_DIRECT random I/O at QD32
// with request tracking on and off, interleaved rounds in one run, no serialising requests
// (the table's fast path). Usage: node dist/bench/tracking.js [--dir PATH | --xfs SIZE] [--rounds N] [--seconds S]
// [--mode inline|workers] (default inline, the engine's default; workers: 2 offload workers)
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Engine } from '../src/index.js';
import { defaultVolume, dirVolume, makeXfsVolume, parseSize } from '../src/volume.js';
import { prepareDataFile } from '../src/bench/data.js';
import { ringfencePerRequest, type Rw } from '../src/bench/engines.js';

const { values } = parseArgs({ options: {
  dir: { type: 'string' }, xfs: { type: 'string' }, rounds: { type: 'string', default: '4' }, seconds: { type: 'string', default: '2' },
  rw: { type: 'string', default: 'randread,randwrite' }, json: { type: 'boolean', default: false },
  mode: { type: 'string', default: 'inline' },
} });
const vol = values.dir ? dirVolume(values.dir) : values.xfs ? makeXfsVolume(parseSize(values.xfs)) : defaultVolume();
const size = 512 << 20;
if (values.mode !== 'inline' && values.mode !== 'workers') throw new Error(`--mode must be inline or workers, not ${values.mode}`);
const modeOptions = values.mode === 'inline' ? { mode: 'inline' as const } : { mode: 'workers' as const, workers: 2 };
const median = (a: number[]): number => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
try {
  const path = join(vol.dir, 'tracking.dat');
  prepareDataFile(path, size);
  const out: Record<string, { on: number; off: number; ratio: number }> = {};
  if (!values.json) console.log(`# tracked-request table on vs off: 4 KiB O_DIRECT QD32, ${values.mode === 'inline' ? 'inline mode' : '2 workers'}, ${values.rounds} interleaved rounds of ${values.seconds}s, on ${vol.note}`);
  for (const rw of values.rw!.split(',') as Rw[]) {
    const on: number[] = [], off: number[] = [];
    for (let r = 0; r < Number(values.rounds); r++) {
      for (const track of r % 2 === 0 ? [true, false] : [false, true]) {
        const engine = await Engine.start({ ...modeOptions, queueDepth: 32, trackRequests: track });
        try {
          const res = await ringfencePerRequest(async () => engine).run({ rw, bs: 4096, qd: 32, seconds: Number(values.seconds), path, size, direct: true });
          (track ? on : off).push(res.iops);
        } finally { await engine.close(); }
      }
    }
    out[rw] = { on: median(on), off: median(off), ratio: median(on) / median(off) };
    if (!values.json) console.log(`${rw.padEnd(10)} table on ${(out[rw].on / 1000).toFixed(1)}k IOPS, off ${(out[rw].off / 1000).toFixed(1)}k IOPS (medians): on/off = ${(out[rw].ratio * 100).toFixed(1)}%`);
  }
  if (values.json) console.log(JSON.stringify(out));
  rmSync(path, { force: true });
} finally { vol.cleanup(); }
