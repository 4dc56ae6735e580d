// Side effects of a CLI run: new ringfence temp directories (TMPDIR, /tmp, /var/tmp), new
// mounts (/proc/self/mounts), new loop devices (losetup -a), and new entries in directories the
// test owns. The machine may be shared with other test runs, so a new temp directory counts as
// someone else's only when it can be shown: its run record (ringfence-run.json) names a pid that
// is not one of ours; or it has no record (an older ringfence) and belongs to another user, or a
// live process other than ours has a file open or its working directory in it. A new mount or
// loop device counts when its path lies in a new temp directory that counts, or in a watched
// directory (a run never mounts into a directory that existed before it started).
import { statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';

export const STATE_FILE = 'ringfence-run.json';
export const BASES = [...new Set([tmpdir(), '/tmp', '/var/tmp'])].filter((d) => existsSync(d));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function tempDirs() {
  return BASES.flatMap((b) => { try { return readdirSync(b).filter((n) => n.startsWith('ringfence-')).map((n) => join(b, n)); } catch { return []; } });
}

export function mountLines() {
  return readFileSync('/proc/self/mounts', 'utf8').split('\n').filter(Boolean);
}

export function loopLines() {
  try { return execFileSync('losetup', ['-a'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter(Boolean); } catch { return []; }
}

function tree(dir, prefix = '') {
  let names = [];
  try { names = readdirSync(join(dir, prefix), { withFileTypes: true }); } catch { return []; }
  return names.flatMap((d) => {
    const rel = prefix ? join(prefix, d.name) : d.name;
    return d.isDirectory() && !d.isSymbolicLink() ? [rel + '/', ...tree(dir, rel)] : [rel];
  });
}

export function readState(dir) {
  try { return JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')); } catch { return null; }
}

/** A snapshot to compare against after a run. `watch`: directories the test owns (every new entry counts). */
export function snapshot(watch = []) {
  return { temp: tempDirs(), mounts: mountLines(), loops: loopLines(), watch: Object.fromEntries(watch.map((d) => [d, tree(d)])) };
}

/** Pids of live processes (other than `ours`) with an open file or their cwd under `dir`. */
function usersOf(dir, ours) {
  const users = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    if (ours.includes(Number(p)) || Number(p) === process.pid) continue;
    const links = [];
    try { links.push(readlinkSync(`/proc/${p}/cwd`)); } catch { /* gone or not ours to read */ }
    try { for (const fd of readdirSync(`/proc/${p}/fd`)) { try { links.push(readlinkSync(`/proc/${p}/fd/${fd}`)); } catch { /* closed */ } } } catch { /* gone */ }
    if (links.some((l) => l === dir || l.startsWith(dir + sep))) users.push(Number(p));
  }
  return users;
}

function diff(before, pids) {
  const found = [];
  const foreign = [];
  const mine = [];
  for (const d of tempDirs()) {
    if (before.temp.includes(d)) continue;
    const st = readState(d);
    if (st && !pids.includes(st.pid)) { foreign.push(d); continue; }
    let uid = -1;
    try { uid = statSync(d).uid; } catch { continue; /* gone already */ }
    if (!st && (uid !== process.getuid() || usersOf(d, pids).length > 0)) { foreign.push(d); continue; }
    mine.push(d);
    found.push(`new temp directory ${d}${st ? ` (run record: pid ${st.pid}, ${st.command})` : ' (no run record)'}`);
  }
  const under = (line, dirs) => dirs.some((d) => line.includes(d + sep) || line.includes(d + ' ') || line.endsWith(d));
  const counts = (line) => under(line, mine) || under(line, Object.keys(before.watch));
  for (const m of mountLines()) if (!before.mounts.includes(m) && counts(m)) found.push(`new mount: ${m}`);
  for (const l of loopLines()) if (!before.loops.includes(l) && counts(l)) found.push(`new loop device: ${l}`);
  for (const [w, names] of Object.entries(before.watch)) {
    for (const n of tree(w)) if (!names.includes(n)) found.push(`new entry in ${w}: ${n}`);
  }
  return found;
}

/**
 * What appeared since `before` that is ours (made by one of `pids`, or by nobody else we can
 * name). Waits up to `graceMs` for things that are on their way out (a loop device's autoclear).
 */
export async function sideEffects(before, { pids = [], graceMs = 2000 } = {}) {
  const deadline = Date.now() + graceMs;
  for (;;) {
    const found = diff(before, pids);
    if (found.length === 0 || Date.now() >= deadline) return found;
    await sleep(100);
  }
}
