// The transmission phase of one connection: requests parsed straight out of the socket's
// chunks (no strings, no per-request objects: request records are reused), each sent to the
// engine at once, and answered with simple replies in whatever order they complete. Replies
// are gathered in a staging buffer and written once per turn of the completion loop.
//
// Replies sent at completion. A write (without FUA) or a read of up to COPY_MAX bytes that is
// the only request in flight on its connection, with nothing staged or queued on the socket, is
// "armed": its 16-byte reply header is put in the connection's reply record (with, for a read,
// R_DATA = its length), and the engine's context sends it itself, a read's data after it,
// where the request's completion is reaped, before any JavaScript sees it: in a pump(), or in
// the context's reap at the thread's wake-up just before onReady (native/reply.h,
// Context::ReapAtWake); done() then only settles it. The context's send must never land inside a reply of ours, so before this
// connection writes anything to the socket while a write is armed, it disarms it (disarm(),
// called from writeOut(), the one place bytes are written): if the context has not sent yet,
// the state word goes back to idle and the context will not send (it sends only in pump() or
// at the wake-up before onReady, both on this thread and never while this code runs, so it
// cannot send in between); if it has, what it sent is accounted for and the rest of its
// reply is written first. Nothing is held back for the armed write, so a slow write never
// delays the replies of the requests behind it. Whatever the context did not send (a failed or
// short request, a full socket, part of the bytes) is written here as usual: the rest of a
// partly sent reply is copied, because a read's buffer is recycled when it settles. The context writes
// to its own dup of the socket's fd, held until this connection closes its record
// (closeReply), and names the record by a handle with a generation, so neither a number it
// writes to nor a record a late request names is ever another connection's.
import type { Socket } from 'node:net';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, REPLY_ARMED, REPLY_IDLE, REPLY_INDEX_MASK, REPLY_TRIED, REPLY_WORDS, R_DATA, R_RESULT, R_STATE } from '../protocol.js';
import {
  CMD_CACHE, CMD_DISC, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES,
  NBD_EINVAL, NBD_ENOMEM, NBD_ENOSPC, NBD_EPERM, NBD_ESHUTDOWN, REQUEST_BYTES, REQUEST_MAGIC, SIMPLE_REPLY_BYTES,
  commandName, encodeSimpleReply, nbdErrno, nbdErrorName, readU16, readU32, readU64,
} from './protocol.js';
import type { ExportContext, ReplyHost } from './export.js';

const S_HEADER = 0, S_PAYLOAD = 1, S_SKIP = 2, S_STOPPED = 3;
/** Read data up to this size is copied into the staging buffer; larger reads are written from their pool buffer. */
const COPY_MAX = 64 * 1024;
const STAGING_BYTES = 1 << 20;
/** Stop reading requests while this many reply bytes wait for the client to read them. */
const WRITE_HIGH_WATER = 8 << 20;
/** Request errors logged per connection (the rest are counted). */
const MAX_LOGGED_ERRORS = 20;
/** While the server drains, a connection quiet this long (ms) with nothing in flight is closed. */
const QUIET_MS = 100;

/** One request in flight. Records are reused: the completion handlers are bound once. */
class Req {
  readonly conn: Transmission;
  readonly handle = new Uint8Array(8);
  cmd = 0;
  flags = 0;
  off = 0;
  len = 0;
  buf: Uint8Array | null = null;
  view: Uint8Array | null = null;
  readonly onRead: (n: number) => void;
  readonly onDone: () => void;
  readonly onWritten: (n?: number) => void;
  readonly onFail: (err: unknown) => void;
  readonly onSent: () => void;
  /** An armed request whose reply the engine's context sent (part of it or all): done() only settles it. */
  replied = false;
  /** A write or read submitted with the connection's reply handle (armed when it was started). */
  withReply = false;

  constructor(conn: Transmission) {
    this.conn = conn;
    this.onRead = (n) => conn.readDone(this, n);
    this.onDone = () => conn.done(this, 0);
    this.onWritten = (n?: number) => conn.writeDone(this, n);
    this.onFail = (err) => conn.failed(this, err);
    this.onSent = () => conn.sent(this);
  }
}

export interface TransmissionOptions {
  ctx: ExportContext;
  socket: Socket;
  id: number;
  /** Whether the client asked for block sizes (NBD_INFO_BLOCK_SIZE): alignment is then enforced. */
  blockSizeNegotiated: boolean;
  /** The connection is over (client left, soft disconnect, protocol error, drained). */
  onClose: (reason: string, error: boolean) => void;
}

export class Transmission {
  private readonly ctx: ExportContext;
  private readonly socket: Socket;
  readonly id: number;
  private readonly enforceAlign: boolean;
  private readonly onClose: (reason: string, error: boolean) => void;
  private state = S_HEADER;
  private readonly hdr = Buffer.alloc(REQUEST_BYTES);
  private hdrFill = 0;
  /** The write whose payload is being received, and how much of it has arrived. */
  private cur: Req | null = null;
  private curFill = 0;
  private skip = 0;
  /** Bytes received but not parsed yet (the connection waits for memory or for replies to drain). */
  private backlog: Buffer | null = null;
  private blocked = false;
  private readonly free: Req[] = [];
  inFlight = 0;
  requests = 0;
  private errorsLogged = 0;
  private out = Buffer.allocUnsafeSlow(STAGING_BYTES);
  private outStart = 0;
  private outPos = 0;
  private flushQueued = false;
  private readonly flushBound = (): void => this.flush();
  private readonly resumeBound = (): void => this.resume();
  /** DISC received, or the server drains: no new request is started. */
  private ending = false;
  private draining = false;
  private lastInput = 0;
  closed = false;
  private endReason = '';
  /**
   * The connection's reply record: its handle (ReplyHost.replyOpen; -1: none, every reply is
   * written here), its first word in the records, and the records.
   */
  private replyHandle = -1;
  private replyWord = 0;
  private replyHost: ReplyHost | null = null;
  private replyWords: Int32Array | null = null;
  private replyBytes: Uint8Array | null = null;
  /** The request whose reply the engine's context sends at completion: while set, nothing is written to the socket. */
  private armed: Req | null = null;

  constructor(o: TransmissionOptions) {
    this.ctx = o.ctx;
    this.socket = o.socket;
    this.id = o.id;
    this.enforceAlign = o.blockSizeNegotiated && o.ctx.spec.minBlock > 1;
    this.onClose = o.onClose;
    // The free list starts with a record in it, so that every connection's array holds objects
    // from the start: an empty literal starts with small-integer elements, and V8's code compiled
    // for an earlier connection's list then deoptimised done() on each new connection ("wrong
    // map", node --trace-deopt). request() still deoptimises once on the second connection, at
    // its entry, for a reason not found yet.
    this.free.push(new Req(this));
    this.socket.on('drain', () => { if (this.blocked && this.backlogWaitsForDrain) this.resume(); });
    const host = o.ctx.replies, fd = (o.socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    const words = host?.replyRecords() ?? null;
    if (host !== null && words !== null && typeof fd === 'number' && fd >= 0) {
      const handle = host.replyOpen(fd);
      if (handle >= 0) {
        this.replyHandle = handle; this.replyWord = (handle & REPLY_INDEX_MASK) * REPLY_WORDS;
        this.replyHost = host; this.replyWords = words;
        this.replyBytes = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
      }
    }
  }

  private backlogWaitsForDrain = false;
  private waitingForMemory = false;

  // ---- Input -------------------------------------------------------------------------

  /**
   * Bytes [0, n) of `chunk` arrived. The chunk may be the server's read buffer, reused by the
   * next read (socket.ts): whatever must outlive this call is copied.
   */
  feed(chunk: Buffer, n: number): void {
    if (this.draining) this.lastInput = performance.now();
    if (this.blocked) {
      // Data that arrived after pause() took effect (a streaming socket reads on): keep a copy behind the backlog.
      this.backlog = Buffer.concat(this.backlog === null ? [chunk.subarray(0, n)] : [this.backlog, chunk.subarray(0, n)]);
      return;
    }
    let pos = 0;
    while (pos < n) {
      const st = this.state;
      if (st === S_PAYLOAD) {
        const req = this.cur!;
        const take = Math.min(n - pos, req.len - this.curFill);
        req.view!.set(chunk.subarray(pos, pos + take), this.curFill);
        pos += take;
        this.curFill += take;
        if (this.curFill === req.len) { this.cur = null; this.state = S_HEADER; this.startWrite(req); }
        continue;
      }
      if (st === S_SKIP) {
        const take = Math.min(n - pos, this.skip);
        pos += take;
        this.skip -= take;
        if (this.skip === 0) this.state = S_HEADER;
        continue;
      }
      if (st === S_STOPPED) return;
      // S_HEADER
      let h: Buffer, ho: number;
      if (this.hdrFill === 0 && n - pos >= REQUEST_BYTES) {
        h = chunk; ho = pos; pos += REQUEST_BYTES;
      } else {
        const take = Math.min(REQUEST_BYTES - this.hdrFill, n - pos);
        chunk.copy(this.hdr, this.hdrFill, pos, pos + take);
        this.hdrFill += take;
        pos += take;
        if (this.hdrFill < REQUEST_BYTES) return;
        this.hdrFill = 0;
        h = this.hdr; ho = 0;
      }
      if (!this.request(h, ho)) {
        // Not started: wait for memory (or for the client to read its replies), then go on
        // from this very header. The header is kept in this.hdr, the rest as the backlog.
        if (h !== this.hdr) h.copy(this.hdr, 0, ho, ho + REQUEST_BYTES);
        this.hdrFill = REQUEST_BYTES;
        this.backlog = pos < n ? Buffer.from(chunk.subarray(pos, n)) : null;
        this.block();
        return;
      }
    }
  }

  private block(): void {
    this.blocked = true;
    this.socket.pause();
  }

  /** Memory came back, or replies drained, or a request finished: try the blocked header again. */
  private resume(): void {
    this.waitingForMemory = false;
    if (!this.blocked || this.closed) return;
    this.blocked = false;
    this.backlogWaitsForDrain = false;
    if (this.hdrFill === REQUEST_BYTES) {
      this.hdrFill = 0;
      if (!this.request(this.hdr, 0)) {
        this.hdrFill = REQUEST_BYTES;
        this.block();
        return;
      }
    }
    const b = this.backlog;
    this.backlog = null;
    if (b !== null) this.feed(b, b.length);
    if (!this.blocked && !this.closed && this.state !== S_STOPPED) this.socket.resume();
  }

  /**
   * One request header. Returns false when it cannot start now (no memory, too many in
   * flight, the client is not reading replies): it is offered again later, unchanged.
   */
  private request(h: Buffer, o: number): boolean {
    if (readU32(h, o) !== REQUEST_MAGIC) {
      this.protocolError(`request without the NBD request magic (got 0x${h.toString('hex', o, o + 4)}): the stream is out of step, closing this connection`);
      return true;
    }
    const flags = readU16(h, o + 4), cmd = readU16(h, o + 6);
    const off = readU64(h, o + 16), len = readU32(h, o + 24);
    const spec = this.ctx.spec;
    const payload = cmd === CMD_WRITE ? len : 0;
    if (this.inFlight >= this.ctx.maxInFlight || this.socket.writableLength > WRITE_HIGH_WATER) {
      if (this.socket.writableLength > WRITE_HIGH_WATER) this.backlogWaitsForDrain = true;
      return false;
    }
    const req = this.free.pop() ?? new Req(this);
    for (let i = 0; i < 8; i++) req.handle[i] = h[o + 8 + i];
    req.cmd = cmd; req.flags = flags; req.off = off; req.len = len; req.buf = null; req.view = null;
    this.requests++;

    if (this.draining) return this.reject(req, NBD_ESHUTDOWN, 'the server is shutting down', payload);
    if (cmd === CMD_DISC) {
      this.free.push(req);
      this.ending = true;
      this.endReason = 'client sent NBD_CMD_DISC';
      this.state = S_STOPPED;
      this.socket.pause();
      this.maybeEnd();
      return true;
    }
    // Flags each command may carry (we negotiate no structured replies, so no DF or REQ_ONE).
    const allowed = cmd === CMD_WRITE || cmd === CMD_TRIM ? CMD_FLAG_FUA : cmd === CMD_WRITE_ZEROES ? CMD_FLAG_FUA | CMD_FLAG_NO_HOLE : 0;
    if ((flags & ~allowed) !== 0) return this.reject(req, NBD_EINVAL, `flags 0x${flags.toString(16)} are not valid for ${commandName(cmd)}`, payload);
    const writes = cmd === CMD_WRITE || cmd === CMD_TRIM || cmd === CMD_WRITE_ZEROES;
    if (cmd === CMD_FLUSH) {
      if (off !== 0 || len !== 0) return this.reject(req, NBD_EINVAL, 'FLUSH must have offset 0 and length 0', 0);
    } else if (cmd === CMD_READ || writes || cmd === CMD_CACHE) {
      if ((cmd === CMD_READ || cmd === CMD_WRITE) && len > spec.maxBlock) {
        if (cmd === CMD_WRITE && len > this.ctx.hardLimit) {
          this.reject(req, NBD_EINVAL, `${commandName(cmd)} of ${len} bytes is far beyond the maximum block size ${spec.maxBlock}`, 0);
          this.protocolError(`${commandName(cmd)} of ${len} bytes exceeds the hard limit of ${this.ctx.hardLimit} bytes: closing this connection`);
          return true;
        }
        return this.reject(req, NBD_EINVAL, `${commandName(cmd)} of ${len} bytes exceeds the maximum block size ${spec.maxBlock}`, payload);
      }
      if (off + len > spec.size) {
        const e = cmd === CMD_WRITE || cmd === CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
        return this.reject(req, e, `${commandName(cmd)} at ${off === Infinity ? '>= 2^53' : off} length ${len} goes past the end of the export (${spec.size} bytes)`, payload);
      }
      if (this.enforceAlign && (off % spec.minBlock !== 0 || len % spec.minBlock !== 0)) {
        return this.reject(req, NBD_EINVAL, `offset ${off} and length ${len} must be multiples of the minimum block size ${spec.minBlock}`, payload);
      }
      if (writes && spec.readOnly) return this.reject(req, NBD_EPERM, `${commandName(cmd)} on a read-only export`, payload);
    } else {
      return this.reject(req, NBD_EINVAL, `${commandName(cmd)} is not supported (no structured replies or metadata contexts were negotiated)`, 0);
    }

    if ((cmd === CMD_READ || cmd === CMD_WRITE) && len > 0) {
      let buf: Uint8Array | null;
      try {
        buf = this.ctx.buffers.acquire(len);
      } catch (err) {
        return this.reject(req, NBD_ENOMEM, `no buffer for ${len} bytes: ${(err as Error).message}`, payload);
      }
      if (buf === null) {
        this.requests--;
        this.free.push(req);
        if (!this.waitingForMemory) { this.waitingForMemory = true; this.ctx.buffers.wait(this.resumeBound); }
        return false;
      }
      req.buf = buf;
      req.view = buf.byteLength === len ? buf : buf.subarray(0, len);
    }
    this.inFlight++;
    this.ctx.counters.inFlight++;
    const file = this.ctx.file;
    try {
      switch (cmd) {
        case CMD_READ:
          if (len === 0) { this.done(req, 0); break; }
          if (this.replyHandle >= 0 && this.inFlight === 1 && this.armed === null && len <= COPY_MAX &&
              this.outPos === this.outStart && this.socket.writableLength === 0) {
            // Armed, as startWrite() arms a write: the context sends the header and the data.
            this.arm(req, len);
            file.readReplying(req.view!, off, this.replyHandle).then(req.onRead, req.onFail);
            break;
          }
          file.read(req.view!, off).then(req.onRead, req.onFail);
          break;
        case CMD_WRITE:
          if (len === 0) { this.done(req, 0); break; }
          this.cur = req; this.curFill = 0; this.state = S_PAYLOAD;
          break;
        case CMD_FLUSH:
          this.ctx.counters.flushes++;
          file.flush().then(req.onDone, req.onFail);
          break;
        case CMD_TRIM:
          this.ctx.counters.trims++;
          if (len === 0) { this.done(req, 0); break; }
          file.fallocate(off, len, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE).then(req.onWritten, req.onFail);
          break;
        case CMD_WRITE_ZEROES:
          // With or without NO_HOLE: FALLOC_FL_ZERO_RANGE, which allocates the range.
          this.ctx.counters.zeroes++;
          if (len === 0) { this.done(req, 0); break; }
          file.writeZeroes(off, len).then(req.onWritten, req.onFail);
          break;
        case CMD_CACHE:
          // O_DIRECT has no cache to fill: the range was checked, nothing else to do.
          this.ctx.counters.other++;
          this.done(req, 0);
          break;
      }
    } catch (err) {
      // A synchronous throw from the File API (a closed file, bad input the checks missed).
      if (cmd === CMD_WRITE && this.state === S_PAYLOAD) { this.state = S_SKIP; this.skip = len; this.cur = null; }
      this.failed(req, err);
    }
    return true;
  }

  /** Answers `req` with an error now; a write's payload is read and dropped. */
  private reject(req: Req, error: number, message: string, payload: number): true {
    if (payload > 0) { this.state = S_SKIP; this.skip = payload; }
    this.logError(req, error, message);
    this.inFlight++;
    this.ctx.counters.inFlight++;
    this.done(req, error);
    return true;
  }

  private startWrite(req: Req): void {
    try {
      if (this.replyHandle >= 0 && this.inFlight === 1 && this.armed === null && (req.flags & CMD_FLAG_FUA) === 0 &&
          this.outPos === this.outStart && this.socket.writableLength === 0) {
        // Armed (see the top of this file): only this request is in flight and nothing is
        // staged or queued on the socket, so the context's send goes out whole and in order.
        this.arm(req, 0);
        this.ctx.file.writeReplying(req.view!, req.off, this.replyHandle).then(req.onWritten, req.onFail);
        return;
      }
      this.ctx.file.write(req.view!, req.off).then(req.onWritten, req.onFail);
    } catch (err) {
      this.failed(req, err);
    }
  }

  /** Arms the reply record for `req`: its success header, then `data` bytes of it (a read's length; 0: a write). */
  private arm(req: Req, data: number): void {
    const w = this.replyWord, W = this.replyWords!;
    encodeSimpleReply(this.replyBytes!, w * 4, 0, req.handle, 0);
    W[w + R_DATA] = data;
    W[w + R_STATE] = REPLY_ARMED;
    this.armed = req;
    req.withReply = true;
  }

  // ---- Completions -------------------------------------------------------------------

  /** @internal */ readDone(req: Req, n: number): void {
    if (n < req.len) req.view!.fill(0, n); // the file shrank under us: the rest reads as zeroes
    this.ctx.counters.reads++;
    this.ctx.counters.bytesRead += req.len;
    this.done(req, 0);
  }

  /**
   * @internal A write, trim or zero-write finished (`n`: a write's bytes written): with FUA it
   * is made durable first.
   */
  writeDone(req: Req, n?: number): void {
    if (req.cmd === CMD_WRITE) {
      if (n !== req.len) {
        // File.write resolves short only when it could not go on (the engine is closing):
        // the client must not be told that the rest of its data landed.
        this.failed(req, { code: 'EIO', message: `the write stopped short: ${n} of ${req.len} bytes were written and the rest could not be (the engine is closing)` });
        return;
      }
      this.ctx.counters.writes++; this.ctx.counters.bytesWritten += req.len;
    }
    if ((req.flags & CMD_FLAG_FUA) !== 0) {
      req.flags &= ~CMD_FLAG_FUA;
      try { this.ctx.file.flush().then(req.onDone, req.onFail); } catch (err) { this.failed(req, err); }
      return;
    }
    this.done(req, 0);
  }

  /** @internal */ failed(req: Req, err: unknown): void {
    const e = err as { code?: string; message?: string };
    const error = nbdErrno(e?.code);
    this.logError(req, error, String(e?.message ?? err));
    this.done(req, error);
  }

  /** @internal The request settled with NBD error `error` (0: success): reply, recycle. */
  done(req: Req, error: number): void {
    if (req === this.armed) this.disarm();
    if (req.withReply) {
      req.withReply = false;
      // A request submitted with the reply handle that failed may still be in the kernel (a
      // close() that gave up rejects the requests it could not wait for), its arm in the
      // context still set, whether or not it is still this.armed (a reply written meanwhile
      // disarmed it). Its late completion would find the record armed by the next request and
      // send that one's success reply before (or without) its data landing, or a read's reply
      // from memory already reused. So the record goes for
      // good, and this connection replies to everything itself from now on.
      if (error !== 0 && !req.replied) this.closeReply();
    }
    if (req.replied) {
      req.replied = false;
      if (error !== 0) {
        // Cannot happen: the context sends only for a request that completed whole.
        this.ctx.emit({ event: 'internal-error', connection: this.id, message: `a success reply went out for a ${commandName(req.cmd)} that then failed (NBD error ${nbdErrorName(error)})` });
      }
      this.settle(req, true);
      return;
    }
    if (!this.closed) {
      if (error === 0 && req.cmd === CMD_READ && req.len > 0) {
        if (req.len <= COPY_MAX) {
          this.reserve(SIMPLE_REPLY_BYTES + req.len);
          encodeSimpleReply(this.out, this.outPos, 0, req.handle, 0);
          this.out.set(req.view!, this.outPos + SIMPLE_REPLY_BYTES);
          this.outPos += SIMPLE_REPLY_BYTES + req.len;
        } else {
          // Large: the header, then the pool buffer itself; it is recycled once sent.
          this.reserve(SIMPLE_REPLY_BYTES);
          encodeSimpleReply(this.out, this.outPos, 0, req.handle, 0);
          this.outPos += SIMPLE_REPLY_BYTES;
          this.writeOut();
          this.socket.write(req.view!, req.onSent);
          this.settle(req, false);
          return;
        }
      } else {
        this.reserve(SIMPLE_REPLY_BYTES);
        encodeSimpleReply(this.out, this.outPos, error, req.handle, 0);
        this.outPos += SIMPLE_REPLY_BYTES;
      }
      if (!this.flushQueued) { this.flushQueued = true; queueMicrotask(this.flushBound); }
    }
    this.settle(req, true);
  }

  /**
   * Ends the armed state: the request settled, this connection is about to write to the
   * socket, or it closes. What the context sent of the request's reply is accounted for:
   * nothing (it had not completed, or completed short or failed, or the socket was full), and
   * the state word goes back to idle so that it never will, and done() replies as usual; or some
   * bytes (of the header and a read's data), and the rest go out now, ahead of anything else,
   * and done() only settles the request. The context sends only inside pump() or in its reap at
   * the wake-up before onReady, both on this thread, and this makes no native call between the
   * read of the state word and its reset, so it cannot send in between.
   */
  private disarm(): void {
    const req = this.armed!;
    this.armed = null;
    const W = this.replyWords!, w = this.replyWord;
    const sent = W[w + R_STATE] === REPLY_TRIED ? W[w + R_RESULT] : 0;
    W[w + R_STATE] = REPLY_IDLE;
    if (sent <= 0) return;
    req.replied = true;
    this.ctx.counters.engineReplies++;
    const data = req.cmd === CMD_READ ? req.len : 0;
    if (sent < SIMPLE_REPLY_BYTES + data && !this.closed && !this.socket.destroyed) {
      // The rest of the reply, copied: a read's buffer is recycled when it settles.
      this.ctx.counters.engineRepliesPartial++;
      if (sent < SIMPLE_REPLY_BYTES) this.socket.write(Buffer.from(this.replyBytes!.subarray(w * 4 + sent, w * 4 + SIMPLE_REPLY_BYTES)));
      if (data > 0) this.socket.write(Buffer.from(req.view!.subarray(Math.max(0, sent - SIMPLE_REPLY_BYTES), data)));
    }
  }

  /** The reply record goes (the connection is over): the context closes its dup of the socket. */
  private closeReply(): void {
    if (this.replyHandle < 0) return;
    if (this.armed !== null) this.disarm(); // the record is still this connection's
    const handle = this.replyHandle;
    this.replyHandle = -1;
    this.replyHost!.replyClose(handle);
  }

  /** @internal A large read's data left (or the socket died): its buffer can be reused. */
  sent(req: Req): void {
    const buf = req.buf;
    req.buf = null; req.view = null;
    if (buf !== null) this.ctx.buffers.release(buf);
    this.free.push(req);
  }

  private settle(req: Req, recycle: boolean): void {
    this.inFlight--;
    if (--this.ctx.counters.inFlight === 0) this.ctx.idle();
    if (recycle) this.sent(req);
    if (this.blocked && !this.backlogWaitsForDrain && this.inFlight < this.ctx.maxInFlight) {
      if (!this.flushQueued) { this.flushQueued = true; queueMicrotask(this.flushBound); }
      queueMicrotask(this.resumeBound);
    }
    if (this.inFlight === 0 && (this.ending || this.closed)) this.maybeEnd();
  }

  // ---- Output ------------------------------------------------------------------------

  /** Room for `n` more bytes in the staging buffer. */
  private reserve(n: number): void {
    if (this.outPos + n <= this.out.length) return;
    this.writeOut();
    if (this.socket.writableLength === 0 && n <= STAGING_BYTES) {
      this.outStart = this.outPos = 0; // everything written so far has reached the kernel
    } else {
      this.out = Buffer.allocUnsafeSlow(Math.max(STAGING_BYTES, n));
      this.outStart = this.outPos = 0;
    }
  }

  /**
   * Writes what is staged: the one place replies go to the socket (a large read's data goes
   * right after its header, staged and written here). An armed request is disarmed first.
   */
  private writeOut(): void {
    if (this.outPos > this.outStart && !this.closed && !this.socket.destroyed) {
      if (this.armed !== null) this.disarm();
      this.socket.write(this.out.subarray(this.outStart, this.outPos));
    }
    this.outStart = this.outPos;
    if (this.socket.writableLength === 0) this.outStart = this.outPos = 0;
  }

  private flush(): void {
    this.flushQueued = false;
    this.writeOut();
    if (this.ending && this.inFlight === 0) this.maybeEnd();
  }

  // ---- Ending ------------------------------------------------------------------------

  /** Server shutdown: requests already in flight finish and are answered, new ones get ESHUTDOWN. */
  drain(): void {
    this.draining = true;
    this.endReason ||= 'server shutting down';
    // Requests the client sent before it saw the drain may still be on the wire: they are
    // answered (ESHUTDOWN) until the connection has been quiet for a moment.
    this.lastInput = performance.now();
    const check = (): void => {
      if (this.closed) return;
      if (performance.now() - this.lastInput >= QUIET_MS) { this.ending = true; this.maybeEnd(); }
      if (!this.closed) setTimeout(check, QUIET_MS).unref();
    };
    setTimeout(check, QUIET_MS).unref();
  }

  /** The client closed its sending side: answer what is in flight, then close. */
  clientEnded(): void {
    // A write whose payload was still arriving can never complete: it is dropped unanswered.
    if (this.cur !== null && !this.blocked) {
      const req = this.cur;
      this.cur = null;
      this.state = S_STOPPED;
      this.ending = true;
      this.endReason ||= 'client closed the connection in the middle of a write payload';
      this.settle(req, true);
    }
    this.ending = true;
    this.endReason ||= 'client closed the connection';
    this.maybeEnd();
  }

  private maybeEnd(): void {
    // A connection waiting for memory still has requests to start (its backlog).
    if (this.closed || !this.ending || this.inFlight > 0 || (this.blocked && this.state !== S_STOPPED)) return;
    this.writeOut();
    this.closed = true;
    this.state = S_STOPPED;
    this.closeReply();
    this.socket.end();
    // Read on until the client's FIN (feed() drops the bytes: S_STOPPED). A paused socket that
    // reads with onread (socket.ts) stops reading for good, so after a DISC, which pauses it,
    // the EOF would never be read: no 'end', no 'close', and its fd, its Transmission and its
    // staging buffer would stay for the life of the process.
    this.socket.resume();
    this.onClose(this.endReason, false);
  }

  private protocolError(message: string): void {
    this.ctx.emit({ event: 'protocol-error', connection: this.id, message });
    this.state = S_STOPPED;
    this.abort(message, true);
  }

  /** The socket is gone or must go: completions still in flight are discarded when they come. */
  abort(reason: string, error: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.state = S_STOPPED;
    this.backlog = null;
    // A write whose payload was arriving never started: its buffer goes back now.
    if (this.cur !== null) { const req = this.cur; this.cur = null; this.settle(req, true); }
    this.closeReply();
    this.socket.destroy();
    this.onClose(reason, error);
  }

  private logError(req: Req, error: number, message: string): void {
    this.ctx.counters.errors++;
    if (this.errorsLogged++ < MAX_LOGGED_ERRORS) {
      this.ctx.emit({ event: 'request-error', connection: this.id, command: commandName(req.cmd), offset: req.off, length: req.len, error: nbdErrorName(error), message });
    } else if (this.errorsLogged === MAX_LOGGED_ERRORS + 1) {
      this.ctx.emit({ event: 'request-error', connection: this.id, message: `more than ${MAX_LOGGED_ERRORS} failed requests on this connection: no longer logged one by one (counted in stats)` });
    }
  }
}
