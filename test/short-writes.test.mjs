// write() never resolves with fewer bytes than asked: a short write (the filesystem ran out
// of space or the file hit its size limit part-way) is continued, and the request rejects
// with the error the rest fails with. Made deterministic with RLIMIT_FSIZE (ulimit -f) in a
// child: the kernel writes up to the limit, then fails the rest with EFBIG.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon } from '../dist/src/addon.js';
import { scratchDir, availableBackends, engineOptions } from './helpers/env.mjs';

const BACKENDS = availableBackends(loadAddon().probe());
const scratch = scratchDir('rf-short-');
test.after(() => scratch.cleanup());
const index = new URL('../dist/src/index.js', import.meta.url).href;

for (const backend of BACKENDS) {
  for (const direct of [true, false]) {
    test(`${backend} ${direct ? 'O_DIRECT' : 'buffered'}: a write cut short by the file size limit rejects (EFBIG) instead of resolving short`, () => {
      const path = join(scratch.dir, `short-${backend}-${direct}`);
      const script = `process.on('SIGXFSZ', () => {});
        const { Engine } = await import('${index}');
        const engine = await Engine.start(${JSON.stringify(engineOptions({ backend, workers: 1 }))});
        const f = await engine.open('${path}', { create: true, truncate: true, direct: ${direct} });
        const buf = engine.alloc(16384).fill(7);
        const out = await f.write(buf, 0).then((n) => ({ n }), (e) => ({ code: e.code, message: e.message }));
        await engine.close();
        console.log(JSON.stringify(out));`;
      // ulimit -f counts 1024-byte blocks: 8 KiB may be written, the rest of the 16 KiB may not.
      const r = spawnSync('bash', ['-c', `ulimit -f 8 && exec "${process.execPath}" --input-type=module -e "$0"`, script], { encoding: 'utf8', timeout: 30000 });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      assert.ok(line.startsWith('{'), `child output: ${r.stdout} ${r.stderr.slice(-400)}`);
      const out = JSON.parse(line);
      assert.is(out.n, undefined, `write() must not resolve short (it resolved ${out.n})`);
      assert.is(out.code, 'EFBIG', out.message);
      assert.match(out.message, /first 8192 bytes/);
      assert.is(statSync(path).size, 8192, 'what fits was written');
    });
  }
}

test.run();
