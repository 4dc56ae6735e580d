// Cleanup, in three parts.
//
// 1. On the way out. Whatever a command creates outside the process (loop mounts, image files,
//    scratch directories) registers its synchronous cleanup with atExit(); it runs on normal
//    exit, on an uncaught exception's exit, and on SIGINT, SIGTERM or SIGHUP, after which the
//    process exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
//    A command with a graceful stop (stress) takes the first signal with onStopSignal(); a
//    second signal then cleans up at once and exits with the first signal's code.
//
// 2. Run records. Every temporary directory ringfence makes holds a state file
//    (ringfence-run.json): the owner (pid, its start time, pid namespace, boot id), the command,
//    and what was created (image, mount point, loop device). A SIGKILL cannot be caught, so the
//    mount, loop device and image stay behind; the record is how the next run notices.
//
// 3. Leftovers. findLeftovers() lists the ringfence directories in the temp bases (TMPDIR,
//    /tmp, /var/tmp) and any directories given, with the owner's state (alive, dead, unknown);
//    removeLeftover() unmounts (with brief retries), detaches the loop device, deletes the
//    image (unless --image asked to keep it) and removes the directory. `ringfence cleanup`
//    and the notice every command prints at start are built on these.
import { execFileSync } from 'node:child_process';
import {
  existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync,
} from 'node:fs';
import { constants as osc, hostname, tmpdir } from 'node:os';
import { dirname, join, sep } from 'node:path';
import { readStat, STAT } from './procstat.js';

// ---- 1. exit and signals ------------------------------------------------------------------

export type StopSignal = 'SIGINT' | 'SIGTERM' | 'SIGHUP';
const SIGNALS: readonly StopSignal[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** 128 + the signal number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP. */
export function signalExitCode(sig: StopSignal): number {
  return 128 + osc.signals[sig];
}

const pending = new Set<() => void>();
let installed = false;
let stopper: ((sig: StopSignal) => void) | null = null;
let firstSignal: StopSignal | null = null;

/** Runs every registered cleanup now (each once). */
export function cleanupNow(): void {
  for (const fn of [...pending]) {
    pending.delete(fn);
    try { fn(); } catch (err) { try { process.stderr.write(`ringfence: cleanup failed: ${(err as Error).message}\n`); } catch { /* closed */ } }
  }
}

/** Cleans up synchronously and exits with the code of `sig` (128 + its number). */
export function exitOnSignal(sig: StopSignal): never {
  cleanupNow();
  process.exit(signalExitCode(sig));
}

/** Installs the exit and signal handlers (idempotent). The CLI calls it first thing. */
export function installSignalHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupNow);
  for (const sig of SIGNALS) {
    process.on(sig, () => {
      if (firstSignal === null) {
        firstSignal = sig;
        if (stopper) { stopper(sig); return; }
        if (pending.size > 0) process.stderr.write(`\n${sig}: cleaning up before exit...\n`);
      } else if (pending.size > 0) process.stderr.write(`\n${sig} again: cleaning up now\n`);
      exitOnSignal(firstSignal);
    });
  }
}

/** The first stop signal received, if any. */
export function receivedSignal(): StopSignal | null { return firstSignal; }

/**
 * While registered, the first SIGINT/SIGTERM/SIGHUP calls `fn(sig)` (a graceful stop) instead of
 * cleaning up and exiting; any later signal cleans up at once and exits with the first signal's
 * code. Returns a function that unregisters it.
 */
export function onStopSignal(fn: (sig: StopSignal) => void): () => void {
  installSignalHandlers();
  stopper = fn;
  return () => { if (stopper === fn) stopper = null; };
}

/** Registers `fn` to run once at exit or on a fatal signal; returns a function that unregisters it. */
export function atExit(fn: () => void): () => void {
  installSignalHandlers();
  pending.add(fn);
  return () => { pending.delete(fn); };
}

// ---- small system helpers -------------------------------------------------------------------

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function haveCommand(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    if (dir && existsSync(join(dir, cmd))) return true;
  }
  return false;
}

let setsid: boolean | undefined;

/**
 * Runs a helper (mkfs.xfs, mount, umount, losetup) and returns its stdout. It runs in a session
 * of its own (setsid), so a Ctrl-C or a kill to the process group reaches ringfence, which
 * cleans up, and not the helper halfway through a mount or unmount.
 */
export function runTool(cmd: string, args: string[]): string {
  setsid ??= haveCommand('setsid');
  const [file, argv] = setsid ? ['setsid', ['--wait', cmd, ...args]] : [cmd, args];
  return execFileSync(file, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function toolError(err: unknown): string {
  const e = err as { stderr?: string; message: string };
  return (e.stderr || e.message || String(err)).trim().split('\n').pop()!;
}

export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** /proc/self/mounts with its octal escapes (\040 for a space) decoded. */
export function mounts(): { source: string; target: string; fstype: string }[] {
  let text = '';
  try { text = readFileSync('/proc/self/mounts', 'utf8'); } catch { return []; }
  const un = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return text.split('\n').filter(Boolean).map((l) => { const [source, target, fstype] = l.split(' '); return { source: un(source), target: un(target), fstype }; });
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  return mounts().map((m) => m.target).filter((t) => t === dir || t.startsWith(dir + sep)).sort((a, b) => b.length - a.length);
}

/** Attached loop devices and their backing files (from sysfs; " (deleted)" stripped and flagged). */
export function loopDevices(): { dev: string; backing: string; deleted: boolean }[] {
  const out: { dev: string; backing: string; deleted: boolean }[] = [];
  let names: string[] = [];
  try { names = readdirSync('/sys/block').filter((n) => /^loop\d+$/.test(n)); } catch { return out; }
  for (const n of names) {
    let b: string;
    try { b = readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim(); } catch { continue; }
    if (!b) continue;
    const deleted = b.endsWith(' (deleted)');
    out.push({ dev: `/dev/${n}`, backing: deleted ? b.slice(0, -' (deleted)'.length) : b, deleted });
  }
  return out;
}

/**
 * Unmounts `mnt`: `umount` up to `tries` times, `delayMs` apart (a process may still be closing
 * files), then, if `lazy`, a lazy unmount (the filesystem goes once the last file is closed).
 */
export function unmount(mnt: string, o: { tries?: number; delayMs?: number; lazy?: boolean } = {}): { ok: boolean; lazy: boolean; error?: string } {
  const tries = o.tries ?? 5, delay = o.delayMs ?? 200;
  let error = '';
  for (let i = 0; i < tries; i++) {
    if (!mountsUnder(mnt).includes(mnt)) return { ok: true, lazy: false };
    try { runTool('umount', [mnt]); } catch (err) { error = toolError(err); }
    if (!mountsUnder(mnt).includes(mnt)) return { ok: true, lazy: false };
    if (i + 1 < tries) sleepSync(delay);
  }
  if (o.lazy !== false) {
    try { runTool('umount', ['-l', mnt]); } catch (err) { error = toolError(err); }
    if (!mountsUnder(mnt).includes(mnt)) return { ok: true, lazy: true };
  }
  return { ok: false, lazy: false, error: error || 'still mounted' };
}

/**
 * Detaches a loop device, waiting briefly for the autoclear of a just-unmounted one first.
 * `deferred`: the device is still in use (a lazily unmounted filesystem on it) but set to detach
 * itself when released, which is all that can be done now.
 */
export function detachLoop(dev: string, backing: string): { ok: boolean; deferred?: boolean; error?: string } {
  const attached = (): boolean => loopDevices().some((l) => l.dev === dev && l.backing === backing);
  const autoclear = (): boolean => readOr(() => readFileSync(`/sys/block/${dev.replace('/dev/', '')}/loop/autoclear`, 'utf8').trim()) === '1';
  for (let i = 0; i < 10 && attached(); i++) sleepSync(50);
  if (!attached()) return { ok: true };
  let error = '';
  try { runTool('losetup', ['-d', dev]); } catch (err) { error = toolError(err); }
  for (let i = 0; i < 10 && attached(); i++) sleepSync(50);
  if (!attached()) return { ok: true };
  if (autoclear()) return { ok: true, deferred: true };
  return { ok: false, error: error || `${dev} is still attached` };
}

// ---- 2. run records -----------------------------------------------------------------------

export const STATE_FILE = 'ringfence-run.json';

export interface RunOwner {
  pid: number;
  /** Start time of the process (clock ticks after boot, /proc/PID/stat field 22): tells a reused pid. */
  pidStart: number | null;
  /** readlink /proc/self/ns/pid: pids from another namespace cannot be checked. */
  pidNs: string | null;
  bootId: string | null;
  host: string;
  /** The command line, e.g. "stress --xfs 512M". */
  command: string;
}

export interface RunState extends RunOwner {
  version: 1;
  createdAt: string;
  kind: 'xfs-loop' | 'tempdir' | 'probe-scratch';
  /** The directory this record lives in; removing the leftover removes it. */
  dir: string;
  image?: string;
  /** --image: the user asked to keep the image, so cleanup never deletes it. */
  imageKept?: boolean;
  imageBytes?: number;
  mountPoint?: string;
  loopDevice?: string | null;
}

function procStart(pid: number): number | null {
  const f = readStat(pid);
  return f === null ? null : Number(f[STAT.starttime]);
}

function readOr(fn: () => string): string | null {
  try { return fn(); } catch { return null; }
}

function pidNs(): string | null { return readOr(() => readlinkSync('/proc/self/ns/pid')); }
function bootId(): string | null { return readOr(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()); }

let me: RunOwner | null = null;

/** This process, as a run owner. */
export function thisRun(): RunOwner {
  me ??= {
    pid: process.pid, pidStart: procStart(process.pid), pidNs: pidNs(), bootId: bootId(), host: hostname(),
    command: ['ringfence', ...process.argv.slice(2)].join(' '),
  };
  return me;
}

/** Writes (or rewrites) the run record in `state.dir`, atomically. */
export function writeState(state: RunState): void {
  const file = join(state.dir, STATE_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n');
  renameSync(tmp, file);
}

export function readState(dir: string): RunState | null {
  try {
    const s = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as RunState;
    return s && s.version === 1 && typeof s.pid === 'number' ? { ...s, dir } : null;
  } catch { return null; }
}

/** A new run record for a directory this process just created. */
export function newState(dir: string, kind: RunState['kind'], extra: Partial<RunState> = {}): RunState {
  return { version: 1, ...thisRun(), createdAt: new Date().toISOString(), kind, dir, ...extra };
}

export type OwnerStatus = 'alive' | 'dead' | 'unknown';

/** Is the process that wrote `s` still running? 'unknown' when it cannot be told from here. */
export function ownerStatus(s: RunOwner): { status: OwnerStatus; why: string } {
  const mine = thisRun();
  if (s.host !== mine.host) return { status: 'unknown', why: `made on another host (${s.host})` };
  if (s.bootId && mine.bootId && s.bootId !== mine.bootId) return { status: 'dead', why: `pid ${s.pid} ran before the last reboot` };
  if (s.pidNs && mine.pidNs && s.pidNs !== mine.pidNs) return { status: 'unknown', why: `pid ${s.pid} is in another pid namespace (${s.pidNs})` };
  try { process.kill(s.pid, 0); } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return { status: 'dead', why: `pid ${s.pid} is no longer running` };
  }
  const start = procStart(s.pid);
  if (s.pidStart !== null && start !== null && start !== s.pidStart) return { status: 'dead', why: `pid ${s.pid} is no longer running (the pid now belongs to another process)` };
  return { status: 'alive', why: s.pid === process.pid ? 'this process' : `pid ${s.pid} is running` };
}

// ---- 3. leftovers -------------------------------------------------------------------------

const TEMP_NAME = /^ringfence-[A-Za-z0-9]{6}$/;
const PROBE_NAME = /^\.ringfence-probe-[A-Za-z0-9]{6}$/;

/** Where ringfence makes its temporary directories: TMPDIR (or /tmp) and /var/tmp. */
export function tempBases(): string[] {
  return [...new Set([tmpdir(), '/tmp', '/var/tmp'])].filter((d) => { try { return statSync(d).isDirectory(); } catch { return false; } });
}

export interface Leftover {
  dir: string;
  /** From the run record; 'untracked': a ringfence-named directory without one. */
  kind: RunState['kind'] | 'untracked';
  state: RunState | null;
  owner: OwnerStatus | 'none';
  ownerWhy: string;
  /** Mount points at or below dir (and the recorded one), deepest first. */
  mounts: string[];
  /** Loop devices whose backing file is the recorded image or lies in dir. */
  loops: { dev: string; backing: string; deleted: boolean }[];
  /** The image, if it still exists. */
  image: { path: string; bytes: number; onDisk: number; kept: boolean } | null;
  ageMs: number;
}

function inspect(dir: string): Leftover | null {
  let st;
  try { st = lstatSync(dir); } catch { return null; }
  if (!st.isDirectory()) return null;
  const state = readState(dir);
  const own = state ? ownerStatus(state) : { status: 'none' as const, why: 'no run record (made by an older ringfence, or killed while it was being created)' };
  const ms = new Set(mountsUnder(dir));
  if (state?.mountPoint && mountsUnder(state.mountPoint).includes(state.mountPoint)) ms.add(state.mountPoint);
  const loops = loopDevices().filter((l) => (state?.image && l.backing === state.image) || l.backing.startsWith(dir + sep));
  let image: Leftover['image'] = null;
  if (state?.image) {
    try { const i = statSync(state.image); if (i.isFile()) image = { path: state.image, bytes: i.size, onDisk: i.blocks * 512, kept: state.imageKept === true }; } catch { /* gone */ }
  }
  return {
    dir, kind: state?.kind ?? 'untracked', state, owner: own.status, ownerWhy: own.why,
    mounts: [...ms].sort((a, b) => b.length - a.length), loops, image, ageMs: Date.now() - st.mtimeMs,
  };
}

/** Every ringfence directory in the temp bases and in `extraDirs` (probe scratch directories too). */
export function findLeftovers(extraDirs: string[] = []): Leftover[] {
  const out: Leftover[] = [];
  const seen = new Set<string>();
  const scan = (base: string, probeToo: boolean): void => {
    let names: string[];
    try { names = readdirSync(base); } catch { return; }
    for (const n of names) {
      const isTemp = TEMP_NAME.test(n), isProbe = PROBE_NAME.test(n);
      if (!isTemp && !(probeToo && isProbe)) continue;
      const dir = join(base, n);
      if (seen.has(dir)) continue;
      seen.add(dir);
      const l = inspect(dir);
      if (l) out.push(l);
    }
  };
  for (const b of tempBases()) scan(b, false);
  for (const d of extraDirs) scan(d, true);
  return out;
}

function mib(n: number): string { return `${(n / 2 ** 20).toFixed(0)} MiB`; }

/**
 * Pids of live processes (other than this one) with their working directory or an open file at
 * or below `dir` (those whose /proc entries can be read).
 */
export function usersOf(dir: string): number[] {
  const users: number[] = [];
  let pids: string[] = [];
  try { pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n)); } catch { return users; }
  const inside = (l: string): boolean => l === dir || l.startsWith(dir + sep);
  for (const p of pids) {
    if (Number(p) === process.pid) continue;
    let hit = false;
    try { hit = inside(readlinkSync(`/proc/${p}/cwd`)); } catch { /* gone, or not ours to read */ }
    if (!hit) {
      let fds: string[] = [];
      try { fds = readdirSync(`/proc/${p}/fd`); } catch { /* gone */ }
      for (const fd of fds) { try { if (inside(readlinkSync(`/proc/${p}/fd/${fd}`))) { hit = true; break; } } catch { /* closed */ } }
    }
    if (hit) users.push(Number(p));
  }
  return users;
}

/** One line: what the leftover is and what is still there. */
export function describeLeftover(l: Leftover): string {
  const parts: string[] = [];
  if (l.mounts.length) parts.push(`mounted at ${l.mounts.join(', ')}`);
  if (l.loops.length) parts.push(`loop device ${l.loops.map((x) => x.dev).join(', ')}`);
  if (l.image) parts.push(`image ${l.image.path} (${mib(l.image.bytes)}, ${mib(l.image.onDisk)} on disk${l.image.kept ? ', kept: --image' : ''})`);
  const who = l.state ? `${l.state.kind} of \`${l.state.command}\` (pid ${l.state.pid}, ${l.state.createdAt})` : 'no run record';
  return `${l.dir}: ${who}${parts.length ? `; ${parts.join('; ')}` : ''}`;
}

export interface RemoveResult { dir: string; actions: string[]; errors: string[] }

/**
 * Removes a leftover: unmounts everything at or below its directory (brief retries, then lazy),
 * detaches its loop devices, deletes the image unless it was kept with --image, and removes the
 * directory (the run record last). With `dryRun` it only says what it would do.
 */
export function removeLeftover(l: Leftover, o: { dryRun?: boolean; tries?: number; delayMs?: number; lazy?: boolean } = {}): RemoveResult {
  const r: RemoveResult = { dir: l.dir, actions: [], errors: [] };
  const dry = o.dryRun === true;
  const needRoot = (l.mounts.length > 0 || l.loops.length > 0) && !isRoot();
  if (needRoot && !dry) {
    r.errors.push(`unmounting ${l.mounts.join(', ') || 'it'} and detaching its loop device need root: run \`ringfence cleanup\` as root`);
    return r;
  }
  for (const m of l.mounts) {
    if (dry) { r.actions.push(`would unmount ${m}`); continue; }
    const u = unmount(m, { tries: o.tries ?? 5, delayMs: o.delayMs ?? 200, lazy: o.lazy });
    if (u.ok) r.actions.push(u.lazy ? `unmounted ${m} (lazily: something still had it open)` : `unmounted ${m}`);
    else r.errors.push(`could not unmount ${m}: ${u.error}; close whatever uses it (fuser -vm ${m}) and run \`ringfence cleanup\` again`);
  }
  for (const lo of l.loops) {
    if (dry) { r.actions.push(`would detach ${lo.dev} (${lo.backing}${lo.deleted ? ', deleted' : ''})`); continue; }
    const d = detachLoop(lo.dev, lo.backing);
    if (d.ok) r.actions.push(d.deferred ? `${lo.dev} detaches itself once its lazily unmounted filesystem is released` : `detached ${lo.dev}`);
    else r.errors.push(`could not detach ${lo.dev}: ${d.error}; try \`losetup -d ${lo.dev}\``);
  }
  if (l.image) {
    if (l.image.kept) r.actions.push(`${dry ? 'would keep' : 'kept'} the image ${l.image.path} (--image asked to keep it; delete it yourself if you do not need it)`);
    else if (dry) r.actions.push(`would delete the image ${l.image.path} (${mib(l.image.bytes)})`);
    else if (!l.image.path.startsWith(l.dir + sep)) {
      try { unlinkSync(l.image.path); r.actions.push(`deleted the image ${l.image.path} (${mib(l.image.bytes)})`); } catch (err) { r.errors.push(`could not delete ${l.image.path}: ${(err as Error).message}`); }
    }
  }
  if (dry) { r.actions.push(`would remove ${l.dir}`); return r; }
  if (r.errors.length > 0) return r;
  const still = mountsUnder(l.dir);
  if (still.length) { r.errors.push(`${still.join(', ')} is still mounted: not removing ${l.dir}`); return r; }
  const err = removeTree(l.dir);
  if (err) r.errors.push(`could not remove ${l.dir}: ${err}`);
  else r.actions.push(l.image && !l.image.kept && l.image.path.startsWith(l.dir + sep) ? `removed ${l.dir} with the image ${l.image.path} (${mib(l.image.bytes)})` : `removed ${l.dir}`);
  return r;
}

/**
 * Removes a directory tree whose run record must go last: everything else first (with retries
 * for files still being closed), then the record, then the directory. Returns an error or null.
 * Never descends into a mount point.
 */
export function removeTree(dir: string): string | null {
  if (!existsSync(dir)) return null;
  if (mountsUnder(dir).length) return `${mountsUnder(dir).join(', ')} is mounted`;
  try {
    for (const n of readdirSync(dir)) {
      if (n === STATE_FILE) continue;
      rmSync(join(dir, n), { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    }
    rmSync(join(dir, STATE_FILE), { force: true });
    rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Prints (through `log`) one notice per leftover of a run that is no longer alive, and how to
 * remove them. Read-only. Returns the leftovers it reported.
 */
export function reportDeadRuns(log: (line: string) => void, extraDirs: string[] = []): Leftover[] {
  let dead: Leftover[] = [];
  try { dead = findLeftovers(extraDirs).filter((l) => l.owner === 'dead'); } catch { return []; }
  if (dead.length === 0) return dead;
  log(`ringfence: found ${dead.length === 1 ? 'the leftovers of an earlier run' : `the leftovers of ${dead.length} earlier runs`} that did not finish (killed?):`);
  for (const l of dead) log(`  ${describeLeftover(l)}`);
  const bases = new Set(tempBases());
  const inExtra = [...new Set(dead.map((l) => dirname(l.dir)).filter((d) => !bases.has(d)))];
  const extra = inExtra.length ? ' ' + inExtra.join(' ') : '';
  log(`  remove them with \`ringfence cleanup${extra}\` (as root if anything is mounted; \`ringfence cleanup --dry-run${extra}\` lists what it would do)`);
  return dead;
}

/** The directory containing `path` if `path` is a file, else `path`. */
export function dirOf(path: string): string {
  try { return statSync(path).isDirectory() ? path : dirname(path); } catch { return dirname(path); }
}
