// Runs scripts/sanitize.sh (ASan+UBSan build with the native tests, an engine workload and a
// ring fuzz under it; valgrind memcheck on a small engine workload; the normal addon rebuilt
// afterwards, always) as part of the suite, where the tools exist.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { accessSync, constants, existsSync } from 'node:fs';
import { join } from 'node:path';
import { skipUnless } from './helpers/env.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

const writable = (dir) => { try { accessSync(dir, constants.W_OK); return true; } catch { return false; } };
const missing = ['gcc', 'valgrind'].filter((c) => !have(c));
// Decided before the test is defined, so that a machine without the tools counts it as skipped.
const t = skipUnless(test, missing.length ? `${missing.join(', ')} not installed (apt-get install ${missing.join(' ')})`
  : !writable(root) || (existsSync(join(root, 'build')) && !writable(join(root, 'build'))) ? `${root} is not writable: scripts/sanitize.sh rebuilds the addon in build/`
    : null);

t('the addon has no sanitizer or valgrind findings (scripts/sanitize.sh)', () => {
  const r = spawnSync('bash', ['scripts/sanitize.sh'], { cwd: root, encoding: 'utf8', timeout: 600_000 });
  const out = `${r.stdout}\n${r.stderr}`;
  for (const line of out.split('\n').filter((l) => /^step |^sanitize:/.test(l))) console.log(`  ${line}`);
  assert.is(r.status, 0, out.split('\n').slice(-15).join('\n'));
  assert.match(out, /sanitize: PASS/);
});

test.run();
