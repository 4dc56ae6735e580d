// serveNbd(): one image file exported over NBD on one Engine and one File, shared by every
// connection (so a FLUSH on one covers writes acknowledged on all: NBD_FLAG_CAN_MULTI_CONN).
// Listens on 127.0.0.1:10809 by default, or a Unix socket; accepts up to maxConnections
// clients; keeps serving as clients come and go until close(), which drains.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { lstatSync, unlinkSync } from 'node:fs';
import { basename, extname, resolve } from 'node:path';
import { Engine } from '../engine.js';
import type { File } from '../file.js';
import type { BackendChoice } from '../types.js';
import { invalidArg, validateBoolean, validateInteger, validateKnownKeys, validateObject } from '../validators.js';
import { BufferCache } from './buffers.js';
import { newCounters, type EventSink, type ExportContext, type ExportSpec, type ServeCounters, type ServeEvent } from './export.js';
import { Handshake, type HandshakeOutcome } from './handshake.js';
import { Transmission } from './transmission.js';
import { moveToReadBuffer } from './socket.js';
import {
  TF_CAN_MULTI_CONN, TF_HAS_FLAGS, TF_READ_ONLY, TF_SEND_CACHE, TF_SEND_FLUSH, TF_SEND_FUA, TF_SEND_TRIM, TF_SEND_WRITE_ZEROES,
} from './protocol.js';

export interface ServeOptions {
  /** The image file to export (a regular file or a block device). */
  path: string;
  /** Export name (the default export "" is served too). Default: the file name without its extension. */
  name?: string;
  /** Free text shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION. */
  description?: string;
  /** TCP address to listen on. Default 127.0.0.1. */
  host?: string;
  /** TCP port. Default 10809; 0 picks a free one (see server.address). */
  port?: number;
  /** Listen on this Unix socket instead of TCP. */
  socket?: string;
  /** Export read-only: writes, trims and zero-writes get EPERM. Default false. */
  readOnly?: boolean;
  /** Clients at once; more are refused. Default 16. */
  maxConnections?: number;
  /** Largest READ or WRITE (the advertised maximum block size). Default 32 MiB. */
  maxRequestBytes?: number;
  /** Requests in flight per connection before its socket stops being read. Default 256. */
  maxInFlight?: number;
  /** O_DIRECT (default true). */
  direct?: boolean;
  /** Use this engine (it stays open after close()); otherwise one is started and owned. */
  engine?: Engine;
  /** For an owned engine: worker threads and backend. */
  workers?: number;
  backend?: BackendChoice;
  /** For an owned engine in inline mode: busy-poll completions this many microseconds after a submit (engine option pollUs). */
  pollUs?: number;
  /** Server events (listening, connect, disconnect, protocol and request errors). */
  onEvent?: EventSink;
}

/**
 * TEST HOOK, not an interface: RINGFENCE_TEST_SERVE_STREAM=1 keeps every connection on the
 * accepted socket's 'data' events (the fallback of socket.ts's move), so that the suite runs
 * that path as well (test/serve.test.mjs). Read once, at load.
 */
const STREAM_ONLY = process.env.RINGFENCE_TEST_SERVE_STREAM === '1';
/**
 * RINGFENCE_SERVE_JS_REPLIES=1: every reply is written by the connection's JavaScript, none by
 * the engine's context at completion time (Transmission, "replies sent at completion"). A
 * diagnostic and A/B switch (`node bench/nbd-ab.mjs --base . --env RINGFENCE_SERVE_JS_REPLIES=1`).
 */
const JS_REPLIES = process.env.RINGFENCE_SERVE_JS_REPLIES === '1';

const OPTION_KEYS = ['path', 'name', 'description', 'host', 'port', 'socket', 'readOnly', 'maxConnections', 'maxRequestBytes', 'maxInFlight', 'direct', 'engine', 'workers', 'backend', 'pollUs', 'onEvent'] as const;

export interface ServeStats extends ServeCounters {
  /** Bytes of request buffers in use now. */
  bufferBytes: number;
}

export interface NbdServer {
  /** Where it listens: { host, port } or { socket }. */
  readonly address: { host: string; port: number } | { socket: string };
  /** nbd://... URI for clients (qemu, libnbd, fio). */
  readonly uri: string;
  readonly export: Readonly<ExportSpec>;
  readonly file: File;
  readonly engine: Engine;
  stats(): ServeStats;
  /**
   * Stops accepting, lets every in-flight request finish and be answered (new requests get
   * ESHUTDOWN), closes the connections, flushes the file and closes it (and the engine if
   * serveNbd started it). Connections still open after `deadlineMs` (default 10000) are cut.
   * Resolves true when everything drained cleanly, false when the deadline cut something.
   */
  close(options?: { deadlineMs?: number }): Promise<boolean>;
}

export const DEFAULT_PORT = 10809;
export const DEFAULT_MAX_REQUEST = 32 << 20;

export async function serveNbd(options: ServeOptions): Promise<NbdServer> {
  const o = validateObject(options, 'options') as unknown as ServeOptions;
  validateKnownKeys(o as unknown as Record<string, unknown>, 'options', OPTION_KEYS);
  if (typeof o.path !== 'string' || o.path === '') throw invalidArg('options.path', 'must be the path of the image file to export', o.path);
  const readOnly = o.readOnly === undefined ? false : validateBoolean(o.readOnly, 'options.readOnly');
  const direct = o.direct === undefined ? true : validateBoolean(o.direct, 'options.direct');
  const maxConnections = o.maxConnections === undefined ? 16 : validateInteger(o.maxConnections, 'options.maxConnections', 1, 65536);
  const maxRequest = o.maxRequestBytes === undefined ? DEFAULT_MAX_REQUEST : validateInteger(o.maxRequestBytes, 'options.maxRequestBytes', 4096, 1 << 30);
  if (maxRequest % 4096 !== 0) throw invalidArg('options.maxRequestBytes', 'must be a multiple of 4096', maxRequest);
  const maxInFlight = o.maxInFlight === undefined ? 256 : validateInteger(o.maxInFlight, 'options.maxInFlight', 1, 65536);
  if (o.socket !== undefined && (o.host !== undefined || o.port !== undefined)) throw invalidArg('options.socket', 'cannot be combined with host or port', o.socket);
  const port = o.port === undefined ? DEFAULT_PORT : validateInteger(o.port, 'options.port', 0, 65535);
  const host = o.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host === '') throw invalidArg('options.host', 'must be an address to listen on', host);
  if (o.name !== undefined && (typeof o.name !== 'string' || Buffer.byteLength(o.name) > 4096 || o.name.includes('\0'))) throw invalidArg('options.name', 'must be a string of at most 4096 bytes without NUL', o.name);
  if (o.onEvent !== undefined && typeof o.onEvent !== 'function') throw invalidArg('options.onEvent', 'must be a function', o.onEvent);
  const emit: EventSink = o.onEvent ?? (() => {});
  const path = resolve(o.path);
  const name = o.name ?? basename(path, extname(path));
  if (o.socket !== undefined) await prepareSocketPath(o.socket);

  // The pool holds request buffers (up to a budget) plus what the engine bounces.
  const poolBytes = Math.max(64 << 20, nextPow2(maxRequest) * 4);
  const ownEngine = o.engine === undefined;
  const engine = o.engine ?? await Engine.start({ workers: o.workers, backend: o.backend, queueDepth: 256, bufferPoolBytes: poolBytes, ...(o.pollUs ? { pollUs: o.pollUs } : {}) });
  let file: File | undefined;
  try {
    file = await engine.open(path, { readOnly, direct });
    const info = file.info();
    const realSize = Number(await file.size());
    const minBlock = Math.max(1, info.alignment);
    const size = realSize - (realSize % minBlock);
    if (size !== realSize) emit({ event: 'warning', message: `${path} is ${realSize} bytes, not a multiple of the minimum block size ${minBlock}: the last ${realSize - size} bytes are not exported` });
    if (size === 0) throw invalidArg('options.path', `is empty (or smaller than one ${minBlock}-byte block): nothing to export`, path);
    let flags = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_CACHE | TF_CAN_MULTI_CONN;
    flags |= readOnly ? TF_READ_ONLY : TF_SEND_TRIM | TF_SEND_WRITE_ZEROES;
    const spec: ExportSpec = {
      name, description: o.description ?? `ringfence export of ${path}`, size, readOnly, flags,
      minBlock, preferredBlock: Math.max(4096, minBlock), maxBlock: maxRequest,
    };
    const poolSize = engine.info().options.bufferPoolBytes;
    if (BufferCache.classOf(maxRequest) > poolSize / 2) {
      throw invalidArg('options.maxRequestBytes', `needs an engine buffer pool of at least ${2 * BufferCache.classOf(maxRequest)} bytes (this engine has ${poolSize}): start the engine with a larger bufferPoolBytes or lower the cap`, maxRequest);
    }
    const counters = newCounters();
    const buffers = new BufferCache(engine, Math.max(maxRequest, Math.floor(poolSize / 2)), Math.min(16 << 20, Math.floor(poolSize / 4)));
    const server = new NbdServerImpl(engine, ownEngine, file, spec, buffers, counters, emit, maxConnections, maxInFlight, maxRequest);
    await server.listen(o.socket, host, port);
    return server;
  } catch (err) {
    await file?.close().catch(() => {});
    if (ownEngine) await engine.close().catch(() => {});
    throw err;
  }
}

/** A Unix socket path: refuse anything but a stale socket (nobody listening); remove a stale one. */
async function prepareSocketPath(p: string): Promise<void> {
  if (typeof p !== 'string' || p === '') throw invalidArg('options.socket', 'must be a path for the Unix socket', p);
  if (Buffer.byteLength(p) > 107) throw invalidArg('options.socket', 'is longer than a Unix socket path may be (107 bytes)', p);
  let st;
  try { st = lstatSync(p); } catch { return; }
  if (!st.isSocket()) throw invalidArg('options.socket', 'exists and is not a socket: pick another path', p);
  const live = await new Promise<boolean>((res) => {
    const c = createConnection(p);
    c.once('connect', () => { c.destroy(); res(true); });
    c.once('error', () => res(false));
  });
  if (live) throw Object.assign(new Error(`cannot listen on ${p}: another server is listening there; stop it or pick another --socket`), { code: 'EADDRINUSE' });
  unlinkSync(p);
}

class NbdServerImpl implements NbdServer {
  readonly engine: Engine;
  readonly file: File;
  readonly export: ExportSpec;
  address: { host: string; port: number } | { socket: string } = { host: '', port: 0 };
  uri = '';
  private readonly ownEngine: boolean;
  private readonly ctx: ExportContext;
  private readonly maxConnections: number;
  private readonly net: Server;
  private readonly conns = new Set<{ socket: Socket; hs: Handshake | null; tx: Transmission | null }>();
  private nextId = 1;
  private closing: Promise<boolean> | null = null;
  private idleWaiters: (() => void)[] = [];
  private socketPath: string | null = null;

  constructor(engine: Engine, ownEngine: boolean, file: File, spec: ExportSpec, buffers: BufferCache, counters: ServeCounters,
    emit: EventSink, maxConnections: number, maxInFlight: number, maxRequest: number) {
    this.engine = engine; this.ownEngine = ownEngine; this.file = file; this.export = spec; this.maxConnections = maxConnections;
    this.ctx = {
      spec, file, buffers, counters, emit, maxInFlight, hardLimit: Math.max(4 * maxRequest, 64 << 20),
      idle: () => { const w = this.idleWaiters; this.idleWaiters = []; for (const f of w) f(); },
      replies: JS_REPLIES ? null : engine,
    };
    this.net = createServer({ allowHalfOpen: true, noDelay: true } as Parameters<typeof createServer>[0], (s) => this.accept(s));
  }

  listen(socket: string | undefined, host: string, port: number): Promise<void> {
    return new Promise((res, rej) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        rej(Object.assign(new Error(`cannot listen on ${socket ?? `${host}:${port}`}: ${err.code === 'EADDRINUSE' ? 'the address is in use (another NBD server? pick another --port or --socket)' : err.message}`), { code: err.code }));
      };
      this.net.once('error', onError);
      const ready = (): void => {
        this.net.off('error', onError);
        this.net.on('error', (err) => this.ctx.emit({ event: 'error', message: `listener: ${err.message}` }));
        if (socket !== undefined) {
          this.socketPath = socket;
          this.address = { socket };
          this.uri = `nbd+unix:///${encodeURIComponent(this.export.name)}?socket=${socket}`;
        } else {
          const a = this.net.address() as { address: string; port: number };
          this.address = { host: a.address, port: a.port };
          const h = a.address.includes(':') ? `[${a.address}]` : a.address;
          this.uri = `nbd://${h}:${a.port}/${encodeURIComponent(this.export.name)}`;
        }
        const s = this.export;
        this.ctx.emit({
          event: 'listening', path: this.file.path, export: s.name, size: s.size, readOnly: s.readOnly, uri: this.uri, ...this.address,
          minBlock: s.minBlock, preferredBlock: s.preferredBlock, maxBlock: s.maxBlock, maxConnections: this.maxConnections,
          direct: this.file.info().direct, backend: this.engine.info().workers.map((w) => w.backend).join(','),
        });
        res();
      };
      if (socket !== undefined) this.net.listen(socket, ready); else this.net.listen(port, host, ready);
    });
  }

  private accept(socket: Socket): void {
    const id = this.nextId++;
    const remote = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    if (this.closing !== null) { socket.destroy(); return; }
    if (this.conns.size >= this.maxConnections) {
      this.ctx.emit({ event: 'refused', connection: id, remote, message: `already ${this.conns.size} connections (--max-connections ${this.maxConnections})` });
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const c: { socket: Socket; hs: Handshake | null; tx: Transmission | null } = { socket, hs: null, tx: null };
    this.conns.add(c);
    this.ctx.counters.connections++;
    this.ctx.counters.totalConnections++;
    this.ctx.emit({ event: 'connect', connection: id, remote });
    let ended = false;
    const finish = (reason: string, error: boolean): void => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      this.conns.delete(c);
      this.ctx.counters.connections--;
      this.ctx.emit({ event: 'disconnect', connection: id, remote, reason, error, requests: c.tx?.requests ?? 0, inFlightDiscarded: c.tx?.inFlight ?? 0 });
      if (!c.socket.destroyed) c.socket.end();
      this.ctx.idle();
    };
    // A client has 30 s to choose an export.
    const timer = setTimeout(() => { if (c.tx === null) { socket.destroy(); finish('handshake not finished within 30 s', true); } }, 30000);
    timer.unref();
    const hs = new Handshake(socket, this.export, (outcome: HandshakeOutcome) => {
      c.hs = null;
      if (outcome.kind === 'closed') {
        if (outcome.error) this.ctx.emit({ event: 'protocol-error', connection: id, message: outcome.reason });
        socket.end();
        finish(outcome.reason, outcome.error);
        return;
      }
      clearTimeout(timer);
      // The transmission phase reads into the server's buffer on a socket of its own (socket.ts).
      const moved = !STREAM_ONLY ? moveToReadBuffer(socket, onBytes) : null;
      if (moved !== null) { c.socket = moved; listen(moved); }
      this.ctx.emit({ event: 'export', connection: id, export: outcome.name, via: outcome.via, blockSizeNegotiated: outcome.blockSizeNegotiated, socket: moved !== null ? 'read-buffer' : 'stream' });
      const tx = new Transmission({ ctx: this.ctx, socket: c.socket, id, blockSizeNegotiated: outcome.blockSizeNegotiated, onClose: finish });
      c.tx = tx;
      if (outcome.leftover.length > 0) tx.feed(outcome.leftover, outcome.leftover.length);
      if (this.closing !== null) tx.drain();
    });
    c.hs = hs;
    const onBytes = (chunk: Buffer, n: number): void => {
      try {
        if (c.tx !== null) c.tx.feed(chunk, n); else c.hs?.feed(n === chunk.length ? chunk : Buffer.from(chunk.subarray(0, n)));
      } catch (err) {
        // A bug must not take the other connections down: this one is closed.
        this.ctx.emit({ event: 'internal-error', connection: id, message: String((err as Error)?.stack ?? err) });
        if (c.tx !== null) c.tx.abort('internal error', true); else { c.socket.destroy(); finish('internal error', true); }
      }
    };
    const listen = (s: Socket): void => {
      s.on('end', () => { if (c.tx !== null) c.tx.clientEnded(); else { s.end(); finish('client closed the connection during the handshake', false); } });
      s.on('error', (err: NodeJS.ErrnoException) => { if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') this.ctx.emit({ event: 'socket-error', connection: id, message: err.message }); });
      s.on('close', () => {
        if (c.tx !== null) c.tx.abort(c.tx.inFlight > 0 ? 'connection lost with requests in flight' : 'connection lost', false);
        finish('connection closed', false);
      });
    };
    socket.on('data', (chunk: Buffer) => onBytes(chunk, chunk.length));
    listen(socket);
    hs.start();
  }

  stats(): ServeStats {
    return { ...this.ctx.counters, bufferBytes: this.ctx.buffers.used };
  }

  close(options?: { deadlineMs?: number }): Promise<boolean> {
    if (this.closing !== null) return this.closing;
    let deadlineMs = 10000;
    if (options !== undefined) {
      const oo = validateObject(options, 'options');
      validateKnownKeys(oo, 'options', ['deadlineMs']);
      if (oo.deadlineMs !== undefined) deadlineMs = validateInteger(oo.deadlineMs, 'options.deadlineMs', 0, 2 ** 31 - 1);
    }
    this.closing = this.shutdown(deadlineMs);
    return this.closing;
  }

  private async shutdown(deadlineMs: number): Promise<boolean> {
    const t0 = performance.now();
    this.ctx.emit({ event: 'stopping', connections: this.conns.size, inFlight: this.ctx.counters.inFlight });
    const listenerClosed = new Promise<void>((r) => this.net.close(() => r()));
    for (const c of this.conns) {
      if (c.tx !== null) c.tx.drain();
      else { c.socket.destroy(); }
    }
    let clean = true;
    const deadline = t0 + deadlineMs;
    // Connections finish when their in-flight requests are answered.
    while (this.conns.size > 0 || this.ctx.counters.inFlight > 0) {
      const left = deadline - performance.now();
      if (left <= 0) {
        if (this.conns.size > 0) clean = false;
        for (const c of this.conns) c.socket.destroy();
        break;
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 50));
        this.idleWaiters.push(() => { clearTimeout(t); r(); });
      });
    }
    await listenerClosed;
    // Requests of cut connections still complete in the engine: file.close() waits for them.
    if (!this.export.readOnly) { try { await this.file.flush(); } catch (err) { clean = false; this.ctx.emit({ event: 'error', message: `final flush failed: ${(err as Error).message}` }); } }
    await this.file.close().catch(() => { clean = false; });
    this.ctx.buffers.close();
    if (this.ownEngine) await this.engine.close().catch(() => { clean = false; });
    if (this.socketPath !== null) { try { unlinkSync(this.socketPath); } catch { /* gone */ } }
    const s = this.ctx.counters;
    this.ctx.emit({ event: 'stopped', clean, ms: Math.round(performance.now() - t0), reads: s.reads, writes: s.writes, errors: s.errors });
    return clean;
  }
}

function nextPow2(n: number): number { return 2 ** Math.ceil(Math.log2(n)); }

export type { ServeEvent, ExportSpec };
