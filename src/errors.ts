import { constants as osConstants } from 'node:os';

/** errno number -> name, built once from node:os. */
const ERRNO_NAMES: Map<number, string> = new Map(
  Object.entries(osConstants.errno).map(([name, num]) => [num as number, name]),
);

export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
}

export interface RingfenceErrorFields {
  code: string;
  errno?: number;
  op?: string;
  path?: string;
  offset?: bigint | number;
  length?: bigint | number;
  cause?: unknown;
}

/**
 * The one error class ringfence throws or rejects with (besides TypeError/RangeError
 * for bad arguments). `code` is an errno name such as 'EIO' or an 'ERR_RINGFENCE_*' code.
 */
export class RingfenceError extends Error {
  readonly code: string;
  readonly errno: number | undefined;
  readonly op: string | undefined;
  readonly path: string | undefined;
  readonly offset: bigint | undefined;
  readonly length: bigint | undefined;

  constructor(message: string, fields: RingfenceErrorFields) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = 'RingfenceError';
    this.code = fields.code;
    this.errno = fields.errno;
    this.op = fields.op;
    this.path = fields.path;
    this.offset = fields.offset === undefined ? undefined : BigInt(fields.offset);
    this.length = fields.length === undefined ? undefined : BigInt(fields.length);
  }
}

/** Advice per errno: what the caller can do about it. */
const ADVICE: Record<string, string> = {
  EINVAL: 'check that offset, length and buffer address are multiples of the file\'s direct-I/O alignment, or open the file with { direct: false }',
  ENOSPC: 'the filesystem is full: free space or grow the volume, then retry the write',
  EDQUOT: 'the disk quota is exhausted: free space or raise the quota, then retry',
  EBADF: 'the file is not open for this operation (was it opened { readOnly: true } or closed?)',
  EFAULT: 'the request referenced memory outside the engine\'s buffer pool; this is a bug or memory corruption: report it',
  EIO: 'the device reported an I/O error: check the kernel log (dmesg) and the device\'s health',
  EROFS: 'the filesystem is mounted read-only',
  EFBIG: 'the offset or resulting size exceeds what this filesystem allows',
  EOPNOTSUPP: 'this filesystem does not support the operation (for fallocate modes, try writeZeroes on a filesystem that supports FALLOC_FL_ZERO_RANGE)',
  EBUSY: 'the worker ring was over capacity; this is a bug: report it',
  EAGAIN: 'the kernel is out of resources for asynchronous I/O; retry, or lower queueDepth',
};

const BUFFERED_EINVAL = 'the kernel refused this request for this file (it is not O_DIRECT, so alignment is not the cause: some special files, e.g. under /proc or /sys, do not support positioned or asynchronous I/O); use node:fs for such files, or backend: \'sync\'';

/** A RingfenceError for a request that the kernel (or the native addon) failed with -errno. */
export function errnoError(errno: number, op: string, path: string | undefined, offset?: bigint | number, length?: bigint | number, direct = true): RingfenceError {
  const code = errnoName(errno);
  const where = `${op}${path ? ` on ${path}` : ''}${offset !== undefined ? ` at offset ${offset}` : ''}${length !== undefined ? ` length ${length}` : ''}`;
  // EINVAL on a file that is not O_DIRECT has nothing to do with alignment.
  const advice = code === 'EINVAL' && !direct ? BUFFERED_EINVAL : ADVICE[code];
  return new RingfenceError(`${code}: ${where} failed${advice ? `: ${advice}` : ''}`, {
    code, errno: -Math.abs(errno), op, path, offset, length,
  });
}

export function closedError(what: 'engine' | 'file', op: string, path?: string): RingfenceError {
  return new RingfenceError(
    what === 'engine'
      ? `${op}: the engine is closed; start a new one with Engine.start()`
      : `${op}: the file${path ? ` ${path}` : ''} is closed; open it again with engine.open()`,
    { code: 'ERR_RINGFENCE_CLOSED', op, path },
  );
}

/** A read whose destination buffer was detached while it was in flight: the data cannot be delivered. */
export function detachedReadError(path: string | undefined, cause: unknown): RingfenceError {
  return new RingfenceError('read: the destination buffer was detached (its ArrayBuffer transferred) while the read was in flight, so the data could not be delivered; keep the buffer untouched until the promise settles',
    { code: 'ERR_RINGFENCE_BUFFER_DETACHED', op: 'read', path, cause });
}
