// The runnable examples, run the way a user runs them (`node examples/<name>.mjs`, as child
// processes of this Node): examples/piscina-shared-file.mjs (a piscina pool whose threads each
// have an engine, writing one file with unaligned part boundaries; the main thread verifies it)
// and examples/basic.mjs. Each must exit 0 and say what it verified; the image the piscina
// example leaves at a path it was given is checked here again, independently, with node:fs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scratchDir } from './helpers/env.mjs';
import { fillPattern } from '../examples/piscina-task.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const scratch = scratchDir('rf-examples-');
test.after(() => scratch.cleanup());

function run(example, args = [], timeout = 120_000) {
  const r = spawnSync(process.execPath, [join(ROOT, 'examples', example), ...args], { cwd: ROOT, encoding: 'utf8', timeout, maxBuffer: 16 << 20 });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`;
  return { code: r.status, signal: r.signal, pid: r.pid, stdout: r.stdout ?? '', out };
}

/** The number in group `group` of the first match of `re` in `stdout`; fails the test if none. */
function num(stdout, re, group = 1) {
  const m = stdout.match(re);
  assert.ok(m, `no line matching ${re} in:\n${stdout}`);
  return Number(m[group]);
}

test('piscina-shared-file: 4 pool threads, one shared table, every byte verified', () => {
  const image = join(scratch.dir, 'shared.img');
  const t0 = performance.now();
  const r = run('piscina-shared-file.mjs', [image]);
  const secs = (performance.now() - t0) / 1000;
  console.log(r.stdout.trimEnd().replace(/^/gm, '  | '));
  assert.is(r.code, 0, `exit ${r.code} (signal ${r.signal}):\n${r.out}`);
  assert.match(r.stdout, /^verification: PASSED/m);
  assert.not.match(r.out, /FAILED|WRONG/);
  assert.match(r.stdout, /^pass 1 \(cold.*read back: all bytes right$/m);
  assert.match(r.stdout, /^pass 2 \(warm.*read back: all bytes right$/m);

  // Every unaligned boundary gave two padded (serialising) writes per pass, no more, no less.
  const padded = num(r.stdout, /padded edge writes \(serialising entries\): (\d+), expected (\d+)/);
  const expected = num(r.stdout, /padded edge writes \(serialising entries\): (\d+), expected (\d+)/, 2);
  assert.ok(expected > 0, 'the example has unaligned boundaries');
  assert.is(padded, expected);
  // One table for the whole process: the last pool engine to open the file saw every engine
  // that had opened it before (they keep it open) plus the main thread's.
  const seen = num(r.stdout, /table participants seen by tasks: up to (\d+) \((\d+) pool engines/);
  const engines = num(r.stdout, /table participants seen by tasks: up to (\d+) \((\d+) pool engines/, 2);
  const ran = num(r.stdout, /pool threads that ran parts: (\d+) of (\d+)/);
  assert.ok(engines >= 1 && engines <= 4, `pool engines: ${engines}`);
  assert.is(engines, ran);
  assert.is(seen, engines + 1, 'every pool engine and the main thread joined one table');
  assert.is(num(r.stdout, /after the pool threads closed their engines: (\d+)/), 1, 'the pool engines left the table');

  // The image the example left (a path it was given is kept), read here with node:fs: pass 2's pattern.
  assert.is(statSync(image).size, 64 << 20);
  const got = readFileSync(image);
  const want = fillPattern(Buffer.alloc(got.length), 0, 2);
  if (!got.equals(want)) {
    let bad = 0, first = -1;
    for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) { bad++; if (first < 0) first = i; }
    assert.unreachable(`${bad} bytes of ${image} differ from pass 2's pattern, the first at ${first}`);
  }
  assert.ok(secs < 60, `took ${secs.toFixed(1)} s (it should take a few seconds)`);
});

test('piscina-shared-file: the default temporary image is removed at the end', () => {
  const r = run('piscina-shared-file.mjs');
  assert.is(r.code, 0, `exit ${r.code} (signal ${r.signal}):\n${r.out}`);
  assert.match(r.stdout, /^verification: PASSED/m);
  const m = r.stdout.match(/^ {2}file: (\S+) /m);
  assert.ok(m, `no "file:" line in:\n${r.stdout}`);
  assert.ok(m[1].endsWith(`/ringfence-piscina-${r.pid}.img`), m[1]);
  assert.not.ok(existsSync(m[1]), `${m[1]} was left behind`);
});

test('piscina-shared-file: a path it cannot open fails with a non-zero exit and no PASSED', () => {
  const r = run('piscina-shared-file.mjs', [join(scratch.dir, 'no-such-dir', 'x.img')]);
  assert.is.not(r.code, 0, `expected a failure:\n${r.out}`);
  assert.match(r.out, /ENOENT/);
  assert.not.match(r.stdout, /PASSED/);
});

test('basic: the API tour runs standalone (no root, no XFS) and reads back what it wrote', () => {
  const dir = join(scratch.dir, 'basic');
  mkdirSync(dir);
  const r = run('basic.mjs', [dir]);
  console.log(r.stdout.split('\n').slice(0, 6).join('\n').replace(/^/gm, '  | '));
  assert.is(r.code, 0, `exit ${r.code} (signal ${r.signal}):\n${r.out}`);
  assert.match(r.stdout, /^write -> 4096$/m);
  assert.match(r.stdout, /^batch -> \[ 4096, 4096, 0 \]$/m);
  assert.match(r.stdout, /^read back equals: true$/m);
  assert.match(r.stdout, /^expected error: ERR_RINGFENCE_UNALIGNED/m);
  assert.equal(readdirSync(dir), [], 'basic.mjs removes its file');
});

test.run();
