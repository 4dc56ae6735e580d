/*
 * The io_uring backend.
 *
 * One ring per Context, created and only ever entered by the worker thread
 * that owns the Context; that is what allows IORING_SETUP_SINGLE_ISSUER and
 * IORING_SETUP_DEFER_TASKRUN, which keep completion work on this thread
 * instead of interrupting it.  The price of DEFER_TASKRUN is that CQEs only
 * appear when we enter the kernel with IORING_ENTER_GETEVENTS, so every
 * pump does exactly one io_uring_submit_and_get_events() (submit the batch
 * and flush completions in one syscall), plus one waiting enter if it has
 * to block.
 *
 * Waking a blocked worker: the main thread writes the doorbell eventfd.
 * While we wait, one internal read SQE on that eventfd is kept armed, so a
 * ring completes it and io_uring_wait returns.  Its CQE (user_data
 * UD_DOORBELL) is never reported to JavaScript.
 *
 * Registered resources, each with a plain fallback if registration fails
 * (e.g. RLIMIT_MEMLOCK for buffers):
 *   - the pool as fixed buffers, in 4 MiB chunks, each registered when a
 *     READ/WRITE first uses it (Linux >= 5.19; all at start before that),
 *     used by READ/WRITE whose range lies in one chunk (pool blocks up to
 *     4 MiB always do; larger ones go unregistered); a chunk the kernel
 *     refuses (RLIMIT_MEMLOCK) goes unregistered, reported by info();
 *   - a sparse fixed file table of MAX_FILES, indexed by file id.
 *
 * Failure paths: a submit the kernel refuses never strands an entry (see
 * submit()); shutdown() is bounded and would rather leak than free memory
 * the kernel may still write (see there); the ring is an OwnedRing, so a
 * constructor that throws after io_uring_queue_init still exits it.
 */
#include "uring.h"

#include <poll.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "backend.h"
#include "stall.h"

namespace rf {

/* ---- setup helpers (also used by probe.cc) ---- */

int uring_init_best(unsigned entries, struct io_uring *ring,
                    struct io_uring_params *params, unsigned *flags, unsigned extra) {
    static const unsigned kCandidates[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,  /* < 6.1 */
        IORING_SETUP_COOP_TASKRUN,                               /* < 6.0 */
        0,                                                       /* < 5.19 */
    };
    int rc = -EINVAL;
    for (unsigned f : kCandidates) {
        if (f & IORING_SETUP_DEFER_TASKRUN)
            f |= extra; /* TASKRUN_FLAG (5.19) predates DEFER_TASKRUN (6.1) */
        *params = {};
        params->flags = f;
        rc = io_uring_queue_init_params(entries, ring, params);
        if (rc == 0) {
            *flags = f;
            return 0;
        }
        if (rc != -EINVAL)
            break; /* EPERM, ENOMEM, ENOSYS...: fewer flags will not help */
    }
    return rc;
}

std::vector<std::string> uring_setup_flag_names(unsigned flags) {
    std::vector<std::string> v;
    if (flags & IORING_SETUP_SINGLE_ISSUER) v.push_back("SINGLE_ISSUER");
    if (flags & IORING_SETUP_DEFER_TASKRUN) v.push_back("DEFER_TASKRUN");
    if (flags & IORING_SETUP_COOP_TASKRUN) v.push_back("COOP_TASKRUN");
    if (flags & IORING_SETUP_SUBMIT_ALL) v.push_back("SUBMIT_ALL");
    if (flags & IORING_SETUP_TASKRUN_FLAG) v.push_back("TASKRUN_FLAG");
    return v;
}

std::vector<std::string> uring_feature_names(unsigned features) {
    /* Bit order of IORING_FEAT_*; the later ones postdate liburing 2.3. */
    static const char *const kNames[] = {
        "SINGLE_MMAP", "NODROP", "SUBMIT_STABLE", "RW_CUR_POS",
        "CUR_PERSONALITY", "FAST_POLL", "POLL_32BITS", "SQPOLL_NONFIXED",
        "EXT_ARG", "NATIVE_WORKERS", "RSRC_TAGS", "CQE_SKIP",
        "LINKED_FILE", "REG_REG_RING", "RECVSEND_BUNDLE", "MIN_TIMEOUT",
        "RW_ATTR", "NO_IOWAIT",
    };
    std::vector<std::string> v;
    for (unsigned bit = 0; bit < 32; bit++) {
        if (!(features & (1u << bit)))
            continue;
        if (bit < sizeof kNames / sizeof kNames[0])
            v.push_back(kNames[bit]);
        else
            v.push_back("BIT_" + std::to_string(bit));
    }
    return v;
}

std::string uring_init_error(int err) {
    std::string msg = "io_uring_queue_init failed: " + errno_name(err);
    switch (-err) {
    case EPERM:
        msg += " (io_uring disabled by sysctl kernel.io_uring_disabled or seccomp)";
        break;
    case ENOSYS:
        msg += " (kernel built without io_uring, or blocked by seccomp)";
        break;
    case ENOMEM:
        msg += " (RLIMIT_MEMLOCK too low for the ring on this kernel, or out of memory; "
               "lower depth or raise ulimit -l)";
        break;
    case EMFILE:
    case ENFILE:
        msg += " (out of file descriptors)";
        break;
    }
    return msg + "; use backend 'libaio' or 'sync'";
}

/* ---- the backend ---- */

namespace {

/*
 * Internal user_data values.  Not ~0: that is LIBURING_UDATA_TIMEOUT, the
 * tag liburing puts on the timeout SQE it queues for a timed wait on
 * kernels without IORING_FEAT_EXT_ARG (< 5.11); reap() skips those.
 */
constexpr uint64_t UD_DOORBELL = ~uint64_t(0) - 2;
constexpr uint64_t UD_CANCEL = ~uint64_t(0) - 1;
static_assert(LIBURING_UDATA_TIMEOUT == ~uint64_t(0), "reap() skips liburing's timeout CQEs");
/*
 * The pool is registered as fixed buffers in chunks of this size, each one only when a
 * request first uses it (register_pool(), use_chunk()): registration pins the chunk's pages,
 * so an engine whose pool is mostly unused costs little resident memory. The buddy allocator
 * (src/pool.ts) tends to reuse low addresses (LIFO free lists, splits keep the lower half), so
 * the chunks registered follow the pool's high-water mark; a block of up to 4 MiB never crosses
 * a chunk boundary (blocks are naturally aligned). Pinning a chunk happens in the call that
 * first uses it, once per ring.
 */
constexpr uint64_t kFixedChunk = uint64_t(4) << 20;

/* submit(): transient refusals retried within one pump before giving up. */
constexpr int kSubmitRetries = 4;

/* shutdown(): see there. */
constexpr int64_t kShutdownCancelMs = 5000;
constexpr int64_t kShutdownGiveUpMs = 10000;
constexpr int64_t kShutdownStepMs = 100;

int64_t now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

/*
 * TEST HOOK, not an interface: with RINGFENCE_TEST_URING_FAIL_AFTER_INIT
 * set (non-empty, not "0") the constructor throws after the ring is fully
 * set up, so test/native.test.mjs can check that a constructor failure
 * leaks no ring.  Nothing real fails there today except std::bad_alloc,
 * which a test cannot provoke.  Read once per Context, so it costs nothing.
 */
bool test_fail_after_init() {
    const char *v = getenv("RINGFENCE_TEST_URING_FAIL_AFTER_INIT");
    return v && *v && strcmp(v, "0") != 0;
}

/* The running kernel is at least major.minor (uname(2); false if unreadable). */
bool kernel_at_least(int major, int minor) {
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return false;
    return ma > major || (ma == major && mi >= minor);
}

class UringBackend : public Backend {
 public:
    explicit UringBackend(const BackendConfig &cfg)
        : cfg_(cfg), slots_(cfg.depth) {
        /* +1: the doorbell read may be queued next to a full batch. */
        struct io_uring_params p;
        /* An inline ring with the quiet eventfd asks for TASKRUN_FLAG: eventfd_back_on reads it. */
        const bool quiet_wanted = cfg.offload != nullptr && quiet_eventfd_wanted();
        int rc = ring_.init_best(cfg.depth + 1, &p, &setup_flags_,
                                 quiet_wanted ? IORING_SETUP_TASKRUN_FLAG : 0);
        if (rc < 0)
            throw BackendError(uring_init_error(rc));
        /* From here on, a throw exits the ring through ~OwnedRing. */
        features_ = p.features;

        if (struct io_uring_probe *probe = io_uring_get_probe_ring(r())) {
            async_ftruncate_ = io_uring_opcode_supported(probe, RF_IORING_OP_FTRUNCATE);
            io_uring_free_probe(probe);
        }
        register_pool();
        fixed_files_ = io_uring_register_files_sparse(r(), MAX_FILES) == 0;
        if (cfg.offload != nullptr) {
            /*
             * Inline mode: enters then skip the fd lookup, which in a multi-threaded
             * process costs a reference count per enter (Linux >= 5.18; refused
             * earlier: harmless).  Worker mode keeps the plain fd, which is what
             * test/native.test.mjs closes to make the ring unusable.
             */
            ring_fd_registered_ = io_uring_register_ring_fd(r()) == 1;
            /* Inline mode (inline.h): every CQE, or deferred task work, signals the eventfd. */
            int erc = io_uring_register_eventfd(r(), cfg.doorbell_fd);
            if (erc < 0)
                throw BackendError("io_uring_register_eventfd failed: " + errno_name(erc) +
                                   "; inline mode needs it: start the engine with mode: 'workers'");
            quiet_eventfd_ = quiet_wanted && quiet_eventfd_safe(setup_flags_);
        }
        if (test_fail_after_init())
            throw BackendError("io_uring setup failed after io_uring_queue_init "
                               "(test hook RINGFENCE_TEST_URING_FAIL_AFTER_INIT)");
    }

    void pump(const int32_t *batch, uint32_t n, CompletionSink &out,
              int wait_ms, const ExtBuf *ext) override {
        bool queued = false;
        for (uint32_t i = 0; i < n; i++) {
            Request req;
            /* Validate straight into the slot we would use, to avoid a copy. */
            struct iovec *iov = slots_.empty() ? scratch_iov_ : slots_[slots_.peek()].iov;
            int rc = validate_entry(batch + size_t(i) * ENTRY_WORDS, cfg_.pool,
                                    files_, &req, iov, ext ? ext + i : nullptr);
            if (rc != 0) {
                out.push(req.tag, rc);
                continue;
            }
            /*
             * Inline: the emulated XFS fallocate (its sleep is the point),
             * and ftruncate on kernels without IORING_OP_FTRUNCATE (< 6.9).
             */
            if ((req.flags & FLAG_EMULATE_XFS_BUG) ||
                (req.op == OP_TRUNCATE && !async_ftruncate_)) {
                /* Inline mode: on a helper thread, never on the loop (inline.h). */
                if (cfg_.offload != nullptr)
                    cfg_.offload->run(req, iov);
                else
                    out.push(req.tag, execute_sync(req, iov, cfg_));
                continue;
            }
            struct io_uring_sqe *sqe = slots_.empty() ? nullptr : io_uring_get_sqe(r());
            if (!sqe) {
                out.push(req.tag, -EBUSY);
                continue;
            }
            uint32_t s = slots_.pop();
            slots_[s].tag = req.tag;
            prepare(sqe, s, req);
            queued = true;
        }

        /* One enter in the normal case: submit and run deferred completions. */
        if (quiet_eventfd_)
            io_uring_cq_eventfd_toggle(r(), false);
        if (queued || slots_.inflight() > 0 || doorbell_armed_)
            submit(&out, queued);
        reap(&out);
        if (quiet_eventfd_)
            eventfd_back_on(out);

        if (out.count() > 0 || wait_ms <= 0)
            return;
        if (doorbell_rang_) {
            /* Rung since the last wait: that is the wake-up; report it now. */
            doorbell_rang_ = false;
            return;
        }
        arm_doorbell();
        struct __kernel_timespec ts;
        ts.tv_sec = wait_ms / 1000;
        ts.tv_nsec = (long long)(wait_ms % 1000) * 1000000;
        struct io_uring_cqe *cqe;
        int rc = io_uring_submit_and_wait_timeout(r(), &cqe, 1, &ts, nullptr);
        if (rc < 0 && rc != -ETIME && rc != -EINTR) {
            /*
             * The ring refused the enter (see submit()), maybe with the
             * doorbell read still in the SQ ring: take it back, and wait
             * on the eventfd itself so that a caller looping on
             * pump(0, wait) still sleeps and is still woken by a ring.
             * Briefly only while ops are in flight: their completions do
             * not show on the eventfd.
             */
            withdraw(rc, &out);
            wait_doorbell(cfg_.doorbell_fd, slots_.inflight() > 0 && wait_ms > 10 ? 10 : wait_ms);
        }
        reap(&out);
        doorbell_rang_ = false; /* returning now is the wake-up */
    }

    uint32_t inflight() const override { return slots_.inflight(); }

    void set_file(uint32_t id, int fd) override {
        clear_file(id);
        files_.fd[id] = fd;
        if (fixed_files_)
            files_.fixed[id] = io_uring_register_files_update(r(), id, &fd, 1) == 1;
    }

    void clear_file(uint32_t id) override {
        if (files_.fixed[id]) {
            /* In-flight ops keep their own reference: this is safe. */
            int none = -1;
            io_uring_register_files_update(r(), id, &none, 1);
            files_.fixed[id] = false;
        }
        files_.fd[id] = -1;
    }

    /*
     * Drain, with a bound.  Ops normally finish in milliseconds, but some
     * never finish on their own: a read of a FIFO or socket nobody writes
     * to, I/O to a hung NFS server or a dead device; and an unusable ring
     * (an enter that fails, e.g. EBADF) never shows a completion at all.
     * So:
     *   1. wait for completions in steps of at most kShutdownStepMs (the
     *      enter sleeps in the kernel; if the ring refuses to be entered,
     *      sleep the step instead: never a busy loop);
     *   2. once nothing else is in flight, cancel the doorbell read (it
     *      points into this object) and see its CQE;
     *   3. after kShutdownCancelMs, ask the kernel to cancel every op still
     *      in flight (close() discards results, so nothing is lost that
     *      was not already; only ops the kernel can cancel go, e.g. the
     *      poll-driven FIFO read; a started disk write runs to its end);
     *   4. after kShutdownGiveUpMs, give up: release the ring WITHOUT
     *      io_uring_queue_exit() and return false, so that the caller
     *      leaks this object and keeps the pool alive.
     *
     * Why leak instead of exit: an op the kernel still holds may complete
     * later and write into the pool (reads), read the slot iovecs or
     * doorbell_buf_ in this object, and post its CQE into the mmapped CQ
     * ring.  io_uring_queue_exit() would unmap the rings and close the fd,
     * and the caller would then free this object and drop the pool: any
     * such late completion would write into freed memory, possibly
     * memory reused by something else.  A leaked ring, object and pool
     * keep every address the kernel may still touch valid, at the cost of
     * a bounded leak in a case that is already broken.
     */
    bool shutdown() override {
        const int64_t start = now_ms();
        bool cancelled_ops = false;
        for (;;) {
            if (slots_.inflight() == 0 && doorbell_armed_ && !doorbell_cancel_queued_)
                doorbell_cancel_queued_ = queue_cancel(UD_DOORBELL);
            if (slots_.inflight() == 0 && !doorbell_armed_ && cancels_pending_ == 0)
                break;
            int64_t elapsed = now_ms() - start;
            if (elapsed >= kShutdownGiveUpMs) {
                ring_.release();
                return false;
            }
            if (!cancelled_ops && elapsed >= kShutdownCancelMs) {
                for (uint32_t s = 0; s < slots_.size(); s++)
                    if (slots_.busy(s))
                        queue_cancel(s);
                cancelled_ops = true;
            }
            int64_t step = kShutdownGiveUpMs - elapsed;
            wait_step(int(step < kShutdownStepMs ? step : kShutdownStepMs));
        }
        ring_.exit();
        return true;
    }

    void fill_info(BackendInfo *info) const override {
        info->backend = "io_uring";
        info->fixed_buffers = fixed_buffers_;
        info->fixed_buffers_reason = fixed_buffers_reason_;
        info->fixed_chunks = uint32_t(chunk_state_.size());
        info->fixed_chunks_registered = info->fixed_chunks_refused = 0;
        for (uint8_t c : chunk_state_) {
            if (c == CHUNK_REGISTERED) info->fixed_chunks_registered++;
            if (c == CHUNK_REFUSED) info->fixed_chunks_refused++;
        }
        info->fixed_files = fixed_files_;
        info->async_ftruncate = async_ftruncate_;
        info->ring_fd_registered = ring_fd_registered_;
        info->quiet_eventfd = quiet_eventfd_;
        info->quiet_self_signals = double(quiet_self_signals_);
        info->quiet_rechecks = double(quiet_rechecks_);
        info->setup_flags = uring_setup_flag_names(setup_flags_);
        info->sync_ops.assign(1, "emulatedFallocate"); /* assign: info() refreshes this on every call */
        if (!async_ftruncate_)
            info->sync_ops.push_back("truncate");
    }

 private:
    struct io_uring *r() { return ring_.get(); }

    /* The pool's chunk `k` as an iovec. */
    struct iovec chunk_iov(uint64_t k) const {
        uint64_t off = k * kFixedChunk, len = cfg_.pool.size - off;
        if (len > kFixedChunk)
            len = kFixedChunk;
        return {cfg_.pool.base + off, size_t(len)};
    }

    /*
     * A sparse buffer table (Linux >= 5.19), filled chunk by chunk on first use; on older
     * kernels every chunk at once, as before.
     */
    void register_pool() {
        if (cfg_.pool.size == 0)
            return;
        uint64_t n = (cfg_.pool.size + kFixedChunk - 1) / kFixedChunk;
        if (io_uring_register_buffers_sparse(r(), unsigned(n)) == 0) {
            chunk_state_.assign(n, CHUNK_UNREGISTERED);
            /*
             * The first chunk now, so that a locked-memory limit too low for any of it is
             * found (and reported by info()) at start; the others on first use.
             */
            struct iovec iov = chunk_iov(0);
            int rc = io_uring_register_buffers_update_tag(r(), 0, &iov, nullptr, 1);
            fixed_buffers_ = rc == 1;
            if (rc == 1) {
                chunk_state_[0] = CHUNK_REGISTERED;
            } else {
                chunk_state_.assign(n, CHUNK_REFUSED);
                note_register_failure(rc < 0 ? rc : -EIO);
            }
            return;
        }
        std::vector<struct iovec> chunks;
        for (uint64_t k = 0; k < n; k++)
            chunks.push_back(chunk_iov(k));
        int rc = io_uring_register_buffers(r(), chunks.data(), unsigned(chunks.size()));
        fixed_buffers_ = rc == 0;
        if (rc == 0)
            chunk_state_.assign(n, CHUNK_REGISTERED);
        else
            note_register_failure(rc);
    }

    /* Chunk k is registered (now, if it was not yet): a fixed-buffer op may use it. */
    bool use_chunk(uint64_t k) {
        if (k >= chunk_state_.size())
            return false;
        if (chunk_state_[k] == CHUNK_UNREGISTERED) {
            struct iovec iov = chunk_iov(k);
            int rc = io_uring_register_buffers_update_tag(r(), unsigned(k), &iov, nullptr, 1);
            chunk_state_[k] = rc == 1 ? CHUNK_REGISTERED : CHUNK_REFUSED;
            if (rc != 1) {
                /* That chunk goes through unregistered buffers; say why once. */
                if (fixed_buffers_reason_.empty())
                    note_register_failure(rc < 0 ? rc : -EIO);
            }
        }
        return chunk_state_[k] == CHUNK_REGISTERED;
    }

    void note_register_failure(int rc) {
        if (rc == -ENOMEM || rc == -EPERM) {
            /*
             * Registered buffers are pinned and charged to RLIMIT_MEMLOCK unless the
             * process has CAP_IPC_LOCK: the usual reason a non-root process gets none.
             */
            struct rlimit rl{};
            getrlimit(RLIMIT_MEMLOCK, &rl);
            fixed_buffers_reason_ = "io_uring_register_buffers failed with " + errno_name(-rc) +
                ": the locked-memory limit (RLIMIT_MEMLOCK, " +
                (rl.rlim_cur == RLIM_INFINITY ? std::string("unlimited") : std::to_string(rl.rlim_cur / 1024) + " KiB") +
                ") is below the " + std::to_string(cfg_.pool.size >> 20) +
                " MiB buffer pool; raise it (ulimit -l, or LimitMEMLOCK= for a systemd service) or grant CAP_IPC_LOCK. "
                "I/O still works, through unregistered buffers";
        } else if (rc < 0) {
            fixed_buffers_reason_ = "io_uring_register_buffers failed with " + errno_name(-rc) +
                "; I/O still works, through unregistered buffers";
        }
    }

    void prepare(struct io_uring_sqe *sqe, uint32_t s, const Request &req) {
        int fd = req.fd;
        unsigned flags = 0;
        if (req.fixed_file) {
            fd = int(req.file);
            flags |= IOSQE_FIXED_FILE;
        }
        uint8_t *buf = req.mem;
        unsigned len = unsigned(req.length);
        /* A fixed buffer op must stay inside one registered chunk (and be pool memory). */
        bool fixed_buf = fixed_buffers_ && !req.ext && (req.op == OP_READ || req.op == OP_WRITE) &&
                         (req.buf / kFixedChunk) == ((uint64_t(req.buf) + len - 1) / kFixedChunk) &&
                         use_chunk(req.buf / kFixedChunk);
        int idx = int(req.buf / kFixedChunk);

        switch (req.op) {
        case OP_READ:
            if (fixed_buf)
                io_uring_prep_read_fixed(sqe, fd, buf, len, uint64_t(req.offset), idx);
            else
                io_uring_prep_read(sqe, fd, buf, len, uint64_t(req.offset));
            break;
        case OP_WRITE:
            if (fixed_buf)
                io_uring_prep_write_fixed(sqe, fd, buf, len, uint64_t(req.offset), idx);
            else
                io_uring_prep_write(sqe, fd, buf, len, uint64_t(req.offset));
            break;
        case OP_READV:
            io_uring_prep_readv(sqe, fd, slots_[s].iov, req.iovcnt, uint64_t(req.offset));
            break;
        case OP_WRITEV:
            io_uring_prep_writev(sqe, fd, slots_[s].iov, req.iovcnt, uint64_t(req.offset));
            break;
        case OP_FALLOCATE:
            io_uring_prep_fallocate(sqe, fd, req.aux, req.offset, req.length);
            break;
        case OP_FSYNC:
            io_uring_prep_fsync(sqe, fd, req.aux ? IORING_FSYNC_DATASYNC : 0);
            break;
        case OP_TRUNCATE:
            /* IORING_OP_FTRUNCATE: the new length travels in sqe->off. */
            io_uring_prep_rw(RF_IORING_OP_FTRUNCATE, sqe, fd, nullptr, 0, uint64_t(req.offset));
            break;
        case OP_NOP:
            io_uring_prep_nop(sqe);
            flags = 0; /* no file */
            break;
        }
        io_uring_sqe_set_flags(sqe, flags);
        io_uring_sqe_set_data64(sqe, s);
    }

    /*
     * Hand every SQE in the ring to the kernel and flush completions: one
     * io_uring_submit_and_get_events() in the normal case.
     *
     * What a failing submit does to the entries (liburing 2.3; Linux 5.x
     * and 6.x io_submit_sqes()/io_uring_enter()):
     *   - liburing first publishes its local SQ tail to the shared one,
     *     then enters with to_submit = tail - head: every entry the kernel
     *     has not consumed, including any an earlier failed enter left;
     *   - the kernel consumes SQEs in order, moving the SQ head past each
     *     one it takes.  One it takes but cannot start (bad fd, bad
     *     opcode...) completes with a CQE carrying the error: not lost.
     *     Without IORING_SETUP_SUBMIT_ALL it stops right after such an
     *     entry and returns the number taken; the rest stay in the ring;
     *   - a negative return means it took nothing: -EAGAIN (no memory for
     *     a request), -EBUSY (CQ overflow backlog), -EINTR; or the ring is
     *     unusable: -EBADF/-EOPNOTSUPP (fd), -EEXIST (SINGLE_ISSUER broken),
     *     -EOWNERDEAD...
     * So an entry is never dropped, but one the kernel did not take stays
     * in the SQ ring, its slot counted in flight, until a later enter takes
     * it.  After a hard error none ever will: JavaScript would wait
     * forever for its completion, and shutdown() for the slot.
     *
     * Hence: go on while the kernel takes entries; retry a transient
     * refusal a few times, reaping in between (that frees CQ room and
     * requests); then take back whatever is left (withdraw()) and complete
     * it now: with the kernel's -errno for a hard error, with -EAGAIN for
     * the transient cases ("out of resources, retry"; not -EBUSY, which in
     * this protocol means "no free slot" and is an engine bug).
     *
     * mark: op SQEs were queued by this pump (see stall.h).
     */
    void submit(CompletionSink *out, bool mark) {
        int transient = 0;
        for (;;) {
            unsigned before = io_uring_sq_ready(r());
            int rc;
            {
                StallMark m(mark && before > 0 ? cfg_.stall : nullptr);
                rc = io_uring_submit_and_get_events(r());
            }
            unsigned left = io_uring_sq_ready(r());
            if (left == 0)
                return;
            if (left < before)
                continue; /* took some, stopped after a failed one: the rest */
            bool retry = rc >= 0 || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY;
            if (retry && ++transient <= kSubmitRetries) {
                reap(out);
                continue;
            }
            withdraw(retry ? -EAGAIN : rc, out);
            return;
        }
    }

    /*
     * Take back every SQE the kernel has not consumed: complete each op
     * among them with err (out == nullptr: just free the slot), forget a
     * doorbell read or cancel that was never submitted, and rewind the SQ
     * tail to the head.
     *
     * Rewinding is safe only because nothing but our own io_uring_enter()
     * reads the SQ ring: there is no SQPOLL thread (never requested), and
     * a Context is entered only from its own thread.  Between two enters
     * the entries past the head belong to us alone.  Only called right
     * after an enter, so liburing has published every entry (the shared
     * tail equals its local one) and the SQ array maps each of them.
     */
    void withdraw(int err, CompletionSink *out) {
        struct io_uring_sq *sq = &r()->sq;
        unsigned head = IO_URING_READ_ONCE(*sq->khead);
        for (unsigned i = head; i != sq->sqe_tail; i++) {
            const struct io_uring_sqe *sqe = &sq->sqes[sq->array[i & sq->ring_mask]];
            uint64_t ud = sqe->user_data;
            if (ud == UD_DOORBELL) {
                doorbell_armed_ = false;
            } else if (ud == UD_CANCEL) {
                cancels_pending_--;
            } else {
                uint32_t s = uint32_t(ud);
                if (out)
                    out->push(slots_[s].tag, err);
                slots_.push(s);
            }
        }
        sq->sqe_head = sq->sqe_tail = head;
        IO_URING_WRITE_ONCE(*sq->ktail, head);
    }

    /* One bounded wait of shutdown(). */
    void wait_step(int ms) {
        if (ms < 1)
            ms = 1;
        struct __kernel_timespec ts;
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (long long)(ms % 1000) * 1000000;
        struct io_uring_cqe *cqe;
        int rc = io_uring_submit_and_wait_timeout(r(), &cqe, 1, &ts, nullptr);
        reap(nullptr);
        if (rc < 0 && rc != -ETIME && rc != -EINTR)
            poll(nullptr, 0, ms); /* the ring refuses the enter: sleep, do not spin */
    }

    /* Queue an ASYNC_CANCEL of the op tagged ud; false if the SQ is full. */
    bool queue_cancel(uint64_t ud) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(r());
        if (!sqe)
            return false;
        io_uring_prep_cancel64(sqe, ud, 0);
        io_uring_sqe_set_data64(sqe, UD_CANCEL);
        cancels_pending_++;
        return true;
    }

    /*
     * Queue the doorbell read (or, on kernels without FAST_POLL where a
     * non-blocking read just fails with EAGAIN, a poll) unless one is
     * already armed.  Submitted by the caller's next enter.
     */
    void arm_doorbell() {
        if (doorbell_armed_ || doorbell_broken_)
            return;
        struct io_uring_sqe *sqe = io_uring_get_sqe(r());
        if (!sqe)
            return; /* cannot happen: the SQ has depth + 1 entries */
        if (doorbell_poll_)
            io_uring_prep_poll_add(sqe, cfg_.doorbell_fd, POLLIN);
        else
            io_uring_prep_read(sqe, cfg_.doorbell_fd, &doorbell_buf_, sizeof doorbell_buf_, 0);
        io_uring_sqe_set_data64(sqe, UD_DOORBELL);
        doorbell_armed_ = true;
    }

    void on_doorbell(int res) {
        doorbell_armed_ = false;
        if (res == -ECANCELED)
            return;
        if (res == -EAGAIN && !doorbell_poll_) {
            doorbell_poll_ = true; /* no FAST_POLL: switch to POLL_ADD */
            doorbell_rang_ = true; /* and return: maybe it did ring */
            return;
        }
        if (res < 0) {
            /* e.g. EBADF: the fd was closed under us.  Never re-arm it, or
             * every wait would return at once. */
            doorbell_broken_ = true;
            return;
        }
        if (doorbell_poll_) {
            uint64_t v; /* clear the counter the poll saw */
            ssize_t r = read(cfg_.doorbell_fd, &v, sizeof v);
            (void)r;
        }
        doorbell_rang_ = true;
    }

    /*
     * Quiet eventfd (inline mode).  The CQEs that our own enter posts (with
     * DEFER_TASKRUN, the deferred completions it runs) would signal the
     * registered eventfd once more, and the loop would wake again: one epoll
     * round, one eventfd read and one JavaScript call per batch (at QD1, per
     * request), for nothing on a slow device (on a fast one that look often
     * finds the next completion: see quiet_eventfd_wanted, below).  With the
     * quiet eventfd the eventfd is disabled (IORING_CQ_EVENTFD_DISABLED)
     * from just before the enter until after the reap, and switched back on
     * here.  A completion that was queued meanwhile did not signal it, so:
     *   - the kernel queues a deferred completion on an empty list with
     *     atomic_or(IORING_SQ_TASKRUN) (IORING_SETUP_TASKRUN_FLAG), then
     *     reads cq_flags to decide whether to signal;
     *   - we store cq_flags (enabled), fence, then read sq_flags and the CQ.
     * Each side stores, then loads, with a full barrier between (x86-64: the
     * kernel's locked or, our mfence), so at least one side sees the other:
     * the kernel signals, or we see TASKRUN.  Seeing it, we run that work now,
     * with the eventfd on (what the enter posts then signals as usual), and
     * reap.  We do not just signal ourselves: the kernel can leave TASKRUN set
     * with nothing queued (a completion added and run within one run of the
     * work), and a self-signal on a stale bit would wake the loop for nothing
     * on every pump until the next completion; the enter costs one system
     * call instead.  A CQE left in the ring (the sink was full) is the
     * other case: for it we write the eventfd ourselves.
     * quiet_eventfd_safe() limits this to where that argument holds.
     */
    void eventfd_back_on(CompletionSink &out) {
        io_uring_cq_eventfd_toggle(r(), true);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (IO_URING_READ_ONCE(*r()->sq.kflags) & IORING_SQ_TASKRUN) {
            quiet_rechecks_++;
            io_uring_get_events(r());
            reap(&out);
        }
        if (io_uring_cq_ready(r()) > 0) {
            uint64_t one = 1;
            ssize_t w = write(cfg_.doorbell_fd, &one, sizeof one);
            (void)w; /* EAGAIN: the counter is already readable */
            quiet_self_signals_++;
        }
    }

    /*
     * Where the argument above holds: DEFER_TASKRUN with TASKRUN_FLAG (while
     * the ring and its task are live, every completion, io-wq ones included,
     * is queued as deferred work rather than posted directly: io-wq ones
     * since about 6.2, every path since 6.6; the gate is 6.8, to be safe), on
     * x86-64 (a locked instruction is a full barrier; arm64's atomic_or is
     * not).  Elsewhere the spurious wake-up stays.
     *
     * Opt-in (RINGFENCE_QUIET_EVENTFD=1): on a fast device the "spurious"
     * wake-up is what catches the next completion without a sleep.  At QD1 on
     * a fresh XFS loop volume, quiet reads did 22.9k IOPS against 28.8k without;
     * on the slower virtio disk 10.3k against 8.9k (bench/eventfd.mjs, README
     * "tried" list).  The faster device is the common case for this library.
     */
    /* RINGFENCE_QUIET_EVENTFD=1, on x86-64 (read once per context, at its creation). */
    static bool quiet_eventfd_wanted() {
#if defined(__x86_64__)
        const char *on = getenv("RINGFENCE_QUIET_EVENTFD");
        return on && strcmp(on, "1") == 0;
#else
        return false;
#endif
    }

    static bool quiet_eventfd_safe(unsigned flags) {
        return (flags & IORING_SETUP_DEFER_TASKRUN) && (flags & IORING_SETUP_TASKRUN_FLAG) &&
               kernel_at_least(6, 8);
    }

    /* Consume every ready CQE; out == nullptr discards op results. */
    void reap(CompletionSink *out) {
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(r(), head, cqe) {
            uint64_t ud = cqe->user_data;
            if (ud == UD_DOORBELL) {
                on_doorbell(cqe->res);
            } else if (ud == UD_CANCEL) {
                cancels_pending_--;
            } else if (ud == LIBURING_UDATA_TIMEOUT) {
                /* liburing's own wait timeout (kernels < 5.11) */
            } else {
                /* Bounded by construction (see CompletionSink); stop if not. */
                if (out && out->room() == 0)
                    break;
                uint32_t s = uint32_t(ud);
                if (out)
                    out->push(slots_[s].tag, cqe->res);
                slots_.push(s);
            }
            seen++;
        }
        io_uring_cq_advance(r(), seen);
    }

    BackendConfig cfg_;
    OwnedRing ring_;
    unsigned setup_flags_ = 0;
    unsigned features_ = 0;
    bool async_ftruncate_ = false;
    bool fixed_buffers_ = false;
    std::string fixed_buffers_reason_;
    /* Per pool chunk (kFixedChunk): registered as a fixed buffer yet? */
    enum : uint8_t { CHUNK_UNREGISTERED = 0, CHUNK_REGISTERED = 1, CHUNK_REFUSED = 2 };
    std::vector<uint8_t> chunk_state_;
    bool fixed_files_ = false;
    bool ring_fd_registered_ = false;
    bool quiet_eventfd_ = false;
    uint64_t quiet_self_signals_ = 0, quiet_rechecks_ = 0;
    FileTable files_;
    SlotPool slots_;
    struct iovec scratch_iov_[RF_IOV_MAX];

    uint64_t doorbell_buf_ = 0;
    bool doorbell_armed_ = false;
    bool doorbell_rang_ = false;
    bool doorbell_poll_ = false;
    bool doorbell_broken_ = false;
    bool doorbell_cancel_queued_ = false;
    uint32_t cancels_pending_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_uring_backend(const BackendConfig &cfg) {
    return std::unique_ptr<Backend>(new UringBackend(cfg));
}

}  // namespace rf
