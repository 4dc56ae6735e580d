// NBD protocol constants and the few encoders/decoders the server needs (NetworkBlockDevice
// doc/proto.md). Everything is big-endian on the wire. Decoders read from a Buffer at an
// offset and create no strings or objects; 64-bit values are read as two 32-bit halves.

export const NBDMAGIC_HI = 0x4e42444d, NBDMAGIC_LO = 0x41474943; // "NBDMAGIC"
export const IHAVEOPT_HI = 0x49484156, IHAVEOPT_LO = 0x454f5054; // "IHAVEOPT"
export const OPT_REPLY_MAGIC_HI = 0x0003e889, OPT_REPLY_MAGIC_LO = 0x045565a9;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags. */
export const TF_HAS_FLAGS = 1 << 0;
export const TF_READ_ONLY = 1 << 1;
export const TF_SEND_FLUSH = 1 << 2;
export const TF_SEND_FUA = 1 << 3;
export const TF_ROTATIONAL = 1 << 4;
export const TF_SEND_TRIM = 1 << 5;
export const TF_SEND_WRITE_ZEROES = 1 << 6;
export const TF_SEND_DF = 1 << 7;
export const TF_CAN_MULTI_CONN = 1 << 8;
export const TF_SEND_RESIZE = 1 << 9;
export const TF_SEND_CACHE = 1 << 10;
export const TF_SEND_FAST_ZERO = 1 << 11;

/** Options. */
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;

/** Option replies. */
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
const ERR = 0x80000000;
export const REP_ERR_UNSUP = ERR + 1;
export const REP_ERR_POLICY = ERR + 2;
export const REP_ERR_INVALID = ERR + 3;
export const REP_ERR_PLATFORM = ERR + 4;
export const REP_ERR_TLS_REQD = ERR + 5;
export const REP_ERR_UNKNOWN = ERR + 6;
export const REP_ERR_SHUTDOWN = ERR + 7;
export const REP_ERR_BLOCK_SIZE_REQD = ERR + 8;
export const REP_ERR_TOO_BIG = ERR + 9;

/** NBD_INFO_* types in NBD_REP_INFO. */
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

/** Commands. */
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_CACHE = 5;
export const CMD_WRITE_ZEROES = 6;
export const CMD_BLOCK_STATUS = 7;

/** Command flags. */
export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

/** NBD error values (simple reply "error" field). */
export const NBD_OK = 0;
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

export const REQUEST_BYTES = 28;
export const SIMPLE_REPLY_BYTES = 16;
export const OPTION_HEADER_BYTES = 16;
/** Option payloads above this are refused (strings are at most 4096 bytes by the spec). */
export const MAX_OPTION_BYTES = 64 * 1024;

export const TWO32 = 4294967296;

/** The u64 at `off` as a number when it is below 2^53, else Infinity (always out of range for us). */
export function readU64(b: Uint8Array, off: number): number {
  const hi = readU32(b, off);
  if (hi >= 0x200000) return Infinity;
  return hi * TWO32 + readU32(b, off + 4);
}

export function readU32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

export function readU16(b: Uint8Array, off: number): number {
  return (b[off] << 8) | b[off + 1];
}

export function writeU32(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 24; b[off + 1] = v >>> 16; b[off + 2] = v >>> 8; b[off + 3] = v;
}

export function writeU16(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 8; b[off + 1] = v;
}

/** A non-negative integer below 2^53 as a u64. */
export function writeU64(b: Uint8Array, off: number, v: number): void {
  const hi = Math.floor(v / TWO32);
  writeU32(b, off, hi);
  writeU32(b, off + 4, v - hi * TWO32);
}

/** Simple reply header (16 bytes): magic, error, the request's 8-byte handle copied as is. */
export function encodeSimpleReply(out: Uint8Array, off: number, error: number, handle: Uint8Array, handleOff: number): void {
  writeU32(out, off, SIMPLE_REPLY_MAGIC);
  writeU32(out, off + 4, error);
  for (let i = 0; i < 8; i++) out[off + 8 + i] = handle[handleOff + i];
}

/** One option reply: magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, type: number, data?: Uint8Array): Buffer {
  const len = data?.byteLength ?? 0;
  const b = Buffer.alloc(20 + len);
  writeU32(b, 0, OPT_REPLY_MAGIC_HI); writeU32(b, 4, OPT_REPLY_MAGIC_LO);
  writeU32(b, 8, option); writeU32(b, 12, type); writeU32(b, 16, len);
  if (data) b.set(data, 20);
  return b;
}

/** The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(): Buffer {
  const b = Buffer.alloc(18);
  writeU32(b, 0, NBDMAGIC_HI); writeU32(b, 4, NBDMAGIC_LO);
  writeU32(b, 8, IHAVEOPT_HI); writeU32(b, 12, IHAVEOPT_LO);
  writeU16(b, 16, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
  return b;
}

export function optionName(o: number): string {
  switch (o) {
    case OPT_EXPORT_NAME: return 'NBD_OPT_EXPORT_NAME';
    case OPT_ABORT: return 'NBD_OPT_ABORT';
    case OPT_LIST: return 'NBD_OPT_LIST';
    case OPT_STARTTLS: return 'NBD_OPT_STARTTLS';
    case OPT_INFO: return 'NBD_OPT_INFO';
    case OPT_GO: return 'NBD_OPT_GO';
    case OPT_STRUCTURED_REPLY: return 'NBD_OPT_STRUCTURED_REPLY';
    case 9: return 'NBD_OPT_LIST_META_CONTEXT';
    case 10: return 'NBD_OPT_SET_META_CONTEXT';
    case 11: return 'NBD_OPT_EXTENDED_HEADERS';
    default: return `option ${o}`;
  }
}

export function commandName(c: number): string {
  switch (c) {
    case CMD_READ: return 'READ';
    case CMD_WRITE: return 'WRITE';
    case CMD_DISC: return 'DISC';
    case CMD_FLUSH: return 'FLUSH';
    case CMD_TRIM: return 'TRIM';
    case CMD_CACHE: return 'CACHE';
    case CMD_WRITE_ZEROES: return 'WRITE_ZEROES';
    case CMD_BLOCK_STATUS: return 'BLOCK_STATUS';
    default: return `command ${c}`;
  }
}

/** A ringfence/Node error code as the NBD error the client gets. */
export function nbdErrno(code: string | undefined): number {
  switch (code) {
    case 'EPERM': case 'EACCES': case 'EBADF': case 'EROFS': return NBD_EPERM;
    case 'ENOSPC': case 'EDQUOT': case 'EFBIG': return NBD_ENOSPC;
    case 'EINVAL': case 'ERR_OUT_OF_RANGE': case 'ERR_INVALID_ARG_VALUE': case 'ERR_INVALID_ARG_TYPE': case 'ERR_RINGFENCE_UNALIGNED': return NBD_EINVAL;
    case 'ENOMEM': case 'ERR_RINGFENCE_POOL_EXHAUSTED': return NBD_ENOMEM;
    case 'EOVERFLOW': return NBD_EOVERFLOW;
    case 'EOPNOTSUPP': case 'ENOTSUP': return NBD_ENOTSUP;
    case 'ERR_RINGFENCE_CLOSED': case 'ESHUTDOWN': return NBD_ESHUTDOWN;
    default: return NBD_EIO;
  }
}

export function nbdErrorName(e: number): string {
  switch (e) {
    case NBD_OK: return 'OK';
    case NBD_EPERM: return 'EPERM';
    case NBD_EIO: return 'EIO';
    case NBD_ENOMEM: return 'ENOMEM';
    case NBD_EINVAL: return 'EINVAL';
    case NBD_ENOSPC: return 'ENOSPC';
    case NBD_EOVERFLOW: return 'EOVERFLOW';
    case NBD_ENOTSUP: return 'ENOTSUP';
    case NBD_ESHUTDOWN: return 'ESHUTDOWN';
    default: return `error ${e}`;
  }
}
