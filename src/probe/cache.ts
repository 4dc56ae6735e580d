// The 'probe' workaround policy: run the dynamic check once per filesystem and kernel, cache the
// verdict in ${XDG_CACHE_HOME:-~/.cache}/ringfence/probe.json, and turn it into a decision.
//
// probe.json: { "version": 1, "entries": { "<fsId>": CacheEntry } } where fsId is
// "uuid:<fs UUID>" or "dev:<major>:<minor>" when the filesystem has no UUID we can read. Each
// entry records the kernel release it was measured under; a different release invalidates it
// (the entry is replaced by a fresh run). Writes are atomic (temp file + rename).
import { mkdirSync, readFileSync, renameSync, writeFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { decideWorkaround } from '../policy.js';
import type { BackendChoice } from '../types.js';
import { makeScratch } from './scratch.js';
import { identify } from './static.js';
import { runRace } from './race.js';
import { DEFAULT_BUDGET_MS, ProbeSetupError, judge, type Verdict } from './probe.js';

export const CACHE_VERSION = 1;

export interface CacheEntry {
  fsId: string;
  kernelRelease: string;
  verdict: Verdict;
  summary: string;
  conclusive: boolean;
  evidence: string;
  trials: number;
  lost: number;
  calibration: { trials: number; detected: number; windowUs: number | null } | null;
  fs: string;
  mountPoint: string | null;
  /** The directory the race ran in (its scratch subdirectory, removed afterwards). */
  dir: string;
  budgetMs: number | null;
  iterations: number | null;
  /** ISO time of the run. */
  at: string;
}

export interface CacheFile { version: number; entries: Record<string, CacheEntry> }

export interface VerdictOptions {
  /** The kernel release the verdict is keyed by (default: the running one). */
  kernelRelease?: string;
  /** Directory holding probe.json. Default ${XDG_CACHE_HOME:-~/.cache}/ringfence. */
  cacheDir?: string;
  budgetMs?: number;
  iterations?: number;
  backend?: BackendChoice;
  /** Ignore a cached verdict and run the check again. */
  refresh?: boolean;
}

export interface VerdictResult {
  entry: CacheEntry;
  cached: boolean;
  /** Why an existing entry for this filesystem was discarded (kernel changed), else null. */
  invalidated: string | null;
  cacheFile: string;
}

/** Counts dynamic checks started by probeVerdict (tests use it to prove a cache hit ran nothing). */
export const probeCounters = { races: 0 };

export function defaultCacheDir(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.cache'), 'ringfence');
}

export function readCache(file: string): CacheFile {
  try {
    const c = JSON.parse(readFileSync(file, 'utf8')) as CacheFile;
    if (c && c.version === CACHE_VERSION && c.entries && typeof c.entries === 'object') return c;
  } catch { /* missing or corrupt: start afresh */ }
  return { version: CACHE_VERSION, entries: {} };
}

function writeCache(file: string, c: CacheFile): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(tmp, JSON.stringify(c, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, file);
}

async function currentRelease(): Promise<string> {
  const { loadAddon } = await import('../addon.js');
  const { release } = await import('node:os');
  try { return loadAddon().probe().kernel || release(); } catch { return release(); }
}

/** One in-flight check per cache key in this process: concurrent callers share it. */
const inflight = new Map<string, Promise<VerdictResult>>();

/**
 * The probe verdict for the filesystem holding `dir` under `kernelRelease`: from the cache when
 * an entry for this filesystem was measured under the same release, else by running the check
 * (kernel race + calibration, workaround off) in a scratch subdirectory of `dir` and caching it.
 * Throws (RaceSetupError, ProbeSetupError, fs errors) when the check cannot run there.
 */
export async function probeVerdict(dir: string, opts: VerdictOptions = {}): Promise<VerdictResult> {
  const kernelRelease = opts.kernelRelease ?? await currentRelease();
  const cacheFile = join(opts.cacheDir ?? defaultCacheDir(), 'probe.json');
  const id = identify(dir);
  const key = `${cacheFile}\0${id.fsId}\0${kernelRelease}`;
  const cache = readCache(cacheFile);
  const old = cache.entries[id.fsId];
  if (!opts.refresh && old && old.kernelRelease === kernelRelease) return { entry: old, cached: true, invalidated: null, cacheFile };
  const running = inflight.get(key);
  if (running) return running;
  const p = (async (): Promise<VerdictResult> => {
    probeCounters.races++;
    const budget = opts.budgetMs ?? DEFAULT_BUDGET_MS;
    const share = 0.2;
    let scratch;
    try {
      scratch = makeScratch(id.realpath);
    } catch (err) {
      throw new ProbeSetupError(`cannot create a scratch directory in ${id.realpath} (${(err as NodeJS.ErrnoException).code}): the dynamic check needs to write there; pick a writable directory on the same filesystem`);
    }
    let entry: CacheEntry;
    try {
      const check = await runRace(scratch, { emulate: false, backend: opts.backend, budgetMs: Math.round(budget * (1 - share)), iterations: opts.iterations, prefix: 'kernel-' });
      const calibration = check.notApplicable !== null ? null : await runRace(scratch, {
        emulate: true, backend: opts.backend, budgetMs: budget - Math.round(budget * (1 - share)),
        iterations: opts.iterations === undefined ? undefined : Math.max(1, Math.ceil(opts.iterations / 4)), prefix: 'cal-',
      });
      const j = judge(check, calibration);
      entry = {
        fsId: id.fsId, kernelRelease, verdict: j.verdict, summary: j.summary, conclusive: j.conclusive, evidence: j.evidence,
        trials: check.trials, lost: check.lost,
        calibration: calibration ? { trials: calibration.trials, detected: calibration.lost, windowUs: calibration.windowUs } : null,
        fs: id.fs, mountPoint: id.mount?.point ?? null, dir: id.realpath,
        budgetMs: opts.iterations === undefined ? budget : null, iterations: opts.iterations ?? null, at: new Date().toISOString(),
      };
    } finally {
      scratch.remove();
    }
    // Re-read: another process may have written other filesystems' entries meanwhile.
    const fresh = readCache(cacheFile);
    fresh.entries[id.fsId] = entry;
    writeCache(cacheFile, fresh);
    const invalidated = old && old.kernelRelease !== kernelRelease ? `the cached verdict was measured under kernel ${old.kernelRelease}, not ${kernelRelease}` : null;
    return { entry, cached: false, invalidated, cacheFile };
  })();
  inflight.set(key, p);
  try { return await p; } finally { inflight.delete(key); }
}

export interface ProbePolicyResult {
  enabled: boolean;
  /** For file.info().xfsWorkaround.rule: says that the verdict came from the probe, cached or fresh. */
  rule: string;
  cached: boolean;
  /** The probe's verdict, or null when the probe could not run (the rule then falls back to 'auto'). */
  verdict: Verdict | null;
}

export interface ProbePolicyOptions extends Omit<VerdictOptions, 'kernelRelease'> {}

/** Per-process memo: (st_dev, release) -> decision, so opening many files costs one lookup. */
const memo = new Map<string, Promise<ProbePolicyResult>>();

/**
 * What xfsWorkaround: 'probe' decides for a file at `path` (which may not exist yet: its
 * directory is probed). Buggy -> on; clean and conclusive -> off; otherwise (inconclusive, not
 * applicable, or the probe could not run) the 'auto' decision, with the reason in the rule.
 */
export async function resolveProbePolicy(path: string, kernelRelease: string, opts: ProbePolicyOptions = {}): Promise<ProbePolicyResult> {
  let dir = path;
  try { if (!statSync(path).isDirectory()) dir = dirname(path); } catch { dir = dirname(path); }
  let dev = '?';
  try { dev = String(statSync(dir).dev); } catch { /* reported below */ }
  const mkey = `${opts.cacheDir ?? ''}\0${dev}\0${kernelRelease}`;
  if (!opts.refresh) {
    const m = memo.get(mkey);
    if (m) return m.then((r) => ({ ...r, cached: true, rule: r.cached ? r.rule : r.rule.replace('(fresh run, cached in', '(cached: measured earlier by this process, stored in') }));
  }
  const p = decide(dir, kernelRelease, opts);
  memo.set(mkey, p);
  p.then((r) => { if (r.verdict === null) memo.delete(mkey); }, () => memo.delete(mkey));
  return p;
}

async function decide(dir: string, kernelRelease: string, opts: ProbePolicyOptions): Promise<ProbePolicyResult> {
  const fallback = (why: string): ProbePolicyResult => {
    let magic = 0, resolution;
    try { ({ magic, resolution } = identify(dir)); } catch { /* unknown fs: auto assumes the bug */ }
    const auto = decideWorkaround('auto', magic, kernelRelease, false, resolution);
    return { enabled: auto.enabled, rule: `probe: ${why}; falling back to ${auto.rule}`, cached: false, verdict: null };
  };
  let v: VerdictResult;
  try {
    v = await probeVerdict(dir, { ...opts, kernelRelease });
  } catch (err) {
    return fallback(`the dynamic check could not run in ${dir} (${(err as Error).message})`);
  }
  const e = v.entry;
  const where = `${e.fs} ${e.fsId}, kernel ${e.kernelRelease}`;
  const src = v.cached ? `cached ${e.at} in ${v.cacheFile}` : `fresh run, cached in ${v.cacheFile}${v.invalidated ? `; replaced ${v.invalidated}` : ''}`;
  const cal = e.calibration ? `; the emulated bug was detected in ${e.calibration.detected} of ${e.calibration.trials} calibration trials` : '';
  if (e.verdict === 'buggy') {
    return { enabled: true, rule: `probe: ${e.summary} on ${where} (${src})`, cached: v.cached, verdict: e.verdict };
  }
  if (e.verdict === 'clean' && e.conclusive) {
    return { enabled: false, rule: `probe: ${e.summary}${cal} on ${where} (${src})`, cached: v.cached, verdict: e.verdict };
  }
  const r = fallback(`${e.verdict === 'clean' ? `${e.summary} but inconclusive${cal}` : e.summary} on ${where} (${src})`);
  return { ...r, cached: v.cached, verdict: e.verdict };
}

/** Forgets the per-process memo (tests). */
export function clearProbeMemo(): void { memo.clear(); }
