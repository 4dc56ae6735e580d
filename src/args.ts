// Command-line argument checks shared by every ringfence command. Each command validates all of
// its flags in one function before it does any work (no temp directory, no mount, no engine);
// a bad value throws a UsageError whose message names the flag, the value given and what is
// allowed, e.g.
//   --workers "99": too large; give an integer from 1 to 31 (the engine's maximum), e.g. --workers 4
// The CLI prints it and exits 2.
import { accessSync, constants as fsc, existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** A usage error: exit code 2, the message says what was wrong and what to do. */
export class UsageError extends Error {
  readonly usage = true;
  constructor(message: string) { super(message); this.name = 'UsageError'; }
}

const KiB = 1024, MiB = KiB ** 2, GiB = KiB ** 3, TiB = KiB ** 4;

/** 4096 -> "4K", 314572800 -> "300M", 1000 -> "1000" (bytes, exact when possible). */
export function formatSize(n: number): string {
  for (const [unit, mult] of [['T', TiB], ['G', GiB], ['M', MiB], ['K', KiB]] as const) {
    if (n >= mult && n % mult === 0) return `${n / mult}${unit}`;
  }
  if (n >= MiB) return `${(n / MiB).toFixed(1)}M`;
  return String(n);
}

/** The value as the user typed it, quoted. */
function q(raw: unknown): string { return JSON.stringify(String(raw)); }

/** Throws `${flag} "${raw}": ${problem}; ${fix}` (for what depends on the situation: paths, space). */
export function bad(flag: string, raw: unknown, problem: string, fix: string): never {
  throw new UsageError(`${flag} ${q(raw)}: ${problem}; ${fix}`);
}

/** Throws `${flag} must be ${allowed}, e.g. ${flag} ${example}; got "${raw}"` (the project's style for ranges). */
export function mustBe(flag: string, raw: unknown, allowed: string, example?: number | string, after = ''): never {
  throw new UsageError(`${flag} must be ${allowed}${example !== undefined ? `, e.g. ${flag} ${example}` : ''}; got ${q(raw)}${after}`);
}

export interface IntSpec {
  min: number;
  max: number;
  /** Shown as "e.g. --flag 4". */
  example?: number | string;
  /** Why the maximum is what it is, e.g. "the engine's maximum". */
  maxWhy?: string;
}

function intRange(s: IntSpec): string {
  return `an integer from ${s.min} to ${s.max}${s.maxWhy ? ` (${s.maxWhy})` : ''}`;
}

/** A whole decimal number in [min, max]; undefined when the flag was not given. */
export function intArg(flag: string, raw: string | undefined, spec: IntSpec): number | undefined {
  if (raw === undefined) return undefined;
  const t = String(raw).trim();
  const n = Number(t);
  if (!/^-?\d+$/.test(t) || n < spec.min || n > spec.max) mustBe(flag, raw, intRange(spec), spec.example);
  return n;
}

export interface NumberSpec {
  /** Exclusive lower bound (e.g. 0 for "above 0"). */
  above: number;
  max: number;
  unit: string;
  example?: number | string;
}

/** A plain unsigned decimal (`2`, `0.5`, `.5`, `3.`; no sign, exponent, hex or spaces inside), else NaN. */
function plainDecimal(raw: string): number {
  const t = String(raw).trim();
  return /^(\d+(\.\d*)?|\.\d+)$/.test(t) ? Number(t) : NaN;
}

/** A decimal number (no exponent, no sign) in (above, max]; undefined when not given. */
export function numberArg(flag: string, raw: string | undefined, spec: NumberSpec): number | undefined {
  if (raw === undefined) return undefined;
  const n = plainDecimal(raw);
  if (Number.isNaN(n) || !(n > spec.above) || n > spec.max) {
    mustBe(flag, raw, `a number of ${spec.unit} above ${spec.above} and at most ${spec.max}`, spec.example);
  }
  return n;
}

/**
 * 0 (which turns something off, said in `zeroMeans`) or a decimal number in [min, max];
 * undefined when not given. E.g. `--warmup 0` or `--warmup 2`.
 */
export function zeroOrNumberArg(flag: string, raw: string | undefined, spec: { min: number; max: number; unit: string; zeroMeans: string; example?: number | string }): number | undefined {
  if (raw === undefined) return undefined;
  const n = plainDecimal(raw);
  if (Number.isNaN(n) || !(n === 0 || (n >= spec.min && n <= spec.max))) {
    mustBe(flag, raw, `0 (${spec.zeroMeans}) or a number of ${spec.unit} from ${spec.min} to ${spec.max}`, spec.example);
  }
  return n;
}

/** Parses sizes such as 512M, 1G, 2GiB, 4k, 4096 (binary multiples) to bytes, unrounded; throws RangeError. */
export function parseSizeExact(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(String(text).trim());
  if (!m) throw new RangeError(`bad size "${text}": use a number with an optional K, M, G or T suffix (e.g. 1G)`);
  const mult = { '': 1, k: KiB, m: MiB, g: GiB, t: TiB }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * mult;
}

/** Parses sizes such as 512M, 1G, 2GiB, 4096, rounded to whole bytes. Throws RangeError. */
export function parseSize(text: string): number {
  return Math.round(parseSizeExact(text));
}

export interface SizeSpec {
  min: number;
  max: number;
  /** The size must be a multiple of this. */
  multipleOf?: number;
  powerOfTwo?: boolean;
  example?: string;
  /** Why, in the parenthesis after the range, e.g. "mkfs.xfs refuses smaller filesystems". */
  why?: string;
}

function sizeRange(s: SizeSpec): string {
  const what = s.powerOfTwo ? 'a power of two' : 'a size';
  const mult = s.multipleOf && !s.powerOfTwo ? ` that is a multiple of ${s.multipleOf}` : '';
  return `${what} from ${formatSize(s.min)} to ${formatSize(s.max)}${mult} (K, M, G or T suffix${s.why ? `; ${s.why}` : ''})`;
}

/** A size in bytes (K, M, G, T suffixes) within the spec; undefined when not given. */
export function sizeArg(flag: string, raw: string | undefined, spec: SizeSpec): number | undefined {
  if (raw === undefined) return undefined;
  let n = NaN;
  try { n = parseSizeExact(raw); } catch { /* below */ }
  const ok = Number.isSafeInteger(n) && n >= spec.min && n <= spec.max &&
    !(spec.powerOfTwo && (n & (n - 1)) !== 0) && !(spec.multipleOf && n % spec.multipleOf !== 0);
  if (!ok) mustBe(flag, raw, sizeRange(spec), spec.example, Number.isFinite(n) && !Number.isInteger(n) ? ' (not a whole number of bytes)' : '');
  return n;
}

/** One of `values`. */
export function enumArg<T extends string>(flag: string, raw: string | undefined, values: readonly T[], dflt: T): T {
  if (raw === undefined) return dflt;
  const t = String(raw).trim();
  if (!(values as readonly string[]).includes(t)) mustBe(flag, raw, 'one of the allowed choices', undefined, `. Allowed choices are ${values.join(', ')}.`);
  return t as T;
}

/** A comma-separated list: no empty items, no duplicates (kept in the order given). */
export function listArg<T>(flag: string, raw: string, item: (s: string) => T, allowed: string): T[] {
  const parts = String(raw).split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) mustBe(flag, raw, `a comma-separated list of ${allowed}, without empty items`);
  const seen = new Set<string>();
  const out: T[] = [];
  for (const p of parts) {
    if (seen.has(p)) mustBe(flag, raw, `a list that names each of ${allowed} at most once`, undefined, ` ("${p}" twice)`);
    seen.add(p);
    out.push(item(p));
  }
  return out;
}

/** A comma-separated list of choices. */
export function enumListArg<T extends string>(flag: string, raw: string, values: readonly T[], what = 'value'): T[] {
  return listArg(flag, raw, (s) => {
    if (!(values as readonly string[]).includes(s)) throw new UsageError(`${flag}: unknown ${what} "${s}" (use ${values.join(', ')})`);
    return s as T;
  }, values.join(', '));
}

/** A comma-separated list of integers within spec. */
export function intListArg(flag: string, raw: string, spec: IntSpec): number[] {
  return listArg(flag, raw, (s) => {
    if (!/^\d+$/.test(s) || Number(s) < spec.min || Number(s) > spec.max) {
      mustBe(flag, raw, `a comma-separated list of integers from ${spec.min} to ${spec.max}`, spec.example, ` ("${s}" is not)`);
    }
    return Number(s);
  }, `integers from ${spec.min} to ${spec.max}`);
}

function writable(path: string): boolean {
  try { accessSync(path, fsc.W_OK); return true; } catch { return false; }
}

/** An existing directory (writable when asked); returns its absolute path. */
export function dirArg(flag: string, raw: string | undefined, opts: { writable?: boolean } = {}): string | undefined {
  if (raw === undefined) return undefined;
  if (String(raw).trim() === '') bad(flag, raw, 'empty', 'give the path of an existing directory');
  const dir = resolve(raw);
  if (!existsSync(dir)) throw new UsageError(`${flag}: ${dir} is not a directory: create it first or pick another ${flag} (nothing exists at that path)`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`${flag}: ${dir} is not a directory (it is a ${statSync(dir).isFile() ? 'file' : 'special file'}): pick a directory for ${flag}`);
  if (opts.writable && !writable(dir)) bad(flag, raw, `${dir} is not writable`, 'give a directory you can write to (or run as its owner)');
  return dir;
}

/**
 * A file the command will write: its directory must exist and be writable, and the path must
 * not be a directory (or, unless `allowExisting`, an existing file). Returns the absolute path.
 */
export function outputFileArg(flag: string, raw: string | undefined, opts: { allowExisting?: boolean; replace?: boolean; existingFix?: string } = {}): string | undefined {
  if (raw === undefined) return undefined;
  if (String(raw).trim() === '') bad(flag, raw, 'empty', 'give a file path in an existing, writable directory');
  const path = resolve(raw);
  const parent = dirname(path);
  if (!existsSync(parent)) bad(flag, raw, `the directory ${parent} does not exist`, 'create it first, or give a path in an existing, writable directory');
  if (!statSync(parent).isDirectory()) bad(flag, raw, `${parent} is not a directory`, 'give a path in an existing, writable directory');
  if (existsSync(path)) {
    const st = statSync(path);
    if (st.isDirectory()) bad(flag, raw, `${path} is a directory`, 'give a file path');
    if (st.isBlockDevice() || st.isCharacterDevice()) bad(flag, raw, `${path} is a device`, 'ringfence never writes to a device through this flag: give a regular file path');
    if (!st.isFile()) bad(flag, raw, `${path} is not a regular file`, 'give a regular file path');
    if (!opts.allowExisting) bad(flag, raw, `${path} exists`, opts.existingFix ?? 'give a path that does not exist yet');
    if (!writable(path)) bad(flag, raw, `${path} is not writable`, 'give a file you can write to');
  }
  // A new file, or one deleted and made anew (`replace`: --image --force), needs the directory.
  if ((!existsSync(path) || opts.replace) && !writable(parent)) bad(flag, raw, `the directory ${parent} is not writable`, 'give a path in a directory you can write to');
  return path;
}

/** At most one of the given flags. `given` maps flag names to their values (undefined/false: absent). */
export function exclusive(given: Record<string, unknown>): void {
  const set = Object.entries(given).filter(([, v]) => v !== undefined && v !== false).map(([k]) => k);
  if (set.length > 1) {
    throw new UsageError(`${set.join(' and ')} are mutually exclusive: give only one of ${Object.keys(given).join(', ')}`);
  }
}

/** `flag` only makes sense with `needs`. */
export function requires(flag: string, present: unknown, needs: string, needsPresent: unknown, fix?: string): void {
  if (present !== undefined && present !== false && (needsPresent === undefined || needsPresent === false)) {
    throw new UsageError(`${flag} only applies with ${needs}: ${fix ?? `add ${needs}, or drop ${flag}`}`);
  }
}
