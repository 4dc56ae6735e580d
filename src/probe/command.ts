// The `ringfence probe PATH` subcommand. Exit codes: 0 no bug evidence (or static facts only),
// 1 buggy (lost writes observed), 2 usage or set-up error (the message says the fix).
import { accessSync, constants as fsc, existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { BACKEND_CHOICES } from '../backends.js';
import type { BackendChoice } from '../types.js';
import { UsageError, enumArg, exclusive, intArg, numberArg, requires } from '../args.js';
import { reportDeadRuns } from '../cleanup.js';
import { DEFAULT_BUDGET_MS, probeDir, runProbe, type ProbeReport } from './probe.js';
import { formatReport } from './report.js';
import { defaultCacheDir, probeVerdict, type VerdictResult } from './cache.js';

interface RawOptions {
  race?: boolean; budget?: string; iterations?: string; emulateXfsBug?: boolean; backend?: string;
  json?: boolean; cache?: boolean; refresh?: boolean; cacheDir?: string;
}

const EXAMPLES = `
Examples:
  ringfence probe /var/lib/images                 # static facts: fs, mount, UUID, kernel, O_DIRECT, backends, what 'auto' decides
  ringfence probe /mnt/xfs --race                 # + the race against the kernel (5 s: 4 s check, 1 s calibration)
  ringfence probe /mnt/xfs --race --budget 30     # more trials, stronger evidence
  ringfence probe /mnt/xfs --race --emulate-xfs-bug   # the check with the pre-5.5 XFS semantics: must say "buggy", exit 1
  ringfence probe /mnt/xfs --cache                # the cached verdict for this filesystem and kernel (runs the race once)
  ringfence probe /mnt/xfs --race --json

Exit codes: 0 no lost writes observed (or static facts only), 1 buggy: lost writes observed,
2 usage or set-up error. Scratch files go into PATH/.ringfence-probe-XXXXXX and are always removed.
`;

export const PROBE_LIMITS = { budgetS: { max: 86400 }, iterations: { min: 1, max: 100_000_000 } } as const;
const BACKENDS = BACKEND_CHOICES;

export interface ProbePlan {
  path: string; dir: string; race: boolean; budgetMs?: number; iterations?: number; emulate: boolean; backend: BackendChoice;
  json: boolean; cache: boolean; refresh: boolean; cacheDir?: string;
}

function writable(p: string): boolean { try { accessSync(p, fsc.W_OK); return true; } catch { return false; } }

/** The cache directory (given or default) must be a directory, or creatable: checked before the race. */
function checkCacheDir(raw: string | undefined): string | undefined {
  const dir = raw === undefined ? defaultCacheDir() : resolve(raw);
  const name = raw === undefined ? `the cache directory ${dir} (from XDG_CACHE_HOME or ~/.cache)` : `--cache-dir ${JSON.stringify(raw)}`;
  const fix = raw === undefined ? 'pass --cache-dir DIR to keep probe.json elsewhere' : 'give a directory for probe.json (it is created if missing), or drop --cache-dir to use ~/.cache/ringfence';
  let p = dir;
  while (!existsSync(p)) { const up = dirname(p); if (up === p) break; p = up; }
  const st = statSync(p);
  if (!st.isDirectory()) throw new UsageError(`${name}: ${p} is ${st.isFile() ? 'a file' : 'not a directory'}, not a directory; ${fix}`);
  if (!writable(p)) throw new UsageError(`${name}: ${p} is not writable; ${fix}`);
  const file = join(dir, 'probe.json');
  if (existsSync(file) && !statSync(file).isFile()) throw new UsageError(`${name}: ${file} is not a regular file; remove it, or ${fix}`);
  return raw === undefined ? undefined : dir;
}

/** Every argument and flag of `ringfence probe`, checked; throws UsageError naming it. Creates nothing. */
export function checkProbeFlags(path: string, raw: RawOptions): ProbePlan {
  if (String(path).trim() === '') throw new UsageError('PATH is empty: give an existing directory (or a file in it) on the filesystem you want to probe');
  const abs = resolve(path);
  if (!existsSync(abs)) throw new UsageError(`PATH ${abs} does not exist: give an existing directory (or a file in it) on the filesystem you want to probe`);
  const st = statSync(abs);
  if (!st.isDirectory() && !st.isFile()) throw new UsageError(`PATH ${abs} is neither a directory nor a regular file: give a directory on the filesystem you want to probe`);
  exclusive({ '--budget': raw.budget, '--iterations': raw.iterations });
  const budget = numberArg('--budget', raw.budget, { above: 0, max: PROBE_LIMITS.budgetS.max, unit: 'seconds', example: 5 });
  const iterations = intArg('--iterations', raw.iterations, { ...PROBE_LIMITS.iterations, example: 2000 });
  const backend = enumArg('--backend', raw.backend, BACKENDS, 'auto');
  const emulate = raw.emulateXfsBug === true;
  if (raw.cache && emulate) throw new UsageError('--cache with --emulate-xfs-bug: emulated verdicts are never cached; drop one of them');
  if (raw.cache && raw.race) throw new UsageError('--cache and --race: --cache runs the race only when no verdict is cached (add --refresh to force one); drop --race');
  requires('--refresh', raw.refresh, '--cache', raw.cache);
  requires('--cache-dir', raw.cacheDir, '--cache', raw.cache);
  const cacheDir = raw.cache ? checkCacheDir(raw.cacheDir) : undefined;
  const budgetMs = budget === undefined ? undefined : Math.max(1, Math.round(budget * 1000));
  return {
    path, dir: st.isDirectory() ? abs : dirname(abs), race: raw.race === true || budgetMs !== undefined || iterations !== undefined || emulate,
    budgetMs, iterations, emulate, backend, json: raw.json === true, cache: raw.cache === true, refresh: raw.refresh === true, cacheDir,
  };
}

/** Adds `probe <path>` to a commander Command (the ringfence CLI, or any other). */
export function registerProbe(program: Command): Command {
  return program.command('probe')
    .description('tell whether the kernel\'s filesystem driver under PATH loses writes racing post-EOF zero-writes (the XFS fallocate/AIO+DIO bug), so the workaround can be off where it is not needed')
    .argument('<path>', 'a directory (or a file in it) on the filesystem to probe')
    .option('--race', 'run the dynamic check: generic/586- and qcow2-style races against the kernel, workaround off, plus an emulated-bug calibration')
    .option('--budget <seconds>', `time budget of the dynamic check, calibration included, above 0 and at most ${PROBE_LIMITS.budgetS.max} (default ${DEFAULT_BUDGET_MS / 1000}); implies --race`)
    .option('--iterations <n>', `run exactly N check trials (and N/4 calibration trials) instead of a time budget, ${PROBE_LIMITS.iterations.min} to ${PROBE_LIMITS.iterations.max}; implies --race`)
    .option('--emulate-xfs-bug', 'run the check itself with the pre-Linux-5.5 XFS fallocate semantics (it must report "buggy"); implies --race')
    .option('--backend <name>', `kernel I/O interface of the race: ${BACKENDS.join(', ')} (default auto)`)
    .option('--cache', 'use the cached verdict for this filesystem and kernel release, running the check (and caching it) only when there is none')
    .option('--refresh', 'with --cache: run the check again and replace the cached verdict')
    .option('--cache-dir <dir>', 'with --cache: directory of probe.json, created if missing (default ${XDG_CACHE_HOME:-~/.cache}/ringfence)')
    .option('--json', 'print one JSON object to stdout and nothing else')
    .addHelpText('after', EXAMPLES)
    .action(async (path: string, raw: RawOptions) => {
      const json = raw.json === true;
      try {
        const report = await probe(path, raw);
        process.stdout.write(json ? JSON.stringify(report) + '\n' : formatOut(report));
        process.exitCode = report.exitCode;
      } catch (err) {
        // Usage errors, set-up errors (ProbeSetupError, RaceSetupError) and environment errors
        // (the addon not built, ...) all carry a message that says the fix.
        const msg = (err as Error).message;
        if (json) process.stdout.write(JSON.stringify({ ok: false, exitCode: 2, error: msg }) + '\n');
        process.stderr.write(`ringfence probe: ${msg}\n`);
        process.exitCode = 2;
      }
    });
}

type CommandReport = ProbeReport & { cache?: (VerdictResult & { exitCode: 0 | 1 }) | null };

function formatOut(r: CommandReport): string {
  let out = formatReport(r);
  if (r.cache) {
    const e = r.cache.entry;
    out += `cache: ${r.cache.cached ? 'cached verdict' : 'fresh verdict, now cached'} in ${r.cache.cacheFile} for ${e.fsId} under kernel ${e.kernelRelease} (measured ${e.at})` +
      `${r.cache.invalidated ? `; replaced: ${r.cache.invalidated}` : ''}\n  VERDICT  ${e.summary}${e.verdict === 'clean' && !e.conclusive ? ' (inconclusive)' : ''}\n  evidence ${e.evidence}\n`;
  }
  return out;
}

async function probe(path: string, raw: RawOptions): Promise<CommandReport> {
  const p = checkProbeFlags(path, raw);
  reportDeadRuns((s) => process.stderr.write(s + '\n'), [p.dir]);
  const log = p.json ? undefined : (s: string): void => { process.stderr.write(s + '\n'); };
  if (!p.cache) {
    return await runProbe(path, { race: p.race, budgetMs: p.budgetMs, iterations: p.iterations, emulate: p.emulate, backend: p.backend, log });
  }
  const rep: CommandReport = await runProbe(path, { race: false });
  log?.('looking up the cached verdict (runs the race if there is none)...');
  const v = await probeVerdict(probeDir(path), { cacheDir: p.cacheDir, budgetMs: p.budgetMs, iterations: p.iterations, backend: p.backend, refresh: p.refresh });
  const exitCode = v.entry.verdict === 'buggy' ? 1 : 0;
  rep.cache = { ...v, exitCode };
  rep.exitCode = exitCode;
  rep.ok = exitCode === 0;
  return rep;
}
