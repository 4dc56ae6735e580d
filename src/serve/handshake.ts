// The fixed newstyle handshake, server side: greeting, client flags, then option haggling
// (NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST, NBD_OPT_EXPORT_NAME, NBD_OPT_ABORT; any other option
// gets NBD_REP_ERR_UNSUP) until the client enters transmission or leaves. Not on the hot path:
// bytes are accumulated in a Buffer and options decoded with plain code.
import type { Socket } from 'node:net';
import {
  FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, IHAVEOPT_HI, IHAVEOPT_LO, INFO_BLOCK_SIZE, INFO_DESCRIPTION, INFO_EXPORT, INFO_NAME,
  MAX_OPTION_BYTES, OPTION_HEADER_BYTES, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, REP_ACK, REP_ERR_INVALID,
  REP_ERR_SHUTDOWN, REP_ERR_TOO_BIG, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER, encodeGreeting, encodeOptionReply,
  optionName, readU16, readU32, writeU16, writeU32, writeU64,
} from './protocol.js';
import type { ExportSpec } from './export.js';

/** How the handshake ended. */
export type HandshakeOutcome =
  | { kind: 'transmission'; via: 'NBD_OPT_GO' | 'NBD_OPT_EXPORT_NAME'; name: string; blockSizeNegotiated: boolean; leftover: Buffer }
  | { kind: 'closed'; reason: string; error: boolean };

/** Options a client may send before it must pick an export: a bound on a chatty client. */
const MAX_OPTIONS = 256;

export class Handshake {
  private readonly socket: Socket;
  private readonly spec: ExportSpec;
  private readonly done: (o: HandshakeOutcome) => void;
  private buf: Buffer = Buffer.alloc(0);
  private gotFlags = false;
  private noZeroes = false;
  private options = 0;
  private finished = false;
  /** Set when the server is shutting down: options get NBD_REP_ERR_SHUTDOWN. */
  shuttingDown = false;

  constructor(socket: Socket, spec: ExportSpec, done: (o: HandshakeOutcome) => void) {
    this.socket = socket;
    this.spec = spec;
    this.done = done;
  }

  start(): void {
    this.socket.write(encodeGreeting());
  }

  feed(chunk: Buffer): void {
    if (this.finished) return;
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (!this.finished) {
      if (!this.gotFlags) {
        if (this.buf.length < 4) return;
        const flags = readU32(this.buf, 0);
        this.buf = this.buf.subarray(4);
        if ((flags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
          return this.finish({ kind: 'closed', error: true, reason: `malformed handshake: client flags 0x${flags.toString(16)} set bits this server did not offer (it offers FIXED_NEWSTYLE and NO_ZEROES)` });
        }
        if ((flags & FLAG_C_FIXED_NEWSTYLE) === 0) {
          return this.finish({ kind: 'closed', error: true, reason: 'client does not speak fixed newstyle negotiation (NBD_FLAG_C_FIXED_NEWSTYLE not set): only fixed newstyle is served' });
        }
        this.noZeroes = (flags & FLAG_C_NO_ZEROES) !== 0;
        this.gotFlags = true;
        continue;
      }
      if (this.buf.length < OPTION_HEADER_BYTES) return;
      if (readU32(this.buf, 0) !== IHAVEOPT_HI || readU32(this.buf, 4) !== IHAVEOPT_LO) {
        return this.finish({ kind: 'closed', error: true, reason: `malformed handshake: option header without the IHAVEOPT magic (got 0x${this.buf.subarray(0, 8).toString('hex')})` });
      }
      const option = readU32(this.buf, 8), len = readU32(this.buf, 12);
      if (len > MAX_OPTION_BYTES) {
        this.reply(option, REP_ERR_TOO_BIG, `option data of ${len} bytes is larger than this server accepts (${MAX_OPTION_BYTES})`);
        return this.finish({ kind: 'closed', error: true, reason: `malformed handshake: ${optionName(option)} with ${len} bytes of data (limit ${MAX_OPTION_BYTES})` });
      }
      if (this.buf.length < OPTION_HEADER_BYTES + len) return;
      const data = this.buf.subarray(OPTION_HEADER_BYTES, OPTION_HEADER_BYTES + len);
      this.buf = this.buf.subarray(OPTION_HEADER_BYTES + len);
      if (++this.options > MAX_OPTIONS) {
        return this.finish({ kind: 'closed', error: true, reason: `more than ${MAX_OPTIONS} options without choosing an export` });
      }
      this.option(option, data);
    }
  }

  private option(option: number, data: Buffer): void {
    if (this.shuttingDown && option !== OPT_ABORT) {
      this.reply(option, REP_ERR_SHUTDOWN, 'the server is shutting down');
      return;
    }
    switch (option) {
      case OPT_EXPORT_NAME: {
        const name = data.toString('utf8');
        if (!this.known(name)) {
          // This option cannot fail politely: the spec says to close.
          return this.finish({ kind: 'closed', error: true, reason: `NBD_OPT_EXPORT_NAME for unknown export "${name}" (this server has "${this.spec.name}" and the default "")` });
        }
        const b = Buffer.alloc(this.noZeroes ? 10 : 134);
        writeU64(b, 0, this.spec.size);
        writeU16(b, 8, this.spec.flags);
        this.socket.write(b);
        return this.finish({ kind: 'transmission', via: 'NBD_OPT_EXPORT_NAME', name, blockSizeNegotiated: false, leftover: this.buf });
      }
      case OPT_ABORT:
        this.reply(option, REP_ACK);
        return this.finish({ kind: 'closed', error: false, reason: 'client sent NBD_OPT_ABORT' });
      case OPT_LIST: {
        if (data.length !== 0) { this.reply(option, REP_ERR_INVALID, 'NBD_OPT_LIST takes no data'); return; }
        const name = Buffer.from(this.spec.name, 'utf8'), desc = Buffer.from(this.spec.description, 'utf8');
        const d = Buffer.alloc(4 + name.length + desc.length);
        writeU32(d, 0, name.length); name.copy(d, 4); desc.copy(d, 4 + name.length);
        this.reply(option, REP_SERVER, d);
        this.reply(option, REP_ACK);
        return;
      }
      case OPT_INFO: case OPT_GO: {
        // u32 name length, name, u16 number of requests, u16 each.
        if (data.length < 6) { this.reply(option, REP_ERR_INVALID, `${optionName(option)} data too short (${data.length} bytes)`); return; }
        const nameLen = readU32(data, 0);
        if (nameLen > data.length - 6) { this.reply(option, REP_ERR_INVALID, `${optionName(option)}: name length ${nameLen} overruns the option`); return; }
        const name = data.toString('utf8', 4, 4 + nameLen);
        const n = readU16(data, 4 + nameLen);
        if (data.length !== 6 + nameLen + 2 * n) { this.reply(option, REP_ERR_INVALID, `${optionName(option)}: ${n} information requests do not match the option length ${data.length}`); return; }
        const requested = new Set<number>();
        for (let i = 0; i < n; i++) requested.add(readU16(data, 6 + nameLen + 2 * i));
        if (!this.known(name)) { this.reply(option, REP_ERR_UNKNOWN, `no export named "${name}" (this server has "${this.spec.name}" and the default "")`); return; }
        const ex = Buffer.alloc(12);
        writeU16(ex, 0, INFO_EXPORT); writeU64(ex, 2, this.spec.size); writeU16(ex, 10, this.spec.flags);
        this.reply(option, REP_INFO, ex);
        // Sent whether asked or not (the spec allows it); enforced only when the client asked.
        const bs = Buffer.alloc(14);
        writeU16(bs, 0, INFO_BLOCK_SIZE); writeU32(bs, 2, this.spec.minBlock); writeU32(bs, 6, this.spec.preferredBlock); writeU32(bs, 10, this.spec.maxBlock);
        this.reply(option, REP_INFO, bs);
        if (requested.has(INFO_NAME)) {
          const nm = Buffer.from(this.spec.name, 'utf8'), b = Buffer.alloc(2 + nm.length);
          writeU16(b, 0, INFO_NAME); nm.copy(b, 2);
          this.reply(option, REP_INFO, b);
        }
        if (requested.has(INFO_DESCRIPTION)) {
          const ds = Buffer.from(this.spec.description, 'utf8'), b = Buffer.alloc(2 + ds.length);
          writeU16(b, 0, INFO_DESCRIPTION); ds.copy(b, 2);
          this.reply(option, REP_INFO, b);
        }
        this.reply(option, REP_ACK);
        if (option === OPT_GO) {
          return this.finish({ kind: 'transmission', via: 'NBD_OPT_GO', name, blockSizeNegotiated: requested.has(INFO_BLOCK_SIZE), leftover: this.buf });
        }
        return;
      }
      default:
        this.reply(option, REP_ERR_UNSUP, `${optionName(option)} is not supported by this server`);
    }
  }

  private known(name: string): boolean {
    return name === '' || name === this.spec.name;
  }

  private reply(option: number, type: number, data?: Buffer | string): void {
    const d = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    if (!this.socket.destroyed) this.socket.write(encodeOptionReply(option, type, d));
  }

  private finish(o: HandshakeOutcome): void {
    this.finished = true;
    this.buf = Buffer.alloc(0);
    this.done(o);
  }
}
