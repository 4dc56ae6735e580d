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

test.run();
