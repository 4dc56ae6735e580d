// Resident memory of an engine: what Engine.start() costs with the defaults, and what using
// the buffer pool adds. io_uring registers the pool as fixed buffers in 4 MiB chunks, each on
// its first use (native/uring_backend.cc), and registration pins a chunk's pages: an engine
// whose pool is mostly idle stays small.
//   node bench/memory.mjs [--json]
// Each case runs in a fresh child process (RSS is per process). Figures: MiB of RSS.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cases = [
  ['inline (default), io_uring', {}],
  ['inline, libaio', { backend: 'libaio' }],
  ['workers: 2, io_uring', { mode: 'workers', workers: 2 }],
];

if (process.argv[2] === '--child') {
  const { Engine } = await import('../dist/src/index.js');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const opts = JSON.parse(process.argv[3]);
  const rss = () => process.memoryUsage().rss / 2 ** 20;
  const base = rss();
  const engine = await Engine.start(opts);
  const started = rss();
  // Use the whole pool once: every 1 MiB block of it carries a write and a read.
  const dir = mkdtempSync('/var/tmp/rf-mem-');
  const f = await engine.open(`${dir}/f`, { create: true });
  const blocks = [];
  for (;;) { try { blocks.push(engine.alloc(1 << 20)); } catch { break; } }
  await Promise.all(blocks.map((b, i) => f.write(b, i * (1 << 20))));
  await Promise.all(blocks.map((b, i) => f.read(b, i * (1 << 20))));
  const used = rss();
  for (const b of blocks) engine.free(b);
  await f.close();
  const backend = engine.info().contexts?.[0]?.backend ?? engine.info().workers?.[0]?.backend;
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
  console.log(JSON.stringify({ base, started, used, poolMiB: blocks.length, backend }));
} else {
  const json = process.argv.includes('--json');
  const rows = [];
  for (const [name, opts] of cases) {
    process.stderr.write(`measuring ${name}...\n`);
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', JSON.stringify(opts)], { encoding: 'utf8' });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (!line.startsWith('{')) { rows.push({ case: name, error: (r.stderr || r.stdout).trim().split('\n').pop() }); continue; }
    const m = JSON.parse(line);
    rows.push({ case: name, backend: m.backend, 'start (MiB)': +(m.started - m.base).toFixed(1), [`after using all ${m.poolMiB} MiB of the pool`]: +(m.used - m.base).toFixed(1) });
  }
  if (json) console.log(JSON.stringify(rows)); else console.table(rows);
}
