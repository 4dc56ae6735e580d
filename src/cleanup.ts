// Process-wide cleanup on the way out: whatever a command creates outside the process (loop
// mounts, image files, scratch directories) registers its synchronous cleanup here, and it runs
// on normal exit, on an uncaught exception's exit, and on SIGINT, SIGTERM or SIGHUP (first and
// second Ctrl-C alike: clean up synchronously, then exit 130). One set of handlers for all.
const pending = new Set<() => void>();
let installed = false;

function runAll(): void {
  for (const fn of [...pending]) {
    pending.delete(fn);
    try { fn(); } catch { /* keep cleaning the rest */ }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  let signalled = 0;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      signalled++;
      if (pending.size > 0) process.stderr.write(signalled === 1 ? `\n${sig}: cleaning up before exit...\n` : `\n${sig} again: cleaning up now\n`);
      runAll();
      process.exit(130);
    });
  }
}

/** Registers `fn` to run once at exit or on a fatal signal; returns a function that unregisters it. */
export function atExit(fn: () => void): () => void {
  install();
  pending.add(fn);
  return () => { pending.delete(fn); };
}
