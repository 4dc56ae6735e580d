#!/usr/bin/env node
// The ringfence command line. Exit codes: 0 clean, 1 bad data found, 2 usage or set-up error,
// 128 + the signal number when stopped by a signal (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
// Every command checks all of its flags in one function before it does any work.
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { PACKAGE_ROOT } from './addon.js';
import { UsageError, dirArg, intArg } from './args.js';
import {
  describeLeftover, findLeftovers, installSignalHandlers, isRoot, removeLeftover, reportDeadRuns, tempBases, usersOf, type Leftover,
} from './cleanup.js';
import { checkVolumeFlags, openVolume, type VolumeSpec } from './volume.js';
import { DEMO_BLOCK, DEMO_MAX_BLOCKS, runDemo } from './demo.js';
import { addStressCommand } from './stress/command.js';
import { registerBench } from './bench/command.js';
import { registerProbe } from './probe/command.js';
import './probe/register.js';
import { registerServe } from './serve/command.js';

const pkg = JSON.parse(readFileSync(`${PACKAGE_ROOT}/package.json`, 'utf8')) as { version: string };

installSignalHandlers();

const program = new Command();
program
  .name('ringfence')
  .description('Kernel-async file I/O for Node.js, and a tool to prove a filesystem does not lose data.')
  .version(pkg.version, '-V, --version')
  .showHelpAfterError()
  .exitOverride()
  .addHelpText('after', `
Exit codes: 0 fine, 1 bad data or bug evidence, 2 usage or set-up error (the message says the fix),
130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM. A killed run's leftovers (temporary
directories, loop mounts, images) are reported by the next run; \`ringfence cleanup\` removes them.`);

// ---- demo -----------------------------------------------------------------------------------

interface DemoRaw { xfs?: string; dir?: string; image?: string; force?: boolean; blocks?: string }

/** Every flag of `ringfence demo`, checked; throws UsageError naming the flag. Creates nothing. */
function checkDemoFlags(o: DemoRaw): { blocks: number; spec: VolumeSpec } {
  const blocks = intArg('--blocks', o.blocks, { min: 1, max: DEMO_MAX_BLOCKS, example: 8192 }) ?? 8192;
  const spec = checkVolumeFlags(o, { image: true, need: { bytes: blocks * DEMO_BLOCK + (1 << 20), what: `--blocks ${blocks}` } });
  return { blocks, spec };
}

program.command('demo')
  .description('write, read back and verify a file through every backend (io_uring, libaio, sync), printing IOPS')
  .option('--xfs <size>', 'create a temporary loop-mounted XFS volume of this size (root), 300M to 1T')
  .option('--dir <path>', 'use an existing, writable directory')
  .option('--image <path>', 'with --xfs: keep the image file at this path (its directory must exist)')
  .option('--force', 'with --image: overwrite an existing image file')
  .option('--blocks <n>', `4 KiB blocks per backend, 1 to ${DEMO_MAX_BLOCKS} (default 8192)`)
  .addHelpText('after', '\nExamples:\n  ringfence demo                # embedded default volume\n  ringfence demo --dir /mnt/xfs\n  ringfence demo --xfs 512M --blocks 65536\n\nEvery flag is checked before anything is created: a bad value exits 2 with a message.\n')
  .action(async (o: DemoRaw) => {
    const { blocks, spec } = checkDemoFlags(o);
    const log = (s: string): void => { process.stdout.write(s + '\n'); };
    reportDeadRuns((s) => process.stderr.write(s + '\n'));
    const vol = openVolume(spec, log);
    try {
      log(`ringfence demo on ${vol.note}`);
      const results = await runDemo(vol, { blocks, log });
      process.exitCode = results.every((r) => r.ok) ? 0 : 1;
    } finally {
      vol.cleanup();
    }
  });

addStressCommand(program);
registerBench(program);
registerProbe(program);
registerServe(program);

// ---- cleanup --------------------------------------------------------------------------------

interface CleanupRaw { dryRun?: boolean; untracked?: boolean; json?: boolean }

/** Untracked directories younger than this may be a run being set up right now. */
const UNTRACKED_MIN_AGE_MS = 60_000;

program.command('cleanup')
  .description('find and remove what ringfence runs that did not finish (killed, crashed) left behind: loop mounts, loop devices, images and temporary directories')
  .argument('[dir...]', 'also look in these directories (for probe scratch directories, .ringfence-probe-*, left in a probed PATH)')
  .option('--dry-run', 'list the leftovers and what would be done; change nothing')
  .option('--untracked', `also remove ringfence-XXXXXX temp directories without a run record (made by an older ringfence) that are older than ${UNTRACKED_MIN_AGE_MS / 1000} s; only when no older ringfence is running`)
  .option('--json', 'print one JSON object to stdout')
  .addHelpText('after', `
Every temporary directory ringfence makes (TMPDIR or /tmp for loop-mounted XFS volumes, /var/tmp
for temporary directories) holds a run record, ringfence-run.json: the pid, the command, the
image, the mount point and the loop device. A run killed with SIGKILL cannot clean up; its record
stays, and every later run reports it at start. \`ringfence cleanup\` removes the leftovers of runs
whose process is gone: it unmounts (retrying briefly, then lazily), detaches the loop device,
deletes the image (but never one kept with --image) and removes the directory. Directories of
runs still alive, or of processes it cannot check (another pid namespace or host), are left alone.
Unmounting needs root.

Examples:
  ringfence cleanup --dry-run        # what is there, what would be removed
  ringfence cleanup                  # remove the leftovers of dead runs
  ringfence cleanup /mnt/xfs         # also the probe scratch directories left in /mnt/xfs

Exit codes: 0 nothing left to remove (or --dry-run), 2 something could not be removed (the
message says why and what to do) or a usage error.
`)
  .action((dirs: string[], o: CleanupRaw) => {
    // The only flags with values are the DIR arguments: each must be an existing directory.
    const extra = dirs.map((d) => dirArg('DIR', d)!);
    const dry = o.dryRun === true, json = o.json === true;
    const out = (s: string): void => { if (!json) process.stdout.write(s + '\n'); };
    const all = findLeftovers(extra);
    const removed: { leftover: Leftover; actions: string[]; errors: string[] }[] = [];
    const skipped: { leftover: Leftover; why: string }[] = [];
    for (const l of all) {
      if (l.owner === 'alive') { skipped.push({ leftover: l, why: `in use: ${l.ownerWhy} (\`${l.state!.command}\`)` }); continue; }
      if (l.owner === 'unknown') { skipped.push({ leftover: l, why: `cannot tell whether its owner is alive: ${l.ownerWhy}` }); continue; }
      if (l.owner === 'none') {
        if (!o.untracked) { skipped.push({ leftover: l, why: `${l.ownerWhy}; pass --untracked to remove it (only when no older ringfence is running)` }); continue; }
        if (l.ageMs < UNTRACKED_MIN_AGE_MS) { skipped.push({ leftover: l, why: 'no run record, and younger than a minute: it may be a run being set up' }); continue; }
        const users = usersOf(l.dir);
        if (users.length) { skipped.push({ leftover: l, why: `no run record, and in use by pid ${users.join(', ')}: a running (older) ringfence?` }); continue; }
      }
      // Without a record nobody vouches that the owner is gone: no lazy unmount of a busy volume.
      const r = removeLeftover(l, { dryRun: dry, lazy: l.owner !== 'none' });
      removed.push({ leftover: l, actions: r.actions, errors: r.errors });
    }
    const errors = removed.flatMap((r) => r.errors);
    const looked = [...new Set([...tempBases(), ...extra])];
    if (json) {
      const view = (l: Leftover): object => ({ dir: l.dir, kind: l.kind, owner: l.owner, ownerWhy: l.ownerWhy, command: l.state?.command ?? null, pid: l.state?.pid ?? null, mounts: l.mounts, loops: l.loops.map((x) => x.dev), image: l.image });
      process.stdout.write(JSON.stringify({
        ok: errors.length === 0, exitCode: errors.length === 0 ? 0 : 2, dryRun: dry, looked,
        leftovers: removed.map((r) => ({ ...view(r.leftover), actions: r.actions, errors: r.errors })),
        skipped: skipped.map((s) => ({ ...view(s.leftover), why: s.why })),
      }) + '\n');
    }
    if (removed.length === 0) out(`ringfence cleanup: nothing to clean up (looked in ${looked.join(', ')})`);
    else out(`ringfence cleanup: ${removed.length} leftover(s) of runs that did not finish${dry ? ' (dry run: nothing changed)' : ''}`);
    for (const r of removed) {
      out(describeLeftover(r.leftover));
      for (const a of r.actions) out(`  ${a}`);
      for (const e of r.errors) out(`  FAILED: ${e}`);
    }
    for (const s of skipped) out(`left alone: ${s.leftover.dir}: ${s.why}`);
    if (errors.length) {
      if (!isRoot() && removed.some((r) => r.leftover.mounts.length)) process.stderr.write('ringfence cleanup: unmounting needs root: run it as root\n');
      process.stderr.write(`ringfence cleanup: ${errors.length} thing(s) could not be removed (see above)\n`);
      process.exitCode = 2;
    }
  });

// Output piped into `head` and the like: a closed pipe ends the command quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0); throw err; });
}

async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    const e = err as Error & { code?: string };
    process.stderr.write(`ringfence: ${e.message}\n`);
    process.exitCode = 2;
  }
}

await main();
