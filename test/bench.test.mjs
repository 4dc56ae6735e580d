// `ringfence bench` end to end, short: every engine that is installed runs, the JSON carries
// results and ratios, and --chart writes an SVG drawn by vega.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { scratchDir } from './helpers/env.mjs';

const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
const scratch = scratchDir('rf-bench-');
test.after(() => scratch.cleanup());
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

test('bench --json --chart: every engine measured in one run, ratios against each peer', () => {
  const chart = join(scratch.dir, 'perf.svg');
  const r = spawnSync(process.execPath, [cli, 'bench', '--dir', scratch.dir, '--rw', 'randread,read', '--qd', '1,4', '--runtime', '0.4',
    '--size', '32M', '--json', '--chart', chart], { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  const engines = new Set(j.results.map((x) => x.engine));
  for (const e of ['ringfence', 'ringfence-batch', 'node:fs']) assert.ok(engines.has(e), `${e} measured`);
  if (have('fio')) assert.ok(engines.has('fio-io_uring') && engines.has('fio-libaio'), 'fio engines measured');
  if (have('qemu-img')) assert.ok(j.results.some((x) => x.engine === 'qemu-img' && x.rw === 'read'), 'qemu-img measured on the sequential job');
  for (const x of j.results) {
    assert.ok(x.ios > 0 && x.iops > 0, `${x.engine} ${x.rw} did I/O`);
    if (x.engine !== 'qemu-img') assert.ok(x.p50us > 0 && x.p99us >= x.p50us, `${x.engine} latency percentiles`);
  }
  assert.ok(j.ratios.some((x) => x.ringfence === 'ringfence' && x.peer === 'node:fs' && x.ratio > 0));
  assert.ok(j.skipped.some((s) => s.engine === 'ringfence-batch' && s.qd === 1), 'batch skipped at QD1, with a reason');
  assert.ok(existsSync(chart));
  const svg = readFileSync(chart, 'utf8');
  assert.match(svg, /^<svg/);
  assert.match(svg, /IOPS/);
  assert.match(svg, /p99 latency/);
});

test('bench rejects bad arguments with exit 2 and says what to do', () => {
  const r = spawnSync(process.execPath, [cli, 'bench', '--dir', scratch.dir, '--rw', 'sideways'], { encoding: 'utf8' });
  assert.is(r.status, 2);
  assert.match(r.stderr, /--rw: unknown workload "sideways" \(use read, write, randread, randwrite, randrw\)/);
});

test('bench --nbd refuses the flags it would ignore (its jobs are fixed), naming them, before any work', () => {
  const r = spawnSync(process.execPath, [cli, 'bench', '--nbd', '--dir', scratch.dir, '--rw', 'randread', '--qd', '1', '--no-direct'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /--rw, --qd, --no-direct do not apply with --nbd, which runs fixed fio jobs .*: drop them/);
  assert.not.match(r.stderr, /preparing|round/, 'nothing was started');
});

// bench --nbd: our server and qemu-nbd driven by the same fio nbd jobs; needs fio and qemu-nbd
// (installed by scripts/setup.sh), otherwise reported as skipped.
const nbdPeers = have('fio') && have('qemu-nbd');
(nbdPeers ? test : test.skip)('bench --nbd: ringfence serve and qemu-nbd in one run; the report has ratios and the QD1 latencies', () => {
  const r = spawnSync(process.execPath, [cli, 'bench', '--nbd', '--dir', scratch.dir, '--size', '16M', '--runtime', '1', '--repeat', '1',
    '--engines', 'ringfence,qemu-nbd io_uring'], { encoding: 'utf8', timeout: 180_000 });
  assert.is(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n');
  for (const job of ['4k randread QD1', '4k randread QD32', '4k randwrite QD1', '4k randwrite QD32', '1M read QD8']) {
    const row = lines.find((l) => l.startsWith(job + ' '));
    assert.ok(row, `a row for ${job}:\n${r.stdout}`);
    assert.match(row, /\d\.\d\dx/, `${job} has a ratio against qemu-nbd`);
  }
  const at = lines.findIndex((l) => l.startsWith('QD1 completion latency'));
  assert.ok(at > 0, `the QD1 latency section:\n${r.stdout}`);
  const lat = lines.slice(at + 1).filter((l) => /QD1/.test(l));
  assert.is(lat.length, 4, 'two QD1 jobs x two servers');
  for (const l of lat) {
    const [p50, p90, p99, mean] = l.split('/').map((x) => Number(x.trim().split(/\s+/).pop()));
    assert.ok(p50 > 0 && p90 >= p50 && p99 >= p90 && mean > 0, `latencies in order: ${l}`);
  }
});

test.run();
