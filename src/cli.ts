#!/usr/bin/env node
// The ringfence command line. Exit codes: 0 clean, 1 bad data found, 2 usage or set-up error.
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { PACKAGE_ROOT } from './addon.js';
import { defaultVolume, dirVolume, makeXfsVolume, parseSize, type Volume } from './volume.js';
import { runDemo } from './demo.js';
import { addStressCommand } from './stress/command.js';
import { registerBench } from './bench/command.js';
import { registerProbe } from './probe/command.js';
import { registerServe } from './serve/command.js';

const pkg = JSON.parse(readFileSync(`${PACKAGE_ROOT}/package.json`, 'utf8')) as { version: string };

export function pickVolume(o: { xfs?: string; dir?: string; image?: string; force?: boolean }, log: (s: string) => void): Volume {
  if (o.xfs && o.dir) throw new UsageError('--xfs and --dir are mutually exclusive: pick one');
  if (o.dir) return dirVolume(o.dir);
  if (o.xfs || o.image) return makeXfsVolume(parseSize(o.xfs ?? '1G'), { image: o.image, force: o.force, log });
  return defaultVolume(log);
}

export class UsageError extends Error {}

const program = new Command();
program
  .name('ringfence')
  .description('Kernel-async file I/O for Node.js, and a tool to prove a filesystem does not lose data.')
  .version(pkg.version, '-V, --version')
  .showHelpAfterError()
  .exitOverride();

program.command('demo')
  .description('write, read back and verify a file through every backend (io_uring, libaio, sync), printing IOPS')
  .option('--xfs <size>', 'create a temporary loop-mounted XFS volume of this size (root)')
  .option('--dir <path>', 'use an existing directory')
  .option('--image <path>', 'with --xfs: keep the image file at this path')
  .option('--force', 'with --image: overwrite an existing image file')
  .addOption(new Option('--blocks <n>', '4 KiB blocks per backend').default('8192'))
  .addHelpText('after', '\nExamples:\n  ringfence demo                # embedded default volume\n  ringfence demo --dir /mnt/xfs\n')
  .action(async (o) => {
    const log = (s: string): void => { process.stdout.write(s + '\n'); };
    const vol = pickVolume(o, log);
    try {
      log(`ringfence demo on ${vol.note}`);
      const results = await runDemo(vol, { blocks: Number(o.blocks), log });
      process.exitCode = results.every((r) => r.ok) ? 0 : 1;
    } finally {
      vol.cleanup();
    }
  });

addStressCommand(program, { pickVolume, UsageError });
registerBench(program, (msg) => { throw new UsageError(msg); });
registerProbe(program);
registerServe(program, (msg) => { throw new UsageError(msg); });

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
