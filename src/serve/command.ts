// `ringfence serve IMAGE`: the NBD server on the command line. Every flag is checked before
// anything is opened (exit 2 naming the flag); SIGINT/SIGTERM drain and exit 0 when clean.
import { onStopSignal } from '../cleanup.js';
import { statSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Command } from 'commander';
import { BACKEND_CHOICES } from '../backends.js';
import { UsageError, enumArg, intArg, mustBe, numberArg, sizeArg } from '../args.js';
import { MAX_WORKERS } from '../shm.js';
import type { BackendChoice } from '../types.js';
import { DEFAULT_MAX_REQUEST, DEFAULT_PORT, serveNbd, type NbdServer } from './server.js';
import type { ServeEvent } from './export.js';

interface ServeFlags {
  bind?: string; port?: string; socket?: string; readOnly?: boolean; maxConnections: string; maxRequest: string;
  name?: string; stats?: string; json?: boolean; workers?: string; pollUs?: string; backend: string; direct: boolean;
}

/** The limits of `ringfence serve`'s numeric flags (its --help and the README's table say the same). */
export const SERVE_LIMITS = {
  port: { min: 0, max: 65535 },
  maxConnections: { min: 1, max: 4096 },
  /** A multiple of 4K: the advertised maximum block size is a multiple of the preferred 4K. */
  maxRequest: { min: 4096, max: 256 << 20, multipleOf: 4096 },
  statsS: { max: 86400 },
  workers: { min: 1, max: MAX_WORKERS },
  pollUs: { min: 0, max: 1_000_000 },
} as const;

export interface ServePlan {
  image: string; host?: string; port?: number; socket?: string; readOnly: boolean; name?: string;
  maxConnections: number; maxRequestBytes: number; statsEvery?: number; json: boolean;
  workers?: number; pollUs?: number; backend: BackendChoice; direct: boolean;
}

/**
 * Every flag of `ringfence serve`, checked before anything is opened: throws UsageError naming
 * the flag, the value and what is allowed (src/args.ts, as for the other commands).
 */
export function checkServeFlags(image: string, o: ServeFlags): ServePlan {
  const L = SERVE_LIMITS;
  let st;
  try { st = statSync(image); } catch (e) {
    throw new UsageError(`<image> "${image}": ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file; give the path of an existing raw image file or block device' : `cannot use it: ${(e as Error).message}`}`);
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new UsageError(`<image> "${image}": not a regular file or block device; give a raw image file or a block device`);
  if (o.socket !== undefined && (o.bind !== undefined || o.port !== undefined)) {
    throw new UsageError('--socket cannot be combined with --bind or --port: serve on a Unix socket (--socket) or on TCP (--bind, --port), not both');
  }
  if (o.socket !== undefined && (o.socket === '' || Buffer.byteLength(o.socket) > 107)) mustBe('--socket', o.socket, 'a path of 1 to 107 bytes (the limit of a Unix socket address)', '/run/rf.sock');
  if (o.bind !== undefined && isIP(o.bind) === 0 && o.bind !== 'localhost') mustBe('--bind', o.bind, 'an IPv4 or IPv6 address, or localhost', '127.0.0.1');
  const port = intArg('--port', o.port, { ...L.port, example: DEFAULT_PORT });
  const maxConnections = intArg('--max-connections', o.maxConnections, { ...L.maxConnections, example: 16 })!;
  const maxRequestBytes = sizeArg('--max-request', o.maxRequest, { ...L.maxRequest, example: '32M' })!;
  const statsEvery = numberArg('--stats', o.stats, { above: 0, max: L.statsS.max, unit: 'seconds', example: 5 });
  const workers = intArg('--workers', o.workers, { ...L.workers, example: 4, maxWhy: "the engine's maximum, MAX_WORKERS" });
  const pollUs = intArg('--poll-us', o.pollUs, { ...L.pollUs, example: 20 });
  if (pollUs !== undefined && workers !== undefined) throw new UsageError('--poll-us applies to the default inline engine: drop --workers, or drop --poll-us');
  const backend = enumArg('--backend', o.backend, BACKEND_CHOICES, 'auto');
  if (o.name !== undefined && (Buffer.byteLength(o.name) > 4096 || o.name.includes('\0'))) mustBe('--name', o.name, 'an export name of at most 4096 bytes, without NUL', 'disk');
  return {
    image, host: o.socket === undefined ? (o.bind ?? '127.0.0.1') : undefined, port: o.socket === undefined ? (port ?? DEFAULT_PORT) : undefined,
    socket: o.socket, readOnly: !!o.readOnly, name: o.name, maxConnections, maxRequestBytes, statsEvery, json: !!o.json,
    workers, pollUs, backend, direct: o.direct !== false,
  };
}

export function registerServe(program: Command): void {
  program.command('serve')
    .description('export an image file over NBD (fixed newstyle, simple replies), every request through the engine')
    .argument('<image>', 'the image file (raw) or block device to export')
    .option('--bind <address>', 'TCP address to listen on (default 127.0.0.1; 0.0.0.0 exposes the image to the network)')
    .option('--port <n>', `TCP port, 0 to 65535 (default ${DEFAULT_PORT}; 0: any free port)`)
    .option('--socket <path>', 'listen on this Unix socket instead of TCP')
    .option('--read-only', 'export read-only: writes, trims and zero-writes get EPERM')
    .option('--name <export>', 'export name (default: the file name without extension; "" is always served too)')
    .option('--max-connections <n>', 'clients at once, 1 to 4096', '16')
    .option('--max-request <size>', 'largest READ/WRITE, the advertised maximum block size: a multiple of 4K, 4K to 256M', `${DEFAULT_MAX_REQUEST >> 20}M`)
    .option('--stats <seconds>', 'print IOPS and throughput every SECONDS (above 0, at most 86400)')
    .option('--json', 'machine-readable logs: one JSON object per line')
    .option('--workers <n>', `run the engine on this many offload worker threads, 1 to ${MAX_WORKERS} (default: none; the inline engine, where the serving thread owns its ring)`)
    .option('--backend <name>', 'auto|io_uring|libaio|sync', 'auto')
    .option('--poll-us <us>', 'busy-poll completions this many microseconds after each submit, 0 to 1000000 (engine option pollUs; default 0); not with --workers')
    .option('--no-direct', 'buffered I/O instead of O_DIRECT')
    .addHelpText('after', `
Examples:
  ringfence serve /images/disk.raw                 # nbd://127.0.0.1:10809, exports "" and "disk"
  ringfence serve disk.raw --socket /run/rf.sock --read-only
  ringfence serve disk.raw --port 10900 --stats 5 --json
  qemu-img convert -O raw nbd://127.0.0.1:10809 copy.raw
  qemu-io -f raw nbd://127.0.0.1:10809 -c 'write -P 0xab 0 4k' -c 'read -P 0xab 0 4k'
  nbdinfo nbd://127.0.0.1:10809
  fio --name=j --ioengine=nbd --uri=nbd://127.0.0.1:10809 --rw=randread --bs=4k --iodepth=32 --size=1G --runtime=10
SIGINT or SIGTERM stops it: in-flight requests are answered, new ones get ESHUTDOWN, the file is
flushed; exit 0 after a clean drain.`)
    .action(async (image: string, o: ServeFlags) => {
      const plan = checkServeFlags(image, o);
      const { json, statsEvery } = plan;
      const log = (e: ServeEvent): void => {
        const line = json ? JSON.stringify({ time: new Date().toISOString(), ...e }) : formatEvent(e);
        if (line !== '') process.stdout.write(line + '\n');
      };
      const server: NbdServer = await serveNbd({
        path: plan.image, name: plan.name, host: plan.host, port: plan.port, socket: plan.socket, readOnly: plan.readOnly,
        maxConnections: plan.maxConnections, maxRequestBytes: plan.maxRequestBytes, direct: plan.direct,
        workers: plan.workers, pollUs: plan.pollUs, backend: plan.backend, onEvent: log,
      });
      let timer: NodeJS.Timeout | undefined;
      if (statsEvery !== undefined) {
        let last = server.stats(), lastT = performance.now();
        timer = setInterval(() => {
          const s = server.stats(), t = performance.now(), dt = (t - lastT) / 1000;
          const ops = s.reads + s.writes + s.flushes + s.trims + s.zeroes + s.other - (last.reads + last.writes + last.flushes + last.trims + last.zeroes + last.other);
          log({
            event: 'stats', seconds: Math.round(dt * 10) / 10, iops: Math.round(ops / dt),
            readIops: Math.round((s.reads - last.reads) / dt), writeIops: Math.round((s.writes - last.writes) / dt),
            readMiBs: Math.round(((s.bytesRead - last.bytesRead) / dt / 2 ** 20) * 10) / 10,
            writeMiBs: Math.round(((s.bytesWritten - last.bytesWritten) / dt / 2 ** 20) * 10) / 10,
            connections: s.connections, inFlight: s.inFlight, errors: s.errors,
          });
          last = s; lastT = t;
        }, statsEvery * 1000);
      }
      await new Promise<void>((res) => {
        let stopping = false;
        const stop = (sig: string): void => {
          if (stopping) {
            log({ event: 'error', message: `${sig} again: exiting without waiting for the drain` });
            process.exit(1);
          }
          stopping = true;
          log({ event: 'signal', signal: sig });
          if (timer) clearInterval(timer);
          server.close({ deadlineMs: 10000 }).then((clean) => {
            process.exitCode = clean ? 0 : 1;
            res();
          }, (err) => { log({ event: 'error', message: String((err as Error).message) }); process.exitCode = 1; res(); });
        };
        // The CLI's signal handlers (src/cleanup.ts) give the first SIGINT/SIGTERM/SIGHUP to this
        // graceful stop; a second one exits at once with 128 + the signal number.
        onStopSignal((sig) => stop(sig));
      });
    });
}

/** One human-readable line per event. */
export function formatEvent(e: ServeEvent): string {
  const c = e.connection !== undefined ? `[${e.connection}] ` : '';
  switch (e.event) {
    case 'listening': {
      const where = e.socket !== undefined ? `unix:${e.socket}` : `${e.host}:${e.port}`;
      return `ringfence serve: ${e.path} (${e.size} bytes${e.readOnly ? ', read-only' : ''}) on ${where} as export "${e.export}" and ""; ${e.uri}\n` +
        `  block sizes: minimum ${e.minBlock}, preferred ${e.preferredBlock}, maximum ${e.maxBlock}; up to ${e.maxConnections} connections; ${e.direct ? 'O_DIRECT' : 'buffered'}, backend ${e.backend}; simple replies; Ctrl-C stops`;
    }
    case 'connect': return `${c}connect from ${e.remote}`;
    case 'export': return `${c}export "${e.export}" via ${e.via}${e.blockSizeNegotiated ? '' : ' (block sizes not negotiated: unaligned requests are padded)'}${e.socket === 'stream' ? ' (requests read through the socket stream: the faster read buffer could not be set up)' : ''}`;
    case 'disconnect': return `${c}disconnect: ${e.reason}; ${e.requests} requests${e.inFlightDiscarded ? `, ${e.inFlightDiscarded} in flight discarded` : ''}`;
    case 'refused': return `${c}refused ${e.remote}: ${e.message}`;
    case 'protocol-error': return `${c}protocol error: ${e.message}`;
    case 'request-error': return e.command === undefined ? `${c}${e.message}` : `${c}${e.command} offset ${e.offset} length ${e.length}: ${e.error}: ${e.message}`;
    case 'stats': return `stats: ${e.iops} IOPS (read ${e.readIops}, write ${e.writeIops}), read ${e.readMiBs} MiB/s, write ${e.writeMiBs} MiB/s, ${e.connections} connections, ${e.inFlight} in flight, ${e.errors} errors`;
    case 'signal': return `${e.signal}: draining in-flight requests`;
    case 'stopping': return `stopping: ${e.connections} connections, ${e.inFlight} requests in flight`;
    case 'stopped': return `stopped ${e.clean ? 'cleanly' : 'with connections cut at the deadline'} after ${e.ms} ms (${e.reads} reads, ${e.writes} writes, ${e.errors} errors)`;
    case 'warning': return `warning: ${e.message}`;
    default: return `${c}${e.event}: ${e.message ?? JSON.stringify(e)}`;
  }
}
