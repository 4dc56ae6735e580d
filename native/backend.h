/*
 * The abstract I/O backend behind a Context.
 *
 * A Context owns exactly one Backend and calls it only from the thread that
 * created it (a worker thread).  Each backend implements the same pump
 * contract:
 *
 *   1. validate the batch entries and start each valid one (entries that
 *      fail validation, or that find no free slot, complete immediately);
 *   2. reap every completion that is already available;
 *   3. if nothing was produced and wait_ms > 0, block until a completion
 *      arrives, the doorbell eventfd is written, or wait_ms elapses, then
 *      reap again.
 *
 * All per-request state is preallocated ("slots", one per unit of depth),
 * so the hot path never allocates.
 */
#ifndef RINGFENCE_BACKEND_H
#define RINGFENCE_BACKEND_H

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops.h"
#include "validate.h"

namespace rf {

/* Thrown by backends; addon.cc turns it into a JS Error. */
class BackendError : public std::runtime_error {
 public:
    using std::runtime_error::runtime_error;
};

/* "EPERM" for EPERM, or the number if glibc does not know it. */
std::string errno_name(int err);

/*
 * Where a backend in inline mode sends an op it would otherwise run with
 * execute_sync() on the calling thread (see inline.h): the thread that owns
 * the Context then never blocks in such a call.  The result comes back
 * later through the Context's pump, not from the pump that submitted it.
 */
class Offload {
 public:
    virtual ~Offload() {}
    virtual void run(const Request &req, const struct iovec *iov) = 0;
};

/* Everything a backend needs from the Context constructor. */
struct BackendConfig {
    uint32_t depth = 0;
    Pool pool;
    int doorbell_fd = -1;           /* owned by the main thread: never close */
    uint32_t emulate_window_us = 0;
    /* Word 0 of the stall Int32Array, or nullptr: see stall.h. */
    uint32_t *stall = nullptr;
    /*
     * Inline mode (inline.h): doorbell_fd is the Context's completion
     * eventfd, which io_uring registers with the ring; blocking ops go to
     * offload instead of running on the calling thread.  nullptr: worker mode.
     */
    Offload *offload = nullptr;
};

struct BackendInfo {
    std::string backend;
    bool fixed_buffers = false;
    /* io_uring: pool chunks (4 MiB) registered as fixed buffers so far, refused, and in all. */
    uint32_t fixed_chunks_registered = 0, fixed_chunks_refused = 0, fixed_chunks = 0;
    /* Why fixed_buffers is false, when registration was tried and refused ("" otherwise). */
    std::string fixed_buffers_reason;
    bool fixed_files = false;
    bool async_ftruncate = false;
    /* io_uring: the ring fd is registered (IORING_REGISTER_RING_FDS), so enters skip fdget. */
    bool ring_fd_registered = false;
    /* io_uring inline: the eventfd is off during our own enters (uring_backend.cc, eventfd_back_on). */
    bool quiet_eventfd = false;
    /* ... how often we found work queued meanwhile (IORING_SQ_TASKRUN) and ran it at once ... */
    double quiet_rechecks = 0;
    /* ... and how often a CQE was left in the ring, so that we signalled the eventfd ourselves. */
    double quiet_self_signals = 0;
    std::vector<std::string> setup_flags;
    std::vector<std::string> sync_ops;
};

/*
 * Where completions go: the caller's Int32Array.  push() never writes past
 * the capacity; the Context guarantees capacity >= depth + batch capacity,
 * which bounds what a single pump can produce (every completion belongs to
 * an op that was in flight or to an entry of this batch).
 */
class CompletionSink {
 public:
    CompletionSink(int32_t *out, uint32_t cap) : out_(out), cap_(cap) {}
    bool push(int32_t tag, int32_t res) {
        if (n_ >= cap_)
            return false;
        int32_t *c = out_ + size_t(n_) * COMPL_WORDS;
        c[0] = tag;
        c[1] = res;
        c[2] = 0;
        c[3] = 0;
        n_++;
        return true;
    }
    uint32_t count() const { return n_; }
    uint32_t room() const { return cap_ - n_; }

 private:
    int32_t *out_;
    uint32_t cap_;
    uint32_t n_ = 0;
};

/*
 * Fixed pool of in-flight slots with a LIFO free list.  A slot carries the
 * JS tag and the iovec array a vectored op points the kernel at (it must
 * stay valid until the op completes, so it cannot live on the stack).
 */
struct Slot {
    int32_t tag;
    struct iovec iov[RF_IOV_MAX];
};

class SlotPool {
 public:
    explicit SlotPool(uint32_t depth)
        : slots_(depth), free_(depth), busy_(depth, 0), nfree_(depth) {
        for (uint32_t i = 0; i < depth; i++)
            free_[i] = depth - 1 - i;
    }
    bool empty() const { return nfree_ == 0; }
    /* The slot pop() would return; only valid when !empty(). */
    uint32_t peek() const { return free_[nfree_ - 1]; }
    uint32_t pop() {
        uint32_t i = free_[--nfree_];
        busy_[i] = 1;
        return i;
    }
    void push(uint32_t i) {
        busy_[i] = 0;
        free_[nfree_++] = i;
    }
    Slot &operator[](uint32_t i) { return slots_[i]; }
    uint32_t size() const { return uint32_t(slots_.size()); }
    /* Popped and not yet pushed back (e.g. to cancel what is in flight). */
    bool busy(uint32_t i) const { return busy_[i] != 0; }
    uint32_t inflight() const { return uint32_t(slots_.size()) - nfree_; }

 private:
    std::vector<Slot> slots_;
    std::vector<uint32_t> free_;
    std::vector<uint8_t> busy_;
    uint32_t nfree_;
};

class Backend {
 public:
    virtual ~Backend() {}

    /* See the contract at the top of this file. */
    /* ext: n caller buffers for FLAG_EXT entries (inline mode), or nullptr. */
    virtual void pump(const int32_t *batch, uint32_t n, CompletionSink &out,
                      int wait_ms, const ExtBuf *ext) = 0;
    virtual uint32_t inflight() const = 0;

    /* id < MAX_FILES and fd valid: checked by the caller. */
    virtual void set_file(uint32_t id, int fd) = 0;
    virtual void clear_file(uint32_t id) = 0;

    /*
     * Wait for every in-flight op (results are discarded), then release
     * the kernel context.  Called exactly once, before destruction.
     *
     * Returns false if it had to give up with ops possibly still in the
     * kernel (a backend may do so rather than block forever).  Then the
     * kernel may still write into the pool and into this object: the
     * caller must leak both, never destroy or free them.
     */
    virtual bool shutdown() = 0;

    virtual void fill_info(BackendInfo *info) const = 0;
};

/*
 * The backend registered under `name` (backend.cc), or nullptr if there is
 * none; throws BackendError with an actionable message if it cannot start.
 */
std::unique_ptr<Backend> make_backend(const std::string &name, const BackendConfig &cfg);
/* "'io_uring', 'libaio', 'sync'": the registered names, for messages. */
std::string backend_names();

/* Factories: throw BackendError with an actionable message on failure. */
std::unique_ptr<Backend> make_uring_backend(const BackendConfig &cfg);
std::unique_ptr<Backend> make_aio_backend(const BackendConfig &cfg);
std::unique_ptr<Backend> make_sync_backend(const BackendConfig &cfg);

/*
 * Run a validated request to completion on the calling thread (sync
 * backend, and the ops the async backends cannot or should not queue).
 * Returns bytes or -errno.  iov is used for READV/WRITEV.
 */
int execute_sync(const Request &req, const struct iovec *iov,
                 const BackendConfig &cfg);

/*
 * Block up to wait_ms for the doorbell eventfd to become readable and
 * clear it.  Returns true if it was rung (or had a pending count).
 */
bool wait_doorbell(int fd, int wait_ms);

}  // namespace rf

#endif
