// File handles: argument validation at the API boundary, bouncing through the pool where
// the caller's memory cannot be used directly, and the per-file workaround decision.
import { closeSync, constants as fsc, fstatSync, openSync, readFileSync, statSync, type Stats } from 'node:fs';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, IOV_MAX, Op, OpFlag } from './protocol.js';
import { settleBatchOp, type BatchState } from './core/requests.js';
import { join64 } from './core/int64.js';
import type { BufferPool } from './pool.js';
import type { ResolvedOptions } from './options.js';
import type { NativeAddon } from './types.js';
import { RingfenceError, closedError, detachedReadError } from './errors.js';
import {
  invalidArg, rangeError, validateBoolean, validateBuffer, validateKnownKeys, validateLength, validateObject,
  validateOffset, validateOneOf, validatePath,
} from './validators.js';
import { tooLarge, type PoolAllocation, type PoolBuffers, type PoolWaiter } from './buffers.js';
import { decideFromProbe, decideWorkaround, getProbeResolver, statfsName, type WorkaroundDecision } from './policy.js';
import type { ControlMessage, WorkaroundPolicy } from './types.js';
import { FSTAT_WORDS, FS_EMULATED, FS_FULL, FS_SERIALISING, FS_TRACKED, FS_WAITS, FS_WAIT_MAX_NS, FS_WAIT_NS, MAX_WORKERS, fileStatsBytes } from './shm.js';

export interface OpenOptions {
  /** Create the file if it does not exist (mode 0o644). Default false. */
  create?: boolean;
  /** Truncate to 0 on open. Default false. */
  truncate?: boolean;
  /** Open read-only: writes reject with EBADF. Default false. */
  readOnly?: boolean;
  /** O_DIRECT. Default true. Offsets and lengths must then be multiples of info().alignment. */
  direct?: boolean;
  /** Per-file override of the engine's xfsWorkaround policy. */
  xfsWorkaround?: WorkaroundPolicy;
}

const OPEN_KEYS = ['create', 'truncate', 'readOnly', 'direct', 'xfsWorkaround'] as const;

/** One operation in a file.submit() batch. */
export type BatchOp =
  | { op: 'read'; buffer: Uint8Array; offset: number | bigint }
  | { op: 'write'; buffer: Uint8Array; offset: number | bigint }
  | { op: 'writeZeroes'; offset: number | bigint; length: number | bigint }
  | { op: 'flush' };

export interface FileInfo {
  path: string;
  fd: number;
  direct: boolean;
  readOnly: boolean;
  /** Required offset/length alignment for O_DIRECT (1 when not direct). */
  alignment: number;
  /** Required buffer address alignment for O_DIRECT; other buffers are bounced. */
  memoryAlignment: number;
  alignmentSource: string;
  dev: number;
  ino: number;
  tracked: boolean;
  xfsWorkaround: WorkaroundDecision;
}

// Offsets are split into two int32 words without allocating: splitOffset() returns the low
// word and leaves the high word here.
let offHi = 0;
const TWO32 = 4294967296;

function splitOffset(value: unknown, name: string): number {
  if (typeof value === 'number' && value >= 0 && value <= Number.MAX_SAFE_INTEGER && Number.isInteger(value)) {
    offHi = Math.floor(value / TWO32);
    return (value - offHi * TWO32) | 0;
  }
  const b = validateOffset(value, name); // throws with the right message
  offHi = Number(b >> 32n);
  return Number(b & 0xffffffffn) | 0;
}


/** What ringfence can do I/O on: regular files and block devices. Anything else is refused at open(). */
function unsupportedKind(st: Stats): string | null {
  if (st.isFile() || st.isBlockDevice()) return null;
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isDirectory()) return 'a directory';
  return 'not a regular file or block device';
}

function unsupportedError(path: string, kind: string): RingfenceError {
  return new RingfenceError(`cannot open ${path}: it is ${kind}; ringfence does positioned I/O on regular files and block devices only (a read from a pipe, socket or terminal could block an I/O thread forever): use node:fs streams for it`,
    { code: 'ERR_RINGFENCE_UNSUPPORTED_FILE', op: 'open', path });
}

/**
 * What a File needs from its engine (src/engine.ts Engine implements it): File depends on this
 * narrow interface, not on the engine module.
 */
export interface FileHost {
  readonly options: ResolvedOptions;
  readonly addon: NativeAddon;
  readonly pool: BufferPool;
  readonly buffers: PoolBuffers;
  readonly identities: Map<string, IdentityRecord>;
  readonly kernelRelease: string;
  /** This thread owns the kernel I/O context (a caller's own buffer may go to the kernel). */
  readonly inline: boolean;
  readonly fdsPinned: boolean;
  submit(file: File, op: number, offLo: number, offHi: number, len: number, buf: number, aux: number,
    done: ((res: number) => number | void) | null, resolve: ((n: number) => void) | null, reject: ((e: unknown) => void) | null,
    batch: BatchState | null, batchIndex: number, view?: Uint8Array | null, rec?: PoolAllocation | null, bounce?: number, reply?: number): number;
  allocBounce(size: number, op: string): number;
  releasePool(off: number): void;
  waitForPool(w: PoolWaiter): void;
  allocFileId(): number;
  releaseFileId(id: number): void;
  rememberFile(id: number, make: ((seq: number) => ControlMessage) | null): void;
  broadcast(make: (seq: number) => ControlMessage): Promise<void>;
  forgetFile(file: File, id: number): void;
  assertOpen(op: string): void;
}

export async function openFile(engine: FileHost, pathArg: string | Buffer | URL, options?: OpenOptions): Promise<File> {
  const path = validatePath(pathArg, 'path');
  const o = options === undefined ? {} : validateObject(options, 'options');
  validateKnownKeys(o, 'options', OPEN_KEYS);
  const create = o.create === undefined ? false : validateBoolean(o.create, 'options.create');
  const truncate = o.truncate === undefined ? false : validateBoolean(o.truncate, 'options.truncate');
  const readOnly = o.readOnly === undefined ? false : validateBoolean(o.readOnly, 'options.readOnly');
  const direct = o.direct === undefined ? true : validateBoolean(o.direct, 'options.direct');
  const policy = o.xfsWorkaround === undefined ? engine.options.xfsWorkaround
    : validateOneOf(o.xfsWorkaround, 'options.xfsWorkaround', ['auto', 'always', 'never', 'probe'] as const);
  if (readOnly && (create || truncate)) throw invalidArg('options', 'cannot combine readOnly with create or truncate', o);

  let flags = readOnly ? fsc.O_RDONLY : fsc.O_RDWR;
  if (create) flags |= fsc.O_CREAT;
  if (truncate) flags |= fsc.O_TRUNC;
  if (direct) flags |= fsc.O_DIRECT;
  // Checked before open(2) too: opening a FIFO read-only blocks until a writer appears.
  let pre: Stats | undefined;
  try { pre = statSync(path); } catch { /* open(2) reports it */ }
  const preKind = pre === undefined ? null : unsupportedKind(pre);
  if (preKind !== null && !pre!.isDirectory()) throw unsupportedError(path, preKind);
  let fd: number;
  try {
    fd = openSync(path, flags, 0o644);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = e.code === 'EINVAL' && direct
      ? `this filesystem does not support O_DIRECT (tmpfs does not, for one): open it with { direct: false } or use a file on XFS, ext4 or btrfs`
      : e.code === 'ENOENT' ? 'the file does not exist: pass { create: true } to create it'
      : e.code === 'EACCES' || e.code === 'EPERM' ? 'permission denied: check the file\'s mode and owner, or open it { readOnly: true }'
      : e.code === 'EISDIR' ? 'the path is a directory: give a file path'
      : e.code === 'EMFILE' ? 'the process is out of file descriptors: close files, or raise the limit (ulimit -n, RLIMIT_NOFILE)'
      : e.code === 'ENFILE' ? 'the system is out of file descriptors (fs.file-max): close files or raise the system limit'
      : e.code === 'ELOOP' ? 'too many symbolic links, or a symlink where none is allowed: resolve the path'
      : e.code === 'ENAMETOOLONG' ? 'the path is too long: shorten it'
      : `open(2) failed with ${e.code}: check the path and its filesystem`;
    throw new RingfenceError(`${e.code}: cannot open ${path}: ${hint}`, { code: e.code ?? 'EIO', errno: e.errno, op: 'open', path, cause: err });
  }
  let ident: IdentityRecord | undefined, id = -1, counted = false;
  try {
    const st = fstatSync(fd);
    const kind = unsupportedKind(st);
    if (kind !== null) throw unsupportedError(path, kind);
    let alignment = 1, memoryAlignment = 1, alignmentSource = 'buffered I/O: no alignment needed';
    if (direct) {
      const dio = engine.addon.dioAlign(fd);
      if (dio !== null) {
        alignment = dio.offset; memoryAlignment = dio.mem; alignmentSource = 'statx STATX_DIOALIGN';
      } else {
        alignment = memoryAlignment = logicalBlockSize(st.dev, st.blksize);
        alignmentSource = 'logical block size of the device (statx has no STATX_DIOALIGN here)';
      }
    }
    const { magic, resolution } = statfsName(path);
    let decision = decideWorkaround(policy, magic, engine.kernelRelease, engine.options.emulate, resolution);
    if (policy === 'probe' && !engine.options.emulate) {
      // Injected (src/probe/register.ts): the probe starts an engine of its own for its race check.
      const resolveProbe = getProbeResolver();
      if (resolveProbe === null) {
        throw new RingfenceError(`xfsWorkaround 'probe' for ${path} needs the probe, which this program did not load: import ringfence from its package entry ('ringfence', or dist/src/index.js), not from its internal files, or pick 'auto', 'always' or 'never'`,
          { code: 'ERR_RINGFENCE_INTERNAL', op: 'open', path });
      }
      decision = decideFromProbe(magic, engine.kernelRelease, false, await resolveProbe(path, engine.kernelRelease));
    }
    const key = `${st.dev}:${st.ino}`;
    const big = fstatSync(fd, { bigint: true });
    ident = engine.identities.get(key);
    if (ident !== undefined && ident.direct !== direct) {
      // The table orders requests by byte range, but a buffered write dirties whole pages
      // that an O_DIRECT request on a neighbouring range then has to invalidate: the kernel
      // can fail that ("Page cache invalidation failure on direct I/O") and bytes are lost.
      throw new RingfenceError(`cannot open ${path} ${direct ? 'with O_DIRECT' : 'buffered ({ direct: false })'}: this engine already has it open ${ident.direct ? 'with O_DIRECT' : 'buffered'} (same device and inode), and mixing the two on one file can lose bytes; open it { direct: ${ident.direct} } like the other handle, or close that handle first`,
        { code: 'ERR_RINGFENCE_MIXED_IO_MODES', op: 'open', path });
    }
    if (ident === undefined) {
      ident = {
        tracked: engine.options.trackRequests,
        dev: big.dev, ino: big.ino,
        stats: new SharedArrayBuffer(fileStatsBytes()),
        refs: 0,
        direct,
      };
      engine.identities.set(key, ident);
    }
    ident.refs++;
    counted = true;
    id = engine.allocFileId();
    const file = new File(engine, id, fd, path, key, {
      path, fd, direct, readOnly, alignment, memoryAlignment, alignmentSource, dev: st.dev, ino: st.ino,
      tracked: ident.tracked, xfsWorkaround: decision,
    }, new Float64Array(ident.stats));
    const announce = (seq: number): ControlMessage => ({
      type: 'open', seq, fileId: id, fd, path, dev: ident!.dev, ino: ident!.ino, tracked: ident!.tracked,
      tableCapacity: engine.options.tableCapacity, direct, workaround: decision.enabled, emulate: engine.options.emulate, align: Math.max(alignment, 512), stats: ident!.stats,
    });
    engine.rememberFile(id, announce);
    try {
      await engine.broadcast(announce);
    } catch (err) {
      // A context could not join the file's process-wide table (native/registry.h).
      const e = err as Error & { code?: string };
      throw new RingfenceError(`cannot open ${path}: ${e.message}`, { code: e.code ?? 'ERR_RINGFENCE_INTERNAL', op: 'open', path, cause: err });
    }
    // Another engine in this process has the file open, and this one wants the XFS workaround:
    // a zero-write of that engine may be in flight, admitted as non-serialising before this
    // engine's join put the workaround in force. Wait until every request older than now has
    // finished, whoever made it, before this engine's first write can go past EOF.
    // (Needed only if some participant does not want the workaround: every other one's
    // zero-writes past EOF already serialise.)
    const shared = ident.tracked && decision.enabled ? engine.addon.tableStats(ident.dev, ident.ino) : null;
    if (shared !== null && shared.participants > shared.workaroundUsers) await file.barrier();
    return file;
  } catch (err) {
    // Undo whatever was set up: the fd, the identity's reference and the file id.
    if (id >= 0) {
      engine.rememberFile(id, null);
      await engine.broadcast((seq) => ({ type: 'close', seq, fileId: id })).catch(() => {});
      engine.releaseFileId(id);
    }
    if (counted && --ident!.refs === 0) {
      for (const [k, v] of engine.identities) if (v === ident) engine.identities.delete(k);
    }
    closeSync(fd);
    throw err;
  }
}

/**
 * Per file identity (device, inode) in one engine: its statistics. Its tracked-request table is
 * process-wide (native/registry.h): each I/O context joins it when the file is announced.
 */
export interface IdentityRecord {
  tracked: boolean;
  dev: bigint;
  ino: bigint;
  stats: SharedArrayBuffer;
  refs: number;
  /** Whether its handles are O_DIRECT: one engine never mixes the two on one identity. */
  direct: boolean;
}

/** Logical block size of the device behind st_dev, from sysfs; 512 when unknown. */
function logicalBlockSize(dev: number, fallback: number): number {
  const major = Math.floor(dev / 256) & 0xfff, minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  for (const p of [`/sys/dev/block/${major}:${minor}/queue/logical_block_size`, `/sys/dev/block/${major}:${minor}/../queue/logical_block_size`]) {
    try { return Number(readFileSync(p, 'utf8').trim()) || 512; } catch { /* try next */ }
  }
  return fallback >= 512 && fallback <= 4096 ? 512 : 512;
}

export class File {
  /** @internal */ readonly id: number;
  readonly path: string;
  private readonly engine: FileHost;
  private readonly fd: number;
  private readonly key: string;
  private readonly meta: FileInfo;
  private readonly fstats: Float64Array;
  private readonly align: number;
  private readonly memAlign: number;
  private closed = false;
  /**
   * Requests of this file from the moment the call accepted them until they settle, waiting
   * for pool memory included (Node's FileHandle kRef/kUnref): close() waits for every one,
   * and the file id is not reused before they have all settled.
   */
  private refs = 0;
  private drained: (() => void) | null = null;
  private closing: Promise<void> | null = null;

  /** @internal */
  constructor(engine: FileHost, id: number, fd: number, path: string, key: string, meta: FileInfo, stats: Float64Array) {
    this.engine = engine; this.id = id; this.fd = fd; this.path = path; this.key = key; this.meta = meta; this.fstats = stats;
    this.align = meta.alignment; this.memAlign = meta.memoryAlignment;
  }

  /** Reads into `buf` at `offset`; resolves to the bytes read (fewer at EOF). */
  read(buf: Uint8Array, offset: number | bigint): Promise<number> {
    return new Promise((resolve, reject) => {
      const lo = this.checkRw(Op.READ, buf, offset, 'read', 'buf', 'offset'), hi = offHi;
      this.issueRw(Op.READ, buf, lo, hi, resolve, reject, null, 0);
    });
  }

  /** Writes `buf` at `offset`; resolves to the bytes written. */
  write(buf: Uint8Array, offset: number | bigint): Promise<number> {
    return new Promise((resolve, reject) => {
      const lo = this.checkRw(Op.WRITE, buf, offset, 'write', 'buf', 'offset'), hi = offHi;
      this.issueRw(Op.WRITE, buf, lo, hi, resolve, reject, null, 0);
    });
  }

  /**
   * @internal For src/serve/transmission.ts: write(), and once it has completed whole the
   * engine's context sends the reply record of `handle` (Engine.replyOpen) on its socket at
   * once, before any JavaScript runs (native/reply.h). Only a write that goes to the kernel as
   * it is (pool memory, aligned) carries the reply; any other runs as write() does and leaves
   * the record armed, for the caller to see and reply itself.
   */
  writeReplying(buf: Uint8Array, offset: number | bigint, handle: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const lo = this.checkRw(Op.WRITE, buf, offset, 'write', 'buf', 'offset'), hi = offHi;
      this.issueRw(Op.WRITE, buf, lo, hi, resolve, reject, null, 0, handle + 1);
    });
  }

  /**
   * @internal For src/serve/transmission.ts: read(), and once it has completed whole (all of
   * `buf`) the engine's context sends the reply record of `handle` and then `buf`'s bytes on its
   * socket at once, before any JavaScript runs (native/reply.h, R_DATA). As for writeReplying(),
   * only a read the kernel does into `buf` itself (pool memory or caller memory, aligned)
   * carries the reply; a padded or bounced one runs as read() does and leaves the record armed.
   */
  readReplying(buf: Uint8Array, offset: number | bigint, handle: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const lo = this.checkRw(Op.READ, buf, offset, 'read', 'buf', 'offset'), hi = offHi;
      this.issueRw(Op.READ, buf, lo, hi, resolve, reject, null, 0, handle + 1);
    });
  }

  // ---- Validation: every check a request needs, in one place per kind, run before anything
  // is queued (by the single calls and by submit() for every op of a batch). The issue*
  // functions after them do not validate again and do not throw for bad input.

  /**
   * Validates a read or write: buffer, offset, offset + length <= 2^63-1 exactly, that the
   * file allows it, and that any bounce or padding block it will need fits in the pool.
   * Returns the offset's low word and leaves the high word in `offHi`.
   */
  private checkRw(op: Op.READ | Op.WRITE, buf: unknown, offset: unknown, name: string, bufName: string, offName: string): number {
    this.check(name, op === Op.WRITE);
    const rec = buf instanceof Uint8Array ? this.engine.buffers.lookup(buf) : undefined;
    if (rec !== undefined && rec.freed) throw freedError(name, this.path);
    if (!(buf instanceof Uint8Array) || buf.byteLength === 0) validateBuffer(buf, bufName);
    const b = buf as Uint8Array;
    const lo = splitOffset(offset, offName), hi = offHi;
    const len = b.byteLength;
    if (len > 0x7fffffff) throw rangeError(`${bufName}.byteLength`, '<= 2^31-1 (split larger requests)', len);
    if (hi === 0x7fffffff && (lo >>> 0) + len > 0xffffffff) throw rangeError(`${offName} + length`, '<= 2^63-1', join64(hi, lo) + BigInt(len));
    const align = this.align;
    if (align > 1 && ((lo >>> 0) % align !== 0 || len % align !== 0)) {
      const off = hi * TWO32 + (lo >>> 0);
      if (off + len + 2 * align > Number.MAX_SAFE_INTEGER) {
        throw new RingfenceError(`${name} on ${this.path}: offset ${join64(hi, lo)} and length ${len} are not multiples of ${align}, and padding them is supported only below 2^53; align the request for O_DIRECT, or open the file with { direct: false }`,
          { code: 'ERR_RINGFENCE_UNALIGNED', op: name, path: this.path, offset: join64(hi, lo), length: len });
      }
      if (op === Op.WRITE && !this.meta.tracked) {
        throw new RingfenceError(`write on ${this.path}: offset ${off} and length ${len} are not multiples of ${align}, and padding them needs request tracking (the engine was started with trackRequests: false); align them or open with { direct: false }`,
          { code: 'ERR_RINGFENCE_UNALIGNED', op: name, path: this.path, offset: off, length: len });
      }
      const span = padSpan(off, len, align);
      this.checkFits(op === Op.WRITE ? span + 2 * align : span, name);
    } else if ((rec === undefined || (rec.off + b.byteOffset) % this.memAlign !== 0) && len > this.engine.pool.maxAlloc && !this.extOk(b, op)) {
      this.checkFits(len, name);
    }
    offHi = hi;
    return lo;
  }

  /**
   * The kernel may use `b` itself, with no bounce copy (OpFlag.EXT): inline mode only (the
   * memory is this thread's; in worker mode only pool memory can be named across threads), for
   * O_DIRECT only when its address meets the file's memory alignment (a buffered file has none),
   * and for a read only when its memory cannot be detached. The engine keeps the view referenced,
   * but a transfer (postMessage, structuredClone, ArrayBuffer.prototype.transfer) detaches an
   * ArrayBuffer and hands its memory to another owner, which may free it while the kernel still
   * writes into it; a SharedArrayBuffer cannot be detached. A write only reads its buffer: a
   * transfer in flight can change what is written (like any change to a buffer in flight), not
   * corrupt memory, and one before it starts fails the write with ERR_RINGFENCE_BUFFER_DETACHED.
   */
  private extOk(b: Uint8Array, op: number): boolean {
    if (!this.engine.inline || (op === Op.READ && !(b.buffer instanceof SharedArrayBuffer))) return false;
    return this.memAlign <= 1 || this.engine.addon.addressMod(b, this.memAlign) === 0;
  }

  private checkFits(bytes: number, name: string): void {
    const max = this.engine.pool.maxAlloc;
    if (bytes > max) throw tooLarge(name, bytes, max);
  }

  /** Validates readv/writev; returns the total length (offset words as for checkRw). */
  private checkVec(op: Op.READV | Op.WRITEV, bufs: unknown, offset: unknown, name: string): number {
    this.check(name, op === Op.WRITEV);
    if (!Array.isArray(bufs) || bufs.length === 0 || bufs.length > IOV_MAX) {
      throw invalidArg('bufs', `must be a non-empty array of at most ${IOV_MAX} Uint8Arrays`, bufs);
    }
    let total = 0, bounceBytes = 0;
    for (let i = 0; i < bufs.length; i++) {
      const rec = bufs[i] instanceof Uint8Array ? this.engine.buffers.lookup(bufs[i]) : undefined;
      if (rec !== undefined && rec.freed) throw freedError(name, this.path);
      const b = validateBuffer(bufs[i], `bufs[${i}]`);
      if (!this.zeroCopy(b)) bounceBytes += roundUp(b.byteLength, 512);
      total += b.byteLength;
    }
    const lo = splitOffset(offset, 'offset'), hi = offHi;
    if (total > 0x7fffffff) throw rangeError('total length', '<= 2^31-1', total);
    if (hi === 0x7fffffff && (lo >>> 0) + total > 0xffffffff) throw rangeError('offset + length', '<= 2^63-1', join64(hi, lo) + BigInt(total));
    if (this.align > 1 && ((lo >>> 0) % this.align !== 0 || (bufs as Uint8Array[]).some((b) => b.byteLength % this.align !== 0))) {
      throw new RingfenceError(`${name} on ${this.path}: the offset and every buffer length must be multiples of ${this.align} for O_DIRECT; align them or open with { direct: false }`,
        { code: 'ERR_RINGFENCE_UNALIGNED', op: name, path: this.path, offset: join64(hi, lo), length: total });
    }
    if (bounceBytes > 0) this.checkFits(bounceBytes, name);
    offHi = hi;
    return lo;
  }

  /** Validates a fallocate; returns [offset, length] as bigints. */
  private checkFallocate(offset: unknown, length: unknown, mode: unknown, name: string, prefix: string): [bigint, bigint] {
    this.check(name, true);
    const off = validateOffset(offset, `${prefix}offset`);
    const len = validateLength(length, `${prefix}length`, off);
    if (!FALLOC_MODES.includes(mode as number)) throw invalidArg(`${prefix}mode`, `must be one of ${FALLOC_MODES.join(', ')} (FALLOC_FL_* combinations)`, mode);
    return [off, len];
  }

  /**
   * One op of a submit() batch: the same checks as the call it stands for. Each property is
   * read once, and the batch is issued from the returned snapshot, never from `o` again (a
   * getter could answer differently the second time).
   */
  private checkBatchOp(o: unknown, i: number): BatchSnap {
    if (o === null || typeof o !== 'object') throw invalidArg(`ops[${i}]`, 'must be an operation object', o);
    const op = o as Record<string, unknown>;
    const kind = op.op;
    switch (kind) {
      case 'read': case 'write': {
        const code = kind === 'read' ? Op.READ : Op.WRITE;
        const buffer = op.buffer, offset = op.offset;
        const lo = this.checkRw(code, buffer, offset, 'submit', `ops[${i}].buffer`, `ops[${i}].offset`);
        return { op: code, buffer: buffer as Uint8Array, lo, hi: offHi, off: 0n, len: 0n };
      }
      case 'writeZeroes': {
        const [off, len] = this.checkFallocate(op.offset, op.length, FALLOC_FL_ZERO_RANGE, 'submit', `ops[${i}].`);
        return { op: Op.FALLOCATE, buffer: null, lo: 0, hi: 0, off, len };
      }
      case 'flush':
        return { op: Op.FSYNC, buffer: null, lo: 0, hi: 0, off: 0n, len: 0n };
      default:
        throw invalidArg(`ops[${i}].op`, "must be one of 'read', 'write', 'writeZeroes', 'flush'", kind);
    }
  }

  // ---- Issue: validated requests go to the engine, or wait for pool memory.

  private issueRw(op: Op.READ | Op.WRITE, buf: Uint8Array, lo: number, hi: number, resolve: ((n: number) => void) | null,
    reject: (e: unknown) => void, batch: BatchState | null, index: number, reply = 0): void {
    const engine = this.engine, len = buf.byteLength;
    this.refs++;
    if (this.align > 1 && ((lo >>> 0) % this.align !== 0 || len % this.align !== 0)) {
      this.issuePadded(op, buf, lo, hi, len, resolve, reject, batch, index);
      return;
    }
    const rec = engine.buffers.lookup(buf);
    if (rec !== undefined) {
      const poolOff = rec.off + buf.byteOffset;
      if (poolOff % this.memAlign === 0) {
        // Zero-copy: the kernel reads or writes the caller's pool buffer directly; the engine
        // keeps the buffer referenced and its block reserved until the request settles.
        engine.submit(this, op, lo, hi, len, poolOff, 0, null, resolve, reject, batch, index, buf, rec, -1, reply);
        return;
      }
    }
    if (this.extOk(buf, op)) {
      // Inline mode, and the caller's memory meets the file's alignment: the kernel uses it
      // directly (OpFlag.EXT); the engine keeps `buf` referenced until the request settles.
      engine.submit(this, op | OpFlag.EXT, lo, hi, len, 0, 0, null, resolve, reject, batch, index, buf, null, -1, reply);
      return;
    }
    // Bounced through a pool block. The common case, a block free now, allocates nothing but
    // the promise: the block and the caller's buffer ride in the request (src/core/requests.ts
    // copies a read back and returns the block when it settles). Only a request that has to
    // wait for pool memory gets a closure to retry with. Like node:fs, the caller's buffer must
    // stay untouched until the promise settles, so waiting needs no snapshot.
    let started: boolean;
    try { started = this.bounceRw(op, buf, lo, hi, len, resolve, reject, batch, index); } catch (err) { this.failOne(err, reject, batch, index); return; }
    if (!started) {
      this.engine.waitForPool({
        owner: this, retry: () => this.bounceRw(op, buf, lo, hi, len, resolve, reject, batch, index),
        fail: (err) => this.failOne(err, reject, batch, index),
      });
    }
  }

  /** Issues a bounced read or write if a pool block is free now (false: none is). Throws if a write's source was detached. */
  private bounceRw(op: Op.READ | Op.WRITE, buf: Uint8Array, lo: number, hi: number, len: number, resolve: ((n: number) => void) | null,
    reject: (e: unknown) => void, batch: BatchState | null, index: number): boolean {
    const engine = this.engine;
    const bounce = engine.allocBounce(len, op === Op.WRITE ? 'write' : 'read');
    if (bounce < 0) return false;
    if (op === Op.WRITE) {
      try {
        engine.pool.bytes.set(buf, bounce);
      } catch (err) {
        engine.releasePool(bounce);
        throw detachedError('write', this.path, err);
      }
    }
    engine.submit(this, op, lo, hi, len, bounce, 0, null, resolve, reject, batch, index, op === Op.READ ? buf : null, null, bounce);
    return true;
  }

  /** A request counted in refs fails before it started. */
  private failOne(err: unknown, reject: (e: unknown) => void, batch: BatchState | null, index: number): void {
    this.settled();
    if (batch !== null) settleBatchOp(batch, index, 0, err);
    else reject(err);
  }

  /**
   * An O_DIRECT request whose offset or length is not a multiple of the alignment. A read
   * reads the aligned superset into a bounce block and copies the caller's part out. A write
   * is padded by read-modify-write on the worker, under a serialising table entry (QEMU's
   * padding RMW), so concurrent unaligned writes into one block never lose bytes.
   */
  private issuePadded(op: Op.READ | Op.WRITE, buf: Uint8Array, lo: number, hi: number, len: number,
    resolve: ((n: number) => void) | null, reject: (e: unknown) => void, batch: BatchState | null, index: number): void {
    const engine = this.engine, align = this.align;
    const off = hi * TWO32 + (lo >>> 0);
    const head = off % align, a0 = off - head, span = padSpan(off, len, align);
    const a0lo = (a0 % TWO32) | 0, a0hi = Math.floor(a0 / TWO32);
    const name = op === Op.WRITE ? 'write' : 'read';
    const issue = (): boolean => {
      const bounce = engine.allocBounce(op === Op.WRITE ? span + 2 * align : span, name);
      if (bounce < 0) return false;
      if (op === Op.READ) {
        engine.submit(this, Op.READ, a0lo, a0hi, span, bounce, 0, (res) => {
          const n = res < 0 ? res : Math.max(0, Math.min(len, res - head));
          try {
            if (n > 0) copyOut(buf, engine.pool.bytes.subarray(bounce + head, bounce + head + n), 0);
          } finally { engine.releasePool(bounce); }
          return n;
        }, resolve, reject, batch, index);
      } else {
        try {
          engine.pool.bytes.set(buf, bounce + head);
        } catch (err) {
          engine.releasePool(bounce);
          throw detachedError(name, this.path, err);
        }
        engine.submit(this, Op.WRITE | OpFlag.RMW, lo, hi, len, bounce, align, () => { engine.releasePool(bounce); }, resolve, reject, batch, index);
      }
      return true;
    };
    this.start(issue, reject, batch, index);
  }

  /**
   * Runs `issue` for a request already counted in refs; if the pool has no memory for it now,
   * it waits (in FIFO order; close() rejects it). An `issue` that throws fails only its request.
   */
  private start(issue: () => boolean, reject: (e: unknown) => void, batch: BatchState | null, index: number): void {
    const fail = (err: unknown): void => {
      this.settled();
      if (batch !== null) settleBatchOp(batch, index, 0, err);
      else reject(err);
    };
    let started: boolean;
    try { started = issue(); } catch (err) { fail(err); return; }
    if (!started) this.engine.waitForPool({ owner: this, retry: issue, fail });
  }

  /** Scatter read into `bufs` starting at `offset`; resolves to total bytes read. */
  readv(bufs: Uint8Array[], offset: number | bigint): Promise<number> { return this.vec(Op.READV, bufs, offset); }
  /** Gather write of `bufs` starting at `offset`; resolves to total bytes written. */
  writev(bufs: Uint8Array[], offset: number | bigint): Promise<number> { return this.vec(Op.WRITEV, bufs, offset); }

  private vec(op: Op.READV | Op.WRITEV, bufs: Uint8Array[], offset: number | bigint): Promise<number> {
    return new Promise((resolve, reject) => {
      const name = op === Op.WRITEV ? 'writev' : 'readv';
      const lo = this.checkVec(op, bufs, offset, name), hi = offHi;
      const lengths = bufs.map((b) => b.byteLength);
      const total = lengths.reduce((a, n) => a + n, 0);
      const engine = this.engine;
      // Zero-copy buffers stay reserved until the request settles (the closure below keeps
      // the views referenced).
      const recs: (PoolAllocation | undefined)[] = bufs.map((b) => (this.zeroCopy(b) ? engine.buffers.lookup(b) : undefined));
      this.refs++;
      const issue = (): boolean => {
        // One block holds the iovec table; buffers outside the pool (or misaligned) are
        // bounced into one more block, laid out back to back.
        // A zero-copy buffer freed while this request waited for memory: its pointer is stale.
        for (const rec of recs) if (rec !== undefined && rec.freed) throw freedError(name, this.path);
        const table = engine.allocBounce(8 * bufs.length, name);
        if (table < 0) return false;
        let bounceBytes = 0;
        for (let i = 0; i < bufs.length; i++) if (recs[i] === undefined) bounceBytes += roundUp(lengths[i], 512);
        const bounce = bounceBytes > 0 ? engine.allocBounce(bounceBytes, name) : -1;
        if (bounceBytes > 0 && bounce < 0) { engine.releasePool(table); return false; }
        const dv = new DataView(engine.pool.sab, table, 8 * bufs.length);
        const places: number[] = [];
        let cursor = bounce;
        try {
          for (let i = 0; i < bufs.length; i++) {
            const b = bufs[i], rec = recs[i];
            let at: number;
            if (rec !== undefined) at = rec.off + b.byteOffset;
            else { at = cursor; cursor += roundUp(lengths[i], 512); if (op === Op.WRITEV) engine.pool.bytes.set(b, at); }
            places.push(at);
            dv.setUint32(i * 8, at, true);
            dv.setUint32(i * 8 + 4, lengths[i], true);
          }
        } catch (err) {
          engine.releasePool(table);
          if (bounce >= 0) engine.releasePool(bounce);
          throw detachedError(name, this.path, err);
        }
        for (const rec of recs) if (rec !== undefined) engine.buffers.hold(rec);
        engine.submit(this, op, lo, hi, total, table, bufs.length, (res) => {
          try {
            if (op === Op.READV && res > 0) {
              let left = res;
              for (let i = 0; i < bufs.length; i++) {
                const n = Math.min(left, lengths[i]);
                if (n > 0 && recs[i] === undefined) copyOut(bufs[i], engine.pool.bytes.subarray(places[i], places[i] + n), 0);
                left -= n;
              }
            }
          } finally {
            engine.releasePool(table);
            if (bounce >= 0) engine.releasePool(bounce);
            for (const rec of recs) if (rec !== undefined) engine.buffers.unhold(rec);
          }
        }, resolve, reject, null, 0);
        return true;
      };
      this.start(issue, reject, null, 0);
    });
  }

  private zeroCopy(b: Uint8Array): boolean {
    const rec = this.engine.buffers.lookup(b);
    return rec !== undefined && (rec.off + b.byteOffset) % this.memAlign === 0;
  }

  /** Writes zeroes to [offset, offset+length) (fallocate FALLOC_FL_ZERO_RANGE). Extends the file if needed. */
  writeZeroes(offset: number | bigint, length: number | bigint): Promise<number> {
    return this.fallocate(offset, length, FALLOC_FL_ZERO_RANGE);
  }

  /** fallocate(2): mode 0 (allocate), KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE[|KEEP_SIZE]. */
  fallocate(offset: number | bigint, length: number | bigint, mode = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      const [off, len] = this.checkFallocate(offset, length, mode, 'fallocate', '');
      this.issueFallocate(off, len, mode, resolve, reject, null, 0);
    });
  }

  private issueFallocate(off: bigint, len: bigint, mode: number, resolve: ((n: number) => void) | null, reject: (e: unknown) => void,
    batch: BatchState | null, index: number): void {
    this.refs++;
    this.engine.submit(this, Op.FALLOCATE, Number(off & 0xffffffffn) | 0, Number(off >> 32n), Number(len & 0xffffffffn) | 0,
      Number(len >> 32n), mode, null, resolve, reject, batch, index);
  }

  /** @internal Resolves once every request on the file older than this call has finished (OpFlag.BARRIER). */
  barrier(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.refs++;
      this.engine.submit(this, Op.NOP | OpFlag.BARRIER, 0, 0, 0, 0, 0, null, () => resolve(), reject, null, 0);
    });
  }

  /** fdatasync: durable once it resolves, for every write that completed before the call. */
  flush(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.check('flush', false);
      this.refs++;
      this.engine.submit(this, Op.FSYNC, 0, 0, 0, 0, 1, null, () => resolve(), reject, null, 0);
    });
  }

  /** ftruncate to `size` (io_uring's async ftruncate where the kernel has it). */
  truncate(size: number | bigint): Promise<void> {
    return new Promise((resolve, reject) => {
      this.check('truncate', true);
      const lo = splitOffset(size, 'size'), hi = offHi;
      this.refs++;
      this.engine.submit(this, Op.TRUNCATE, lo, hi, 0, 0, 0, null, () => resolve(), reject, null, 0);
    });
  }

  /** The file's current size in bytes. */
  async size(): Promise<bigint> {
    this.check('size', false);
    return fstatSync(this.fd, { bigint: true }).size;
  }

  /**
   * A batch in one call: the operations are queued together (one wake-up per worker) and the
   * promise resolves to their results in order. Every operation is validated first, with the
   * same checks as the call it stands for (pool fit included): if one is invalid the promise
   * rejects with that error and no operation runs. Otherwise every operation runs; if any
   * fails, the promise rejects with the first error, whose `results` property holds every
   * outcome (a number or a RingfenceError).
   */
  submit(ops: BatchOp[]): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.check('submit', false);
      if (!Array.isArray(ops)) throw invalidArg('ops', 'must be an array of operations', ops);
      if (ops.length === 0) { resolve([]); return; }
      const n = ops.length;
      const snaps: BatchSnap[] = new Array(n);
      for (let i = 0; i < n; i++) snaps[i] = this.checkBatchOp(ops[i], i);
      const batch: BatchState = { results: new Array(n), remaining: n, firstError: null, resolve, reject };
      for (let i = 0; i < n; i++) {
        const o = snaps[i];
        if (o.op === Op.READ || o.op === Op.WRITE) this.issueRw(o.op, o.buffer!, o.lo, o.hi, null, reject, batch, i);
        else if (o.op === Op.FALLOCATE) this.issueFallocate(o.off, o.len, FALLOC_FL_ZERO_RANGE, null, reject, batch, i);
        else {
          this.refs++;
          this.engine.submit(this, Op.FSYNC, 0, 0, 0, 0, 1, null, null, reject, batch, i);
        }
      }
    });
  }

  /** @internal A request the engine makes on this file's behalf (submitRaw) counts like any other. */
  acquire(): void { this.refs++; }

  /** @internal The engine settled one of this file's requests (or one never started). */
  settled(): void {
    if (--this.refs === 0 && this.drained !== null) this.drained();
  }

  private check(op: string, writes: boolean): void {
    if (this.closed) throw closedError('file', op, this.path);
    this.engine.assertOpen(op);
    if (writes && this.meta.readOnly) {
      throw new RingfenceError(`EBADF: ${op} on ${this.path}: the file was opened { readOnly: true }; open it again without readOnly to write`, { code: 'EBADF', errno: -9, op, path: this.path });
    }
  }

  /** @internal Opened with O_DIRECT. */
  get direct(): boolean { return this.meta.direct; }

  /** What was decided for this file and why: alignment, tracking and the XFS workaround. */
  info(): FileInfo {
    return { ...this.meta, xfsWorkaround: { ...this.meta.xfsWorkaround } };
  }

  /** Per-file table statistics, summed over workers. */
  stats(): { path: string; tracked: number; serialising: number; waits: number; waitNsTotal: number; waitNsMax: number; tableFull: number; emulatedFallocates: number; tableHighWater: number; tableParticipants: number } {
    const s = this.fstats;
    let tracked = 0, serialising = 0, waits = 0, waitNs = 0, waitMax = 0, full = 0, emulated = 0;
    for (let w = 0; w <= MAX_WORKERS; w++) {
      const b = w * FSTAT_WORDS;
      tracked += s[b + FS_TRACKED]; serialising += s[b + FS_SERIALISING]; waits += s[b + FS_WAITS]; waitNs += s[b + FS_WAIT_NS];
      waitMax = Math.max(waitMax, s[b + FS_WAIT_MAX_NS]); full += s[b + FS_FULL]; emulated += s[b + FS_EMULATED];
    }
    // The table is process-wide: its high-water mark (an upper bound: the sum of each
    // participant's own mark) and participants count every engine's.
    const ident = this.engine.identities.get(this.key);
    const t = ident?.tracked ? this.engine.addon.tableStats(ident.dev, ident.ino) : null;
    return { path: this.path, tracked, serialising, waits, waitNsTotal: waitNs, waitNsMax: waitMax, tableFull: full, emulatedFallocates: emulated, tableHighWater: t?.highWater ?? 0, tableParticipants: t?.participants ?? 0 };
  }

  /** Waits for this file's in-flight requests, then closes it. */
  close(): Promise<void> {
    // A second call while the first is still closing gets the same promise.
    if (this.closing === null) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    // Requests waiting for pool memory never started; the caller may hold that memory until
    // close() resolves, so they are rejected rather than waited for.
    this.engine.buffers.cancel(this, () => new RingfenceError(`the file ${this.path} was closed while this request waited for buffer-pool memory, so it never started; nothing was read or written`,
      { code: 'ERR_RINGFENCE_CLOSED', op: 'close', path: this.path }));
    if (this.refs > 0) await new Promise<void>((r) => { this.drained = r; });
    this.engine.rememberFile(this.id, null);
    await this.engine.broadcast((seq) => ({ type: 'close', seq, fileId: this.id }));
    // After close() gave up on requests still in the kernel, the fd stays open: a thread
    // stuck in a system call could otherwise write into whatever file reuses the number.
    if (!this.engine.fdsPinned) closeSync(this.fd);
    const ident = this.engine.identities.get(this.key);
    if (ident && --ident.refs === 0) this.engine.identities.delete(this.key);
    this.engine.forgetFile(this, this.id);
  }
}


function roundUp(n: number, a: number): number { return Math.ceil(n / a) * a; }

/** Delivers read data into the caller's buffer, which may have been detached meanwhile. */
function copyOut(dst: Uint8Array, src: Uint8Array, at: number): void {
  try {
    dst.set(src, at);
  } catch (e) {
    throw detachedReadError(undefined, e);
  }
}

/** A validated batch op (see File.checkBatchOp). */
interface BatchSnap { op: Op; buffer: Uint8Array | null; lo: number; hi: number; off: bigint; len: bigint }

/** Bytes of the aligned superset [floor(off), ceil(off + len)) of a padded request. */
function padSpan(off: number, len: number, align: number): number {
  return Math.ceil((off + len) / align) * align - (off - (off % align));
}

const FALLOC_MODES = [0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE];

function freedError(op: string, path: string): RingfenceError {
  return new RingfenceError(`${op} on ${path}: the buffer was returned to the pool with engine.free(), so its memory is no longer yours; allocate a new one with engine.alloc()`,
    { code: 'ERR_RINGFENCE_BUFFER_FREED', op, path });
}

function detachedError(op: string, path: string, cause: unknown): RingfenceError {
  return new RingfenceError(`${op} on ${path}: the source buffer was detached (its ArrayBuffer transferred, or freed) while the request waited for buffer-pool memory, so there was nothing to write; keep the buffer untouched until the promise settles`,
    { code: 'ERR_RINGFENCE_BUFFER_DETACHED', op, path, cause });
}
