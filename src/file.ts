// File handles: argument validation at the API boundary, bouncing through the pool where
// the caller's memory cannot be used directly, and the per-file workaround decision.
import { closeSync, constants as fsc, fstatSync, openSync, readFileSync } from 'node:fs';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, IOV_MAX, Op, OpFlag } from './protocol.js';
import type { BatchState, Engine } from './engine.js';
import { RingfenceError, closedError } from './errors.js';
import {
  invalidArg, rangeError, validateBoolean, validateBuffer, validateKnownKeys, validateLength, validateObject,
  validateOffset, validateOneOf, validateString,
} from './validators.js';
import { decideFromProbe, decideWorkaround, statfsName, type WorkaroundDecision } from './policy.js';
import { AtomicWords, TrackedTable } from './table.js';
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

function joinOffset(lo: number, hi: number): bigint {
  return (BigInt(hi) << 32n) | BigInt(lo >>> 0);
}

export async function openFile(engine: Engine, path: string, options?: OpenOptions): Promise<File> {
  validateString(path, 'path');
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
  let fd: number;
  try {
    fd = openSync(path, flags, 0o644);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = e.code === 'EINVAL' && direct
      ? `this filesystem does not support O_DIRECT (tmpfs does not, for one): open it with { direct: false } or use a file on XFS, ext4 or btrfs`
      : e.code === 'ENOENT' ? 'the file does not exist: pass { create: true } to create it'
      : e.code === 'EACCES' || e.code === 'EPERM' ? 'permission denied: check the file\'s mode and owner, or open it { readOnly: true }'
      : e.code === 'EISDIR' ? 'the path is a directory: give a file path' : 'see the errno';
    throw new RingfenceError(`${e.code}: cannot open ${path}: ${hint}`, { code: e.code ?? 'EIO', errno: e.errno, op: 'open', path, cause: err });
  }
  try {
    const st = fstatSync(fd);
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
    const { magic } = statfsName(path);
    let decision = decideWorkaround(policy, magic, engine.kernelRelease, engine.options.emulate);
    if (policy === 'probe' && !engine.options.emulate) {
      // Loaded on demand: the probe starts an engine of its own for its race check.
      const { resolveProbePolicy } = await import('./probe/cache.js');
      decision = decideFromProbe(magic, engine.kernelRelease, false, await resolveProbePolicy(path, engine.kernelRelease));
    }
    const key = `${st.dev}:${st.ino}`;
    let ident = engine.identities.get(key);
    if (ident === undefined) {
      ident = {
        table: engine.options.trackRequests ? TrackedTable.create(engine.options.tableCapacity) : null,
        stats: new SharedArrayBuffer(fileStatsBytes()),
        refs: 0,
      };
      engine.identities.set(key, ident);
    }
    ident.refs++;
    const id = engine.allocFileId();
    const file = new File(engine, id, fd, path, key, {
      path, fd, direct, readOnly, alignment, memoryAlignment, alignmentSource, dev: st.dev, ino: st.ino,
      tracked: ident.table !== null, xfsWorkaround: decision,
    }, new Float64Array(ident.stats));
    const announce = (seq: number): ControlMessage => ({
      type: 'open', seq, fileId: id, fd, path, table: ident!.table, tableCapacity: engine.options.tableCapacity,
      workaround: decision.enabled, emulate: engine.options.emulate, align: Math.max(alignment, 512), stats: ident!.stats,
    });
    engine.rememberFile(id, announce);
    await engine.broadcast(announce);
    return file;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
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
  private readonly engine: Engine;
  private readonly fd: number;
  private readonly key: string;
  private readonly meta: FileInfo;
  private readonly fstats: Float64Array;
  private readonly align: number;
  private readonly memAlign: number;
  private closed = false;
  private inflight = 0;
  private drained: (() => void) | null = null;

  /** @internal */
  constructor(engine: Engine, id: number, fd: number, path: string, key: string, meta: FileInfo, stats: Float64Array) {
    this.engine = engine; this.id = id; this.fd = fd; this.path = path; this.key = key; this.meta = meta; this.fstats = stats;
    this.align = meta.alignment; this.memAlign = meta.memoryAlignment;
  }

  /** Reads into `buf` at `offset`; resolves to the bytes read (fewer at EOF). */
  read(buf: Uint8Array, offset: number | bigint): Promise<number> {
    return new Promise((resolve, reject) => this.rw(Op.READ, buf, offset, resolve, reject, null, 0));
  }

  /** Writes `buf` at `offset`; resolves to the bytes written. */
  write(buf: Uint8Array, offset: number | bigint): Promise<number> {
    return new Promise((resolve, reject) => this.rw(Op.WRITE, buf, offset, resolve, reject, null, 0));
  }

  private rw(op: Op.READ | Op.WRITE, buf: Uint8Array, offset: number | bigint, resolve: ((n: number) => void) | null,
    reject: (e: unknown) => void, batch: BatchState | null, index: number): void {
    try {
      this.check(op === Op.WRITE ? 'write' : 'read', op === Op.WRITE);
      if (!(buf instanceof Uint8Array) || buf.byteLength === 0) validateBuffer(buf, 'buf');
      const lo = splitOffset(offset, 'offset'), hi = offHi;
      const len = buf.byteLength;
      if (len > 0x7fffffff) throw rangeError('buf.byteLength', '<= 2^31-1 (split larger requests)', len);
      if (hi === 0x7fffffff && (lo >>> 0) + len > 0x100000000) throw rangeError('offset + length', '<= 2^63-1', joinOffset(lo, hi) + BigInt(len));
      const engine = this.engine;
      if (this.align > 1 && ((lo >>> 0) % this.align !== 0 || len % this.align !== 0)) {
        this.padded(op, buf, lo, hi, len, resolve, reject, batch, index);
        return;
      }
      let poolOff = engine.poolOffset(buf);
      if (poolOff >= 0 && poolOff % this.memAlign === 0) {
        // Zero-copy: the kernel reads or writes the caller's pool buffer directly.
        this.enqueue(op, lo, hi, len, poolOff, 0, null, resolve, reject, batch, index);
        return;
      }
      const issue = (): boolean => {
        poolOff = engine.allocBounce(len, op === Op.WRITE ? 'write' : 'read');
        if (poolOff < 0) return false;
        const bounce = poolOff;
        if (op === Op.WRITE) engine.pool.bytes.set(buf, bounce);
        this.enqueue(op, lo, hi, len, bounce, 0, (res) => {
          try {
            if (op === Op.READ && res > 0) copyOut(buf, engine.pool.bytes.subarray(bounce, bounce + res), 0);
          } finally { engine.releasePool(bounce); }
        }, resolve, reject, batch, index);
        return true;
      };
      if (!issue()) {
        // Like node:fs, the caller's buffer must stay untouched until the promise settles,
        // so waiting for pool memory needs no snapshot.
        engine.waitForPool(issue);
      }
    } catch (err) {
      if (batch !== null) { batch.results[index] = err as RingfenceError; batch.firstError ??= err as RingfenceError; if (--batch.remaining === 0) batch.reject(batch.firstError); }
      else reject(err);
    }
  }

  /**
   * An O_DIRECT request whose offset or length is not a multiple of the alignment. A read
   * reads the aligned superset into a bounce block and copies the caller's part out. A write
   * is padded by read-modify-write on the worker, under a serialising table entry (QEMU's
   * padding RMW), so concurrent unaligned writes into one block never lose bytes.
   */
  private padded(op: Op.READ | Op.WRITE, buf: Uint8Array, lo: number, hi: number, len: number,
    resolve: ((n: number) => void) | null, reject: (e: unknown) => void, batch: BatchState | null, index: number): void {
    const engine = this.engine, align = this.align;
    const off = hi * TWO32 + (lo >>> 0);
    const head = off % align, a0 = off - head, span = Math.ceil((off + len) / align) * align - a0;
    const [a0lo, a0hi] = [(a0 % TWO32) | 0, Math.floor(a0 / TWO32)];
    const name = op === Op.WRITE ? 'write' : 'read';
    if (off + len + 2 * align > Number.MAX_SAFE_INTEGER) {
      throw new RingfenceError(`${name} on ${this.path}: offset ${joinOffset(lo, hi)} and length ${len} are not multiples of ${align}, and padding them is supported only below 2^53; align the request for O_DIRECT, or open the file with { direct: false }`,
        { code: 'ERR_RINGFENCE_UNALIGNED', op: name, path: this.path, offset: joinOffset(lo, hi), length: len });
    }
    if (op === Op.WRITE && !this.meta.tracked) {
      throw new RingfenceError(`write on ${this.path}: offset ${off} and length ${len} are not multiples of ${align}, and padding them needs request tracking (the engine was started with trackRequests: false); align them or open with { direct: false }`,
        { code: 'ERR_RINGFENCE_UNALIGNED', op: name, path: this.path, offset: off, length: len });
    }
    const issue = (): boolean => {
      const bounce = engine.allocBounce(op === Op.WRITE ? span + 2 * align : span, name);
      if (bounce < 0) return false;
      if (op === Op.READ) {
        this.enqueue(Op.READ, a0lo, a0hi, span, bounce, 0, (res) => {
          const n = res < 0 ? res : Math.max(0, Math.min(len, res - head));
          try {
            if (n > 0) copyOut(buf, engine.pool.bytes.subarray(bounce + head, bounce + head + n), 0);
          } finally { engine.releasePool(bounce); }
          return n;
        }, resolve, reject, batch, index);
      } else {
        engine.pool.bytes.set(buf, bounce + head);
        this.enqueue(Op.WRITE | OpFlag.RMW, lo, hi, len, bounce, align, () => { engine.releasePool(bounce); }, resolve, reject, batch, index);
      }
      return true;
    };
    if (!issue()) engine.waitForPool(issue);
  }

  /** Scatter read into `bufs` starting at `offset`; resolves to total bytes read. */
  readv(bufs: Uint8Array[], offset: number | bigint): Promise<number> { return this.vec(Op.READV, bufs, offset); }
  /** Gather write of `bufs` starting at `offset`; resolves to total bytes written. */
  writev(bufs: Uint8Array[], offset: number | bigint): Promise<number> { return this.vec(Op.WRITEV, bufs, offset); }

  private vec(op: Op.READV | Op.WRITEV, bufs: Uint8Array[], offset: number | bigint): Promise<number> {
    return new Promise((resolve, reject) => {
      const name = op === Op.WRITEV ? 'writev' : 'readv';
      this.check(name, op === Op.WRITEV);
      if (!Array.isArray(bufs) || bufs.length === 0 || bufs.length > IOV_MAX) {
        throw invalidArg('bufs', `must be a non-empty array of at most ${IOV_MAX} Uint8Arrays`, bufs);
      }
      let total = 0;
      bufs.forEach((b, i) => { validateBuffer(b, `bufs[${i}]`); total += b.byteLength; });
      const lengths = bufs.map((b) => b.byteLength);
      const lo = splitOffset(offset, 'offset'), hi = offHi;
      if (total > 0x7fffffff) throw rangeError('total length', '<= 2^31-1', total);
      if (hi === 0x7fffffff && (lo >>> 0) + total > 0x100000000) throw rangeError('offset + length', '<= 2^63-1', joinOffset(lo, hi) + BigInt(total));
      if (this.align > 1 && ((lo >>> 0) % this.align !== 0 || bufs.some((b) => b.byteLength % this.align !== 0))) {
        throw new RingfenceError(`${name} on ${this.path}: the offset and every buffer length must be multiples of ${this.align} for O_DIRECT; align them or open with { direct: false }`,
          { code: 'ERR_RINGFENCE_UNALIGNED', op: name, path: this.path, offset: joinOffset(lo, hi), length: total });
      }
      const engine = this.engine;
      const issue = (): boolean => {
        // One block holds the iovec table; buffers outside the pool (or misaligned) are
        // bounced into one more block, laid out back to back.
        const table = engine.allocBounce(8 * bufs.length, name);
        if (table < 0) return false;
        let bounceBytes = 0;
        for (const b of bufs) if (!this.zeroCopy(b)) bounceBytes += roundUp(b.byteLength, 512);
        const bounce = bounceBytes > 0 ? engine.allocBounce(bounceBytes, name) : -1;
        if (bounceBytes > 0 && bounce < 0) { engine.releasePool(table); return false; }
        const dv = new DataView(engine.pool.sab, table, 8 * bufs.length);
        const places: number[] = [], bounced: boolean[] = [];
        let cursor = bounce;
        bufs.forEach((b, i) => {
          let at: number;
          const copy = !this.zeroCopy(b);
          if (!copy) at = b.byteOffset;
          else { at = cursor; cursor += roundUp(b.byteLength, 512); if (op === Op.WRITEV) engine.pool.bytes.set(b, at); }
          places.push(at);
          bounced.push(copy);
          dv.setUint32(i * 8, at, true);
          dv.setUint32(i * 8 + 4, b.byteLength, true);
        });
        this.enqueue(op, lo, hi, total, table, bufs.length, (res) => {
          try {
            if (op === Op.READV && res > 0) {
              let left = res;
              bufs.forEach((b, i) => {
                const n = Math.min(left, lengths[i]);
                if (n > 0 && bounced[i]) copyOut(b, engine.pool.bytes.subarray(places[i], places[i] + n), 0);
                left -= n;
              });
            }
          } finally {
            engine.releasePool(table);
            if (bounce >= 0) engine.releasePool(bounce);
          }
        }, resolve, reject, null, 0);
        return true;
      };
      if (!issue()) engine.waitForPool(issue);
    });
  }

  private zeroCopy(b: Uint8Array): boolean {
    return b.buffer === this.engine.pool.sab && b.byteOffset % this.memAlign === 0;
  }

  /** Writes zeroes to [offset, offset+length) (fallocate FALLOC_FL_ZERO_RANGE). Extends the file if needed. */
  writeZeroes(offset: number | bigint, length: number | bigint): Promise<number> {
    return this.fallocate(offset, length, FALLOC_FL_ZERO_RANGE);
  }

  /** fallocate(2): mode 0 (allocate), KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE[|KEEP_SIZE]. */
  fallocate(offset: number | bigint, length: number | bigint, mode = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      this.check('fallocate', true);
      const off = validateOffset(offset, 'offset');
      const len = validateLength(length, 'length', off);
      const allowed = [0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE];
      if (!allowed.includes(mode)) throw invalidArg('mode', `must be one of ${allowed.join(', ')} (FALLOC_FL_* combinations)`, mode);
      this.enqueue(Op.FALLOCATE, Number(off & 0xffffffffn) | 0, Number(off >> 32n), Number(len & 0xffffffffn) | 0,
        Number(len >> 32n), mode, null, (n) => resolve(n), reject, null, 0);
    });
  }

  /** fdatasync: durable once it resolves, for every write that completed before the call. */
  flush(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.check('flush', false);
      this.enqueue(Op.FSYNC, 0, 0, 0, 0, 1, null, () => resolve(), reject, null, 0);
    });
  }

  /** ftruncate to `size` (io_uring's async ftruncate where the kernel has it). */
  truncate(size: number | bigint): Promise<void> {
    return new Promise((resolve, reject) => {
      this.check('truncate', true);
      const lo = splitOffset(size, 'size'), hi = offHi;
      this.enqueue(Op.TRUNCATE, lo, hi, 0, 0, 0, null, () => resolve(), reject, null, 0);
    });
  }

  /** The file's current size in bytes. */
  async size(): Promise<bigint> {
    this.check('size', false);
    return fstatSync(this.fd, { bigint: true }).size;
  }

  /**
   * A batch in one call: the operations are queued together (one wake-up per worker) and the
   * promise resolves to their results in order. If any fails, it rejects with the first
   * error, whose `results` property holds every result (a number or a RingfenceError).
   */
  submit(ops: BatchOp[]): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.check('submit', false);
      if (!Array.isArray(ops)) throw invalidArg('ops', 'must be an array of operations', ops);
      if (ops.length === 0) { resolve([]); return; }
      // Validate every operation before queueing any: a rejected batch must not half-run.
      for (let i = 0; i < ops.length; i++) this.validateBatchOp(ops[i], i);
      const batch: BatchState = { results: new Array(ops.length), remaining: ops.length, firstError: null, resolve, reject };
      for (let i = 0; i < ops.length; i++) {
        const o = ops[i] as BatchOp;
        if (o === null || typeof o !== 'object') throw invalidArg(`ops[${i}]`, 'must be an operation object', o);
        switch (o.op) {
          case 'read': case 'write':
            this.rw(o.op === 'read' ? Op.READ : Op.WRITE, o.buffer, o.offset, null, reject, batch, i);
            break;
          case 'writeZeroes': {
            const off = validateOffset(o.offset, `ops[${i}].offset`);
            const len = validateLength(o.length, `ops[${i}].length`, off);
            this.check('submit', true);
            this.enqueue(Op.FALLOCATE, Number(off & 0xffffffffn) | 0, Number(off >> 32n), Number(len & 0xffffffffn) | 0, Number(len >> 32n), FALLOC_FL_ZERO_RANGE, null, null, reject, batch, i);
            break;
          }
          case 'flush':
            this.enqueue(Op.FSYNC, 0, 0, 0, 0, 1, null, null, reject, batch, i);
            break;
          default:
            throw invalidArg(`ops[${i}].op`, "must be one of 'read', 'write', 'writeZeroes', 'flush'", (o as { op: unknown }).op);
        }
      }
    });
  }

  private validateBatchOp(o: unknown, i: number): void {
    if (o === null || typeof o !== 'object') throw invalidArg(`ops[${i}]`, 'must be an operation object', o);
    const op = o as Record<string, unknown>;
    switch (op.op) {
      case 'read': case 'write': {
        const buf = validateBuffer(op.buffer, `ops[${i}].buffer`);
        const lo = splitOffset(op.offset, `ops[${i}].offset`), hi = offHi;
        if (buf.byteLength > 0x7fffffff) throw rangeError(`ops[${i}].buffer.byteLength`, '<= 2^31-1 (split larger requests)', buf.byteLength);
        if (hi === 0x7fffffff && (lo >>> 0) + buf.byteLength > 0x100000000) throw rangeError(`ops[${i}].offset + length`, '<= 2^63-1', op.offset);
        if (op.op === 'write') this.check('submit', true);
        break;
      }
      case 'writeZeroes': {
        const off = validateOffset(op.offset, `ops[${i}].offset`);
        validateLength(op.length, `ops[${i}].length`, off);
        this.check('submit', true);
        break;
      }
      case 'flush': break;
      default:
        throw invalidArg(`ops[${i}].op`, "must be one of 'read', 'write', 'writeZeroes', 'flush'", op.op);
    }
  }

  private enqueue(op: number, lo: number, hi: number, len: number, buf: number, aux: number, done: ((res: number) => number | void) | null,
    resolve: ((n: number) => void) | null, reject: ((e: unknown) => void) | null, batch: BatchState | null, index: number): void {
    this.inflight++;
    this.engine.submit(this, op, lo, hi, len, buf, aux, done, resolve, reject, batch, index);
  }

  /** @internal The engine settled one of this file's requests. */
  settled(): void {
    if (--this.inflight === 0 && this.drained !== null) this.drained();
  }

  private check(op: string, writes: boolean): void {
    if (this.closed) throw closedError('file', op, this.path);
    this.engine.assertOpen(op);
    if (writes && this.meta.readOnly) {
      throw new RingfenceError(`EBADF: ${op} on ${this.path}: the file was opened { readOnly: true }; open it again without readOnly to write`, { code: 'EBADF', errno: -9, op, path: this.path });
    }
  }

  /** What was decided for this file and why: alignment, tracking and the XFS workaround. */
  info(): FileInfo {
    return { ...this.meta, xfsWorkaround: { ...this.meta.xfsWorkaround } };
  }

  /** Per-file table statistics, summed over workers. */
  stats(): { path: string; tracked: number; serialising: number; waits: number; waitNsTotal: number; waitNsMax: number; tableFull: number; emulatedFallocates: number; tableHighWater: number } {
    const s = this.fstats;
    let tracked = 0, serialising = 0, waits = 0, waitNs = 0, waitMax = 0, full = 0, emulated = 0;
    for (let w = 0; w <= MAX_WORKERS; w++) {
      const b = w * FSTAT_WORDS;
      tracked += s[b + FS_TRACKED]; serialising += s[b + FS_SERIALISING]; waits += s[b + FS_WAITS]; waitNs += s[b + FS_WAIT_NS];
      waitMax = Math.max(waitMax, s[b + FS_WAIT_MAX_NS]); full += s[b + FS_FULL]; emulated += s[b + FS_EMULATED];
    }
    const ident = this.engine.identities.get(this.key);
    return { path: this.path, tracked, serialising, waits, waitNsTotal: waitNs, waitNsMax: waitMax, tableFull: full, emulatedFallocates: emulated, tableHighWater: ident?.table ? tableHighWater(ident.table, this.engine.options.tableCapacity) : 0 };
  }

  /** Waits for this file's in-flight requests, then closes it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.inflight > 0) await new Promise<void>((r) => { this.drained = r; });
    this.engine.rememberFile(this.id, null);
    await this.engine.broadcast((seq) => ({ type: 'close', seq, fileId: this.id }));
    closeSync(this.fd);
    const ident = this.engine.identities.get(this.key);
    if (ident && --ident.refs === 0) this.engine.identities.delete(this.key);
    this.engine.forgetFile(this, this.id);
  }
}

function tableHighWater(sab: SharedArrayBuffer, capacity: number): number {
  return new TrackedTable(new AtomicWords(new Int32Array(sab)), capacity).highWater();
}

function roundUp(n: number, a: number): number { return Math.ceil(n / a) * a; }

/** Delivers read data into the caller's buffer, which may have been detached meanwhile. */
function copyOut(dst: Uint8Array, src: Uint8Array, at: number): void {
  try {
    dst.set(src, at);
  } catch (e) {
    throw new RingfenceError('read: the destination buffer was detached (its ArrayBuffer transferred) while the read was in flight, so the data could not be delivered; keep the buffer untouched until the promise settles',
      { code: 'ERR_RINGFENCE_BUFFER_DETACHED', op: 'read', cause: e });
  }
}
