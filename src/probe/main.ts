#!/usr/bin/env node
// Stand-alone entry for `probe` until src/cli.ts wires registerProbe in:
//   node dist/src/probe/main.js probe PATH [--race] [--budget S] [--iterations N] [--emulate-xfs-bug] [--json]
// Same exit codes as the CLI: 0 no bug evidence, 1 buggy, 2 usage or set-up error.
import { Command, CommanderError } from 'commander';
import { registerProbe } from './command.js';

const program = new Command().name('ringfence').showHelpAfterError().exitOverride();
registerProbe(program);
try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exitCode = err.exitCode === 0 ? 0 : 2;
  else { process.stderr.write(`ringfence: ${(err as Error).message}\n`); process.exitCode = 2; }
}
