// Wire formats shared by the main thread, the workers and the native addon.
// Every number here is mirrored in native/ops.h; change both together: src/addon.ts compares
// them with the addon's own (its `wire` export) when it loads, and refuses a mismatch.

/** Operation codes carried in ring entries and native batch entries (low 8 bits of word 0). */
export const enum Op {
  READ = 1,
  WRITE = 2,
  READV = 3,
  WRITEV = 4,
  FALLOCATE = 5,
  FSYNC = 6,
  TRUNCATE = 7,
  NOP = 8,
}
export const OP_MAX = 8;

/** Flags in bits 8..15 of word 0. */
export const enum OpFlag {
  /** Execute a FALLOCATE with the pre-5.5 XFS semantics (see native/emulate.cc). */
  EMULATE_XFS_BUG = 0x100,
  /**
   * A WRITE whose offset or length is not aligned for O_DIRECT: the worker pads it by
   * read-modify-write under a serialising table entry and never passes this flag to the
   * addon. Word 5 is the pool offset of a bounce block laid out as
   * [padded range (aligned end - aligned start)][scratch: 2 * alignment], with the caller's
   * data at (offset - aligned start); word 7 is the alignment.
   */
  RMW = 0x200,
  /**
   * Inline mode, READ/WRITE: word 5 is a byte offset into the caller's own buffer (passed to
   * pump() next to the batch; the engine keeps it referenced until the request settles), not
   * into the pool: an ordinary Buffer that meets the file's alignment needs no bounce copy.
   */
  EXT = 0x400,
  /**
   * A NOP that the executor registers as a serialising entry over [0, infinity) and never
   * passes to the addon with this flag: it is admitted only once every older request on the
   * file, whichever engine made it, has finished. open() issues one when the file is already
   * open elsewhere in the process and this engine turns the XFS workaround on for it (the
   * combined rule, docs/ARCHITECTURE.md "Threads sharing a file").
   */
  BARRIER = 0x800,
}

/** The wire constants above, by their native names (compared with the addon's `wire` at load). */
export const WIRE: Readonly<Record<string, number>> = {
  ENTRY_WORDS: 8, E_OP: 0, E_FILE: 1, E_OFF_LO: 2, E_OFF_HI: 3, E_LEN: 4, E_BUF: 5, E_TAG: 6, E_AUX: 7, COMPL_WORDS: 4,
  OP_MAX: 8, OP_READ: Op.READ, OP_WRITE: Op.WRITE, OP_READV: Op.READV, OP_WRITEV: Op.WRITEV, OP_FALLOCATE: Op.FALLOCATE,
  OP_FSYNC: Op.FSYNC, OP_TRUNCATE: Op.TRUNCATE, OP_NOP: Op.NOP, FLAG_EMULATE_XFS_BUG: OpFlag.EMULATE_XFS_BUG, FLAG_EXT: OpFlag.EXT,
  IOV_MAX: 64, MAX_FILES: 4096, FALLOC_FL_KEEP_SIZE: 0x01, FALLOC_FL_PUNCH_HOLE: 0x02, FALLOC_FL_ZERO_RANGE: 0x10,
  REPLY_MAX: 1024, REPLY_WORDS: 8, REPLY_BYTES: 16, REPLY_ARMED: 1, REPLY_TRIED: 2, REPLY_STATE: 4, REPLY_RESULT: 5, REPLY_DATA: 6, REPLY_REC_BITS: 10,
};

/**
 * Replies sent at completion time (inline mode, native/reply.h): a context's reply records,
 * REPLY_WORDS int32 words each: words 0..3 the reply's REPLY_BYTES bytes, R_STATE (0 idle,
 * REPLY_ARMED, REPLY_TRIED: the context tried to send, with the send's bytes or -errno in
 * R_RESULT) and R_DATA, the data bytes sent after them (0 for a write; a read's length: the
 * read's data follows the header, and only for a read of exactly that length). A record is named by a handle (replyOpen's result): `index | generation << 10`;
 * its words are at (handle & REPLY_INDEX_MASK) * REPLY_WORDS.
 */
export const REPLY_MAX = 1024, REPLY_WORDS = 8, REPLY_BYTES = 16, REPLY_INDEX_MASK = REPLY_MAX - 1;
export const REPLY_IDLE = 0, REPLY_ARMED = 1, REPLY_TRIED = 2, R_STATE = 4, R_RESULT = 5, R_DATA = 6;

/**
 * One request: 8 int32 words. Used for the submission rings (main -> worker) and,
 * with `tag` holding the worker's local slot, for native batch entries (worker -> addon).
 *   0 op | flags
 *   1 file id
 *   2 offset, low 32 bits      3 offset, high 32 bits (int64, must be >= 0)
 *   4 length (READ/WRITE/READV/WRITEV: bytes, 1..2^31-1; FALLOCATE: length low 32 bits)
 *   5 pool byte offset of the buffer or iovec table (FALLOCATE: length high 32 bits)
 *   6 tag: request id on the ring, local slot in a native batch
 *   7 aux: FALLOCATE mode; FSYNC 1 = fdatasync; READV/WRITEV iovec count
 */
export const ENTRY_WORDS = 8;
export const E_OP = 0, E_FILE = 1, E_OFF_LO = 2, E_OFF_HI = 3, E_LEN = 4, E_BUF = 5, E_TAG = 6, E_AUX = 7;

/** Completion entries: 4 int32 words: tag, result (bytes or -errno), 2 reserved. */
export const COMPL_WORDS = 4;

/** READV/WRITEV iovec descriptors in the pool: 2 uint32 each (pool byte offset, length). */
export const IOV_MAX = 64;

/** Allowed fallocate modes (linux/falloc.h). */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** Largest file id + 1 that a worker accepts. */
export const MAX_FILES = 4096;
