/*
 * Wire format shared with src/protocol.ts.
 *
 * Every constant here mirrors one in src/protocol.ts; change both together.
 * JavaScript builds batches of 8-int32 entries and hands them to
 * Context.pump(); the addon answers with 4-int32 completion entries.
 * (The engine's shared rings in src/shm.ts carry wider entries with check
 * words; the worker copies only the 8 request words into a batch, so the
 * addon only ever sees these formats.)
 *
 * Nothing here is trusted: the entries were copied out of a
 * SharedArrayBuffer that any thread may scribble on, so validate.cc checks
 * every field before anything reaches the kernel.
 *
 * The one other word the addon writes is the optional stall word
 * (W_STALL in src/shm.ts): see stall.h.
 */
#ifndef RINGFENCE_OPS_H
#define RINGFENCE_OPS_H

#include <cstdint>

namespace rf {

/* Operation codes: low 8 bits of word 0. */
enum Op : uint32_t {
    OP_READ = 1,
    OP_WRITE = 2,
    OP_READV = 3,
    OP_WRITEV = 4,
    OP_FALLOCATE = 5,
    OP_FSYNC = 6,
    OP_TRUNCATE = 7,
    OP_NOP = 8,
};
constexpr uint32_t OP_MAX = 8;
constexpr uint32_t OP_MASK = 0xff;

/*
 * Flags: bits 8..15 of word 0.  Any other bit set in word 0 is an error,
 * so a future flag can never be silently ignored by an old addon.
 */
constexpr uint32_t FLAG_EMULATE_XFS_BUG = 0x100;
/*
 * READ/WRITE only, inline mode only: word 5 is a byte offset into the
 * caller's own buffer, passed next to the batch (pump's third argument),
 * instead of into the pool.  0x200 is the worker's RMW flag, which never
 * reaches the addon.
 */
constexpr uint32_t FLAG_EXT = 0x400;
constexpr uint32_t FLAGS_KNOWN = FLAG_EMULATE_XFS_BUG | FLAG_EXT;

/*
 * Entry layout (int32 words):
 *   0 op | flags
 *   1 file id
 *   2 offset low 32 bits     3 offset high 32 bits (int64, >= 0)
 *   4 length (READ/WRITE/READV/WRITEV: bytes, 1..2^31-1;
 *             FALLOCATE: length low 32 bits)
 *   5 pool byte offset of the buffer or iovec table
 *     (FALLOCATE: length high 32 bits)
 *   6 tag (copied verbatim into the completion)
 *   7 aux: FALLOCATE mode; FSYNC 1 = fdatasync; READV/WRITEV iovec count
 */
constexpr uint32_t ENTRY_WORDS = 8;
constexpr uint32_t E_OP = 0, E_FILE = 1, E_OFF_LO = 2, E_OFF_HI = 3,
                   E_LEN = 4, E_BUF = 5, E_TAG = 6, E_AUX = 7;

/* Completion entries: tag, result (bytes or -errno), 2 reserved zeros. */
constexpr uint32_t COMPL_WORDS = 4;
constexpr uint32_t C_TAG = 0, C_RES = 1;

/*
 * READV/WRITEV descriptors in the pool: pairs of uint32 (pool offset,
 * length).  Named RF_IOV_MAX because <limits.h> already owns IOV_MAX.
 */
constexpr uint32_t RF_IOV_MAX = 64;
constexpr uint32_t IOV_DESC_BYTES = 8;

/* Allowed fallocate mode bits (linux/falloc.h). */
constexpr int32_t RF_FALLOC_KEEP_SIZE = 0x01;
constexpr int32_t RF_FALLOC_PUNCH_HOLE = 0x02;
constexpr int32_t RF_FALLOC_ZERO_RANGE = 0x10;

/* Largest file id + 1. */
constexpr uint32_t MAX_FILES = 4096;

/* Context depth limits (SQ entries / aio nr_events / slots). */
constexpr uint32_t DEPTH_MIN = 1;
constexpr uint32_t DEPTH_MAX = 4096;

}  // namespace rf

#endif
