// Runs scripts/sanitize.sh (ASan+UBSan build with the native tests, an engine workload and a
// ring fuzz under it; valgrind memcheck on a small engine workload; the normal addon rebuilt
// afterwards, always) as part of the suite, where the tools exist.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

test('the addon has no sanitizer or valgrind findings (scripts/sanitize.sh)', () => {
  const missing = ['gcc', 'valgrind'].filter((c) => !have(c));
  if (missing.length) { console.log(`  skip: ${missing.join(', ')} not installed (apt-get install ${missing.join(' ')})`); return; }
  const r = spawnSync('bash', ['scripts/sanitize.sh'], { cwd: root, encoding: 'utf8', timeout: 600_000 });
  const out = `${r.stdout}\n${r.stderr}`;
  for (const line of out.split('\n').filter((l) => /^step |^sanitize:/.test(l))) console.log(`  ${line}`);
  assert.is(r.status, 0, out.split('\n').slice(-15).join('\n'));
  assert.match(out, /sanitize: PASS/);
});

test.run();
