#!/usr/bin/env node
// Measures how reliably `ringfence probe --emulate-xfs-bug` reports "buggy": runs the probe N
// times, each in a fresh process, at a given budget, and prints the detection rate.
//
//   node dist/src/probe/detection.js [--runs 100] [--budget 5] [--dir DIR | --xfs 512M] [--backend auto]
//
// Without --dir it makes a temporary loop-mounted XFS volume when root (removed afterwards),
// else it uses a temporary directory under /var/tmp. Exit 0 when >= 99% of runs detected the bug.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultVolume, dirVolume, makeXfsVolume, parseSize, type Volume } from '../volume.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '100' },
    budget: { type: 'string', default: '5' },
    dir: { type: 'string' },
    xfs: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
  },
});
const runs = Number(values.runs), budget = Number(values.budget);
if (!(runs >= 1) || !Number.isInteger(runs) || !(budget > 0)) {
  process.stderr.write('usage: detection.js [--runs N] [--budget SECONDS] [--dir DIR | --xfs SIZE] [--backend NAME] [--json]\n');
  process.exit(2);
}
const log = (s: string): void => { if (!values.json) process.stdout.write(s + '\n'); };
const vol: Volume = values.dir ? dirVolume(values.dir) : values.xfs ? makeXfsVolume(parseSize(values.xfs)) : defaultVolume(undefined, 512 * 1024 ** 2);
const main = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
const rows: { run: number; exit: number | null; verdict: string; trials: number; lost: number; ms: number }[] = [];
try {
  log(`probe --emulate-xfs-bug --budget ${budget}: ${runs} runs on ${vol.note}`);
  for (let i = 1; i <= runs; i++) {
    const t = performance.now();
    const r = spawnSync(process.execPath, [main, 'probe', vol.dir, '--emulate-xfs-bug', '--budget', String(budget), '--backend', values.backend!, '--json'],
      { encoding: 'utf8', timeout: (budget + 60) * 1000 });
    let verdict = 'error', trials = 0, lost = 0;
    try {
      const j = JSON.parse(r.stdout) as { race?: { verdict: string; check: { trials: number; lost: number } }; error?: string };
      verdict = j.race?.verdict ?? `error: ${j.error}`;
      trials = j.race?.check.trials ?? 0; lost = j.race?.check.lost ?? 0;
    } catch { verdict = `error: ${(r.stderr || r.error?.message || '').trim().split('\n')[0]}`; }
    const row = { run: i, exit: r.status, verdict, trials, lost, ms: Math.round(performance.now() - t) };
    rows.push(row);
    log(`run ${String(i).padStart(3)}: exit ${row.exit} ${verdict} (${lost} of ${trials} trials lost the write) ${row.ms} ms`);
  }
} finally {
  vol.cleanup();
}
const detected = rows.filter((r) => r.exit === 1 && r.verdict === 'buggy').length;
const trials = rows.map((r) => r.trials).sort((a, b) => a - b);
const rates = rows.filter((r) => r.trials > 0).map((r) => r.lost / r.trials).sort((a, b) => a - b);
const med = <T>(a: T[]): T | undefined => a[Math.floor(a.length / 2)];
const summary = {
  runs, budgetSeconds: budget, fs: vol.fs, where: vol.kind, detected, detectionRate: detected / runs,
  trialsPerRun: { min: trials[0], median: med(trials), max: trials[trials.length - 1] },
  lostPerTrial: { min: rates[0], median: med(rates), max: rates[rates.length - 1] },
};
if (values.json) process.stdout.write(JSON.stringify({ ...summary, rows }) + '\n');
else log(`DETECTED ${detected} of ${runs} runs (${(100 * detected / runs).toFixed(1)}%) at --budget ${budget} on ${vol.fs} (${vol.kind}); ` +
  `trials per run ${summary.trialsPerRun.min}..${summary.trialsPerRun.max} (median ${summary.trialsPerRun.median}); ` +
  `share of trials that lost the write ${rates[0]?.toFixed(3)}..${rates[rates.length - 1]?.toFixed(3)} (median ${med(rates)?.toFixed(3)})`);
process.exitCode = detected >= Math.ceil(0.99 * runs) ? 0 : 1;
