// The `ringfence probe PATH` subcommand. Exit codes: 0 no bug evidence (or static facts only),
// 1 buggy (lost writes observed), 2 usage or set-up error (the message says the fix).
import { Option, type Command } from 'commander';
import type { BackendChoice } from '../types.js';
import { DEFAULT_BUDGET_MS, probeDir, runProbe, type ProbeReport } from './probe.js';
import { formatReport } from './report.js';
import { probeVerdict, type VerdictResult } from './cache.js';

interface RawOptions {
  race?: boolean; budget?: string; iterations?: string; emulateXfsBug?: boolean; backend: BackendChoice;
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

class UsageError extends Error {}

function seconds(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v.trim()) || !(n > 0) || n > 86400) throw new UsageError(`--budget must be a number of seconds above 0 (at most 86400), e.g. --budget 5; got "${v}"`);
  return Math.round(n * 1000);
}

function count(v: string): number {
  if (!/^\d+$/.test(v.trim()) || Number(v) < 1 || Number(v) > 100_000_000) throw new UsageError(`--iterations must be an integer from 1 to 100000000, e.g. --iterations 2000; got "${v}"`);
  return Number(v);
}

/** Adds `probe <path>` to a commander Command (the ringfence CLI, or any other). */
export function registerProbe(program: Command): Command {
  return program.command('probe')
    .description('tell whether the kernel\'s filesystem driver under PATH loses writes racing post-EOF zero-writes (the XFS fallocate/AIO+DIO bug), so the workaround can be off where it is not needed')
    .argument('<path>', 'a directory (or a file in it) on the filesystem to probe')
    .option('--race', 'run the dynamic check: generic/586- and qcow2-style races against the kernel, workaround off, plus an emulated-bug calibration')
    .option('--budget <seconds>', `time budget of the dynamic check, calibration included (default ${DEFAULT_BUDGET_MS / 1000}); implies --race`)
    .option('--iterations <n>', 'run exactly N check trials (and N/4 calibration trials) instead of a time budget; implies --race')
    .option('--emulate-xfs-bug', 'run the check itself with the pre-Linux-5.5 XFS fallocate semantics (it must report "buggy"); implies --race')
    .addOption(new Option('--backend <name>', 'kernel I/O interface of the race').choices(['auto', 'io_uring', 'libaio', 'sync']).default('auto'))
    .option('--cache', 'use the cached verdict for this filesystem and kernel release, running the check (and caching it) only when there is none')
    .option('--refresh', 'with --cache: run the check again and replace the cached verdict')
    .option('--cache-dir <dir>', 'with --cache: directory of probe.json (default ${XDG_CACHE_HOME:-~/.cache}/ringfence)')
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
  if (raw.budget !== undefined && raw.iterations !== undefined) throw new UsageError('--budget and --iterations are mutually exclusive: give one');
  const budgetMs = raw.budget === undefined ? undefined : seconds(raw.budget);
  const iterations = raw.iterations === undefined ? undefined : count(raw.iterations);
  const race = raw.race === true || budgetMs !== undefined || iterations !== undefined || raw.emulateXfsBug === true;
  if (raw.cache && raw.emulateXfsBug) throw new UsageError('--cache with --emulate-xfs-bug: emulated verdicts are never cached; drop one of them');
  if (raw.cache && raw.race) throw new UsageError('--cache and --race: --cache runs the race only when no verdict is cached (add --refresh to force one); drop --race');
  if ((raw.refresh || raw.cacheDir) && !raw.cache) throw new UsageError('--refresh and --cache-dir only apply with --cache');
  const log = raw.json ? undefined : (s: string): void => { process.stderr.write(s + '\n'); };
  if (!raw.cache) {
    const rep = await runProbe(path, { race, budgetMs, iterations, emulate: raw.emulateXfsBug === true, backend: raw.backend, log });
    return rep;
  }
  const rep: CommandReport = await runProbe(path, { race: false });
  log?.('looking up the cached verdict (runs the race if there is none)...');
  const v = await probeVerdict(probeDir(path), { cacheDir: raw.cacheDir, budgetMs, iterations, backend: raw.backend, refresh: raw.refresh === true });
  const exitCode = v.entry.verdict === 'buggy' ? 1 : 0;
  rep.cache = { ...v, exitCode };
  rep.exitCode = exitCode;
  rep.ok = exitCode === 0;
  return rep;
}
