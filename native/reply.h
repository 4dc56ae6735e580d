/*
 * Replies sent at completion time (inline mode only).
 *
 * A server that answers a successful request with a fixed header, and for a read the data
 * read after it (ringfence serve's NBD simple reply: 16 bytes, then the data), can have the
 * context send the reply itself when it reaps the request's completion, before JavaScript runs:
 * inside a pump() that reaps it, or at the wake-up that the completion causes (addon.cc,
 * ReapAtWake).  That saves the JavaScript between the reap and the reply on the request's
 * critical path.  The server:
 *
 *   - opens a reply socket, replyOpen(fd): the context keeps its own dup of the fd, so the
 *     number it writes to can never be closed and reused for another connection under it.  It
 *     gets a handle, `rec | gen << REPLY_REC_BITS`: the record's index and the generation of
 *     this opening (see below);
 *   - arms its record before each such request: writes the reply's header to words 0..3 of the
 *     record in the `replies` Int32Array, the data bytes that follow it to word 6 (R_DATA: 0 for
 *     a write, the read's length for a read) and REPLY_ARMED to word 4;
 *   - submits the write or read with the handle + 1 in the batch's parallel `replyArm` array.
 *
 * At submit, submitted() remembers (record, length, and for a read the checked address of the
 * memory it reads into) for the request's tag.  At completion, completed() sends when the
 * request completed whole, the record is still armed and R_DATA is what the request is (0 for
 * a write, its length for a read): the header, and for a read the data, with one non-blocking
 * sendmsg().  It leaves REPLY_TRIED in word 4 and the send's result (bytes, of 16 + R_DATA, or
 * -errno) in word 5.  Anything else (a short or failed request, a record disarmed or closed
 * meanwhile, armed for the other kind) sends nothing and leaves the record as it was: the
 * server replies itself.  Whether the server may let a reply go out ahead of JavaScript, so
 * that replies stay whole and in order on the stream, is the server's rule
 * (src/serve/transmission.ts, docs/SERVE.md).
 *
 * A read's memory is the pool's (it lives as long as the context) or the caller's FLAG_EXT
 * buffer, which the engine keeps referenced until the request settles, and it settles only
 * after the pump() that sends: the address is good at completion exactly as it was for the
 * kernel.  Its bounds are checked here, at submit, as validate_entry() checks them.
 *
 * Everything here runs on the context's own thread (pump() and the reply calls are all made
 * from it), so there is no lock.  What JavaScript wrote is untrusted: every record number and
 * tag is bounds-checked, the fd is never read from JavaScript memory, and a record is reused
 * only once no submitted request names it any more (a closed one waits for its last request).
 *
 * Why the generation.  A request can name a record and still be JavaScript's (waiting for a
 * ring slot, for pool memory, or parked in the table) when its server closes the record: no
 * submitted request names it, so it is freed at once, and the next replyOpen() (of another
 * connection) gets the same index.  Without the generation, that old request, submitted later,
 * would send the new connection's armed bytes on the new connection's socket.  submitted()
 * ignores a handle whose generation is not the record's current one, and close() too, so a
 * stale handle can neither send nor close anything.  The generation has 20 bits: a request
 * would have to wait in JavaScript while its record is reopened a million times to be mistaken.
 */
#ifndef RINGFENCE_REPLY_H
#define RINGFENCE_REPLY_H

#include <cstddef>
#include <cstdint>
#include <vector>

#include "validate.h"

namespace rf {

constexpr uint32_t REPLY_MAX = 1024;   /* reply sockets per context */
constexpr uint32_t REPLY_WORDS = 8;    /* words per record: 0..3 the bytes, 4 state, 5 result, 6 data */
constexpr uint32_t REPLY_BYTES = 16;
constexpr int32_t REPLY_IDLE = 0, REPLY_ARMED = 1, REPLY_TRIED = 2;
constexpr uint32_t R_STATE = 4, R_RESULT = 5, R_DATA = 6;
constexpr uint32_t REPLY_REC_BITS = 10;          /* REPLY_MAX == 1 << REPLY_REC_BITS */
constexpr uint32_t REPLY_GEN_MASK = (1u << 20) - 1;
static_assert(REPLY_MAX == 1u << REPLY_REC_BITS, "a handle's index bits hold every record");

class Replies {
 public:
    /* slots: the number of request slots (a tag's slot is tag >> 3); pool: the context's pool. */
    Replies(uint32_t slots, const Pool &pool);
    ~Replies();
    Replies(const Replies &) = delete;
    Replies &operator=(const Replies &) = delete;

    /* A record for socket `fd` (dup'd): its handle, or -errno (-ENFILE: every record in use). */
    int open(int fd);
    /* Closes the record of `handle` (a stale handle: nothing); its index is reused once no request names it. */
    void close(uint32_t handle);
    /* Closes every dup (the context closes). */
    void close_all();

    /*
     * Batch entry `entry` (ENTRY_WORDS words) is being submitted with reply word `r` (handle + 1);
     * ext: its caller buffer when it is a FLAG_EXT entry (nullptr: none).
     */
    void submitted(const int32_t *entry, int32_t r, const ExtBuf *ext);
    /* Requests submitted with a record and not completed yet. */
    uint32_t pending() const { return pending_total_; }
    /* A completion: sends the reply if it is due.  words: the records (nwords of them, 0 if gone). */
    void completed(int32_t tag, int32_t res, int32_t *words, size_t nwords);

 private:
    /* A request submitted with a record: its length, and for a read the memory it reads into. */
    struct Arm { int32_t rec = -1; int32_t len = 0; const uint8_t *data = nullptr; };
    /* The record of a current handle, or -1 (out of range, not open, an older generation). */
    int32_t current(uint32_t handle) const;
    std::vector<int> fd_;            /* by record: the dup, -1 when closed or free */
    std::vector<uint32_t> uses_;     /* by record: submitted requests that name it */
    std::vector<uint8_t> open_;      /* by record: opened and not closed */
    std::vector<uint32_t> gen_;      /* by record: the generation of its last opening */
    std::vector<Arm> arm_;           /* by slot */
    std::vector<uint32_t> free_;
    Pool pool_;
    uint32_t pending_total_ = 0;
    void maybe_free(uint32_t rec);
};

}  // namespace rf

#endif
