// `ringfence probe`: static facts, and optionally the dynamic race with its calibration, for one
// directory. The verdict and the evidence model (docs/PROBE.md):
//
//   - check: the race against the real kernel, workaround off, no emulation;
//   - calibration: the same harness with the pre-5.5 XFS semantics emulated, for a share of the
//     budget, showing how often this harness, on this machine, makes a lost write happen when
//     the bug is there. A clean check means something only if calibration detected the bug.
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { BackendChoice } from '../types.js';
import { makeScratch, type Scratch } from './scratch.js';
import { staticFacts, type StaticFacts } from './static.js';
import { runRace, type RaceResult } from './race.js';

export type Verdict = 'buggy' | 'clean' | 'not-applicable';

export interface ProbeOptions {
  /** Run the dynamic check. */
  race?: boolean;
  /** Total time budget of the dynamic check, calibration included (ms). Default 5000. */
  budgetMs?: number;
  /** Trials of the check instead of a time budget (calibration gets a quarter as many more). */
  iterations?: number;
  /** Run the check itself with the pre-5.5 XFS semantics emulated (it must then say "buggy"). */
  emulate?: boolean;
  /** Share of the budget spent on calibration. Default 0.2. */
  calibrationShare?: number;
  backend?: BackendChoice;
  /** Override the kernel release reported (the race still runs on the real kernel). */
  kernelRelease?: string;
  /** Called with one-line progress messages (the CLI prints them to stderr). */
  log?: (line: string) => void;
}

export interface RaceReport {
  verdict: Verdict;
  /** "buggy: lost writes observed (k of n)" / "no lost writes in n trials" / "not applicable: ..." */
  summary: string;
  /** A clean verdict is conclusive only when calibration detected the emulated bug. */
  conclusive: boolean;
  /** Plain-language account of the evidence. */
  evidence: string;
  check: RaceResult;
  calibration: RaceResult | null;
  /** If the real bug struck each trial as often as the emulated one did: P(no loss in n trials). */
  missProbability: number | null;
  budgetMs: number | null;
  iterations: number | null;
}

export interface ProbeReport {
  ok: boolean;
  exitCode: 0 | 1;
  static: StaticFacts;
  race: RaceReport | null;
  /** Notes for the user (e.g. PATH was a file, so its directory was probed). */
  notes: string[];
}

/** Bad input or an environment where the probe cannot run: the CLI exits 2 with the message. */
export class ProbeSetupError extends Error {}

export const DEFAULT_BUDGET_MS = 5000;

/** PATH -> the directory to probe (a file's parent directory). */
export function probeDir(path: string, notes: string[] = []): string {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new ProbeSetupError(`${abs} does not exist: give an existing directory (or a file in it) on the filesystem you want to probe`);
  const st = statSync(abs);
  if (st.isDirectory()) return abs;
  if (st.isFile()) { notes.push(`${abs} is a file: probing its directory ${dirname(abs)}`); return dirname(abs); }
  throw new ProbeSetupError(`${abs} is neither a directory nor a regular file: give a directory on the filesystem you want to probe`);
}

function pct(k: number, n: number): string {
  return n === 0 ? '-' : `${((100 * k) / n).toFixed(k === n || k === 0 ? 0 : 1)}%`;
}

/** The verdict from a check and its calibration. */
export function judge(check: RaceResult, calibration: RaceResult | null): Omit<RaceReport, 'check' | 'calibration' | 'budgetMs' | 'iterations'> {
  if (check.notApplicable !== null) {
    return { verdict: 'not-applicable', summary: `not applicable: ${check.notApplicable}`, conclusive: true, evidence: check.notApplicable, missProbability: null };
  }
  const what = check.emulated ? 'with the pre-5.5 XFS semantics emulated' : 'against the running kernel, workaround off, no emulation';
  if (check.lost > 0) {
    return {
      verdict: 'buggy', summary: `buggy: lost writes observed (${check.lost} of ${check.trials})`, conclusive: true,
      evidence: `${check.lost} of ${check.trials} trials ${what} lost the write racing a post-EOF zero-write (${check.examples[0] ?? ''})`,
      missProbability: null,
    };
  }
  let evidence = `0 of ${check.trials} trials ${what} lost a write`;
  let conclusive = true, miss: number | null = null;
  if (calibration !== null) {
    const p = calibration.trials > 0 ? calibration.lost / calibration.trials : 0;
    if (calibration.notApplicable !== null || calibration.lost === 0) {
      conclusive = false;
      evidence += `; but the same harness with the bug emulated detected it in 0 of ${calibration.trials} trials here, so this harness cannot show the race on this machine: inconclusive`;
    } else {
      miss = Math.pow(1 - p, check.trials);
      evidence += `; the same harness with the bug emulated (window ${calibration.windowUs} us) detected it in ${calibration.lost} of ${calibration.trials} trials (${pct(calibration.lost, calibration.trials)}): ` +
        `a bug that struck as often would have been missed with probability ${miss < 1e-300 ? '< 1e-300' : miss.toExponential(1)}. ` +
        `The real race window is far narrower than the emulated one, so this bounds only a bug as easy to hit as the emulation`;
    }
  }
  return { verdict: 'clean', summary: `no lost writes in ${check.trials} trials`, conclusive, evidence, missProbability: miss };
}

/** Runs the probe on PATH. Scratch files live in one mkdtemp'd subdirectory, always removed. */
export async function runProbe(path: string, opts: ProbeOptions = {}): Promise<ProbeReport> {
  const notes: string[] = [];
  const dir = probeDir(path, notes);
  const log = opts.log ?? (() => {});
  let scratch: Scratch | null = null;
  try {
    try {
      scratch = makeScratch(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (opts.race) {
        throw new ProbeSetupError(`cannot create a scratch directory in ${dir} (${code}): the race needs to write there; ` +
          'run as a user who can write to it, or pick a writable directory on the same filesystem, or drop --race for the static facts only');
      }
      notes.push(`${dir} is not writable (${code}): the O_DIRECT alignment comes from the device, not from statx on a scratch file`);
    }
    const facts = staticFacts(dir, scratch, opts.kernelRelease);
    let race: RaceReport | null = null;
    if (opts.race) {
      const share = opts.calibrationShare ?? 0.2;
      const budget = opts.budgetMs ?? DEFAULT_BUDGET_MS;
      const iters = opts.iterations;
      let check: RaceResult, calibration: RaceResult | null = null;
      if (opts.emulate) {
        log(`racing ${iters !== undefined ? `${iters} trials` : `for ${budget / 1000} s`} with the XFS bug emulated...`);
        check = await runRace(scratch!, { emulate: true, backend: opts.backend, budgetMs: budget, iterations: iters, prefix: 'emu-' });
      } else {
        const checkBudget = Math.round(budget * (1 - share)), calBudget = budget - checkBudget;
        log(`racing ${iters !== undefined ? `${iters} trials` : `for ${checkBudget / 1000} s`} against the kernel, then ${iters !== undefined ? `${Math.ceil(iters / 4)} trials` : `${calBudget / 1000} s`} with the bug emulated (calibration)...`);
        check = await runRace(scratch!, { emulate: false, backend: opts.backend, budgetMs: checkBudget, iterations: iters, prefix: 'kernel-' });
        if (check.notApplicable === null) {
          calibration = await runRace(scratch!, { emulate: true, backend: opts.backend, budgetMs: calBudget,
            iterations: iters === undefined ? undefined : Math.max(1, Math.ceil((iters * share) / (1 - share))), prefix: 'cal-' });
        }
      }
      race = { ...judge(check, calibration), check, calibration, budgetMs: iters === undefined ? budget : null, iterations: iters ?? null };
    }
    const exitCode = race?.verdict === 'buggy' ? 1 : 0;
    return { ok: exitCode === 0, exitCode, static: facts, race, notes };
  } finally {
    scratch?.remove();
  }
}
