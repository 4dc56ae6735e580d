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
 *   - the whole pool as fixed buffers (<= 1 GiB per iovec: kernel limit),
 *     used by READ/WRITE whose range lies in one such chunk;
 *   - a sparse fixed file table of MAX_FILES, indexed by file id.
 */
#include "uring.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <vector>

#include "backend.h"

namespace rf {

/* ---- setup helpers (also used by probe.cc) ---- */

int uring_init_best(unsigned entries, struct io_uring *ring,
                    struct io_uring_params *params, unsigned *flags) {
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

constexpr uint64_t UD_DOORBELL = ~uint64_t(0);
constexpr uint64_t UD_CANCEL = ~uint64_t(0) - 1;
constexpr uint64_t kFixedChunk = uint64_t(1) << 30; /* kernel max per buffer */

class UringBackend : public Backend {
 public:
    explicit UringBackend(const BackendConfig &cfg)
        : cfg_(cfg), slots_(cfg.depth) {
        /* +1: the doorbell read may be queued next to a full batch. */
        struct io_uring_params p;
        int rc = uring_init_best(cfg.depth + 1, &ring_, &p, &setup_flags_);
        if (rc < 0)
            throw BackendError(uring_init_error(rc));
        features_ = p.features;

        if (struct io_uring_probe *probe = io_uring_get_probe_ring(&ring_)) {
            async_ftruncate_ = io_uring_opcode_supported(probe, RF_IORING_OP_FTRUNCATE);
            io_uring_free_probe(probe);
        }
        register_pool();
        fixed_files_ = io_uring_register_files_sparse(&ring_, MAX_FILES) == 0;
    }

    ~UringBackend() override {
        if (live_)
            io_uring_queue_exit(&ring_);
    }

    void pump(const int32_t *batch, uint32_t n, CompletionSink &out,
              int wait_ms) override {
        bool queued = false;
        for (uint32_t i = 0; i < n; i++) {
            Request req;
            /* Validate straight into the slot we would use, to avoid a copy. */
            struct iovec *iov = slots_.empty() ? scratch_iov_ : slots_[slots_.peek()].iov;
            int rc = validate_entry(batch + size_t(i) * ENTRY_WORDS, cfg_.pool,
                                    files_, &req, iov);
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
                out.push(req.tag, execute_sync(req, iov, cfg_));
                continue;
            }
            struct io_uring_sqe *sqe = slots_.empty() ? nullptr : io_uring_get_sqe(&ring_);
            if (!sqe) {
                out.push(req.tag, -EBUSY);
                continue;
            }
            uint32_t s = slots_.pop();
            slots_[s].tag = req.tag;
            prepare(sqe, s, req);
            queued = true;
        }

        /*
         * One enter: submit and run deferred completions.  Errors (EAGAIN,
         * EBUSY, EINTR) leave unsubmitted SQEs in the ring; the next enter
         * submits them, so there is nothing to undo here.
         */
        if (queued || slots_.inflight() > 0 || doorbell_armed_)
            io_uring_submit_and_get_events(&ring_);
        reap(&out);

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
        io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
        reap(&out);
        doorbell_rang_ = false; /* returning now is the wake-up */
    }

    uint32_t inflight() const override { return slots_.inflight(); }

    void set_file(uint32_t id, int fd) override {
        clear_file(id);
        files_.fd[id] = fd;
        if (fixed_files_)
            files_.fixed[id] = io_uring_register_files_update(&ring_, id, &fd, 1) == 1;
    }

    void clear_file(uint32_t id) override {
        if (files_.fixed[id]) {
            /* In-flight ops keep their own reference: this is safe. */
            int none = -1;
            io_uring_register_files_update(&ring_, id, &none, 1);
            files_.fixed[id] = false;
        }
        files_.fd[id] = -1;
    }

    void shutdown() override {
        while (slots_.inflight() > 0)
            enter_and_discard();
        /*
         * The doorbell read points into this object: cancel it and see its
         * CQE before the ring goes away, or a late ring could complete it
         * into freed memory while the kernel tears the ring down.
         */
        if (doorbell_armed_) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring_);
            if (sqe) {
                io_uring_prep_cancel64(sqe, UD_DOORBELL, 0);
                io_uring_sqe_set_data64(sqe, UD_CANCEL);
                cancel_pending_ = true;
            }
            while (doorbell_armed_ || cancel_pending_)
                enter_and_discard();
        }
        io_uring_queue_exit(&ring_);
        live_ = false;
    }

    void fill_info(BackendInfo *info) const override {
        info->backend = "io_uring";
        info->fixed_buffers = fixed_buffers_;
        info->fixed_files = fixed_files_;
        info->async_ftruncate = async_ftruncate_;
        info->setup_flags = uring_setup_flag_names(setup_flags_);
        info->sync_ops.push_back("emulatedFallocate");
        if (!async_ftruncate_)
            info->sync_ops.push_back("truncate");
    }

 private:
    void register_pool() {
        if (cfg_.pool.size == 0)
            return;
        std::vector<struct iovec> chunks;
        for (uint64_t off = 0; off < cfg_.pool.size; off += kFixedChunk) {
            uint64_t len = cfg_.pool.size - off;
            if (len > kFixedChunk)
                len = kFixedChunk;
            chunks.push_back({cfg_.pool.base + off, size_t(len)});
        }
        fixed_buffers_ = io_uring_register_buffers(&ring_, chunks.data(),
                                                   unsigned(chunks.size())) == 0;
    }

    void prepare(struct io_uring_sqe *sqe, uint32_t s, const Request &req) {
        int fd = req.fd;
        unsigned flags = 0;
        if (req.fixed_file) {
            fd = int(req.file);
            flags |= IOSQE_FIXED_FILE;
        }
        uint8_t *buf = cfg_.pool.base + req.buf;
        unsigned len = unsigned(req.length);
        /* A fixed buffer op must stay inside one registered chunk. */
        bool fixed_buf = fixed_buffers_ &&
                         (req.buf / kFixedChunk) == ((uint64_t(req.buf) + len - 1) / kFixedChunk);
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
     * Queue the doorbell read (or, on kernels without FAST_POLL where a
     * non-blocking read just fails with EAGAIN, a poll) unless one is
     * already armed.  Submitted by the caller's next enter.
     */
    void arm_doorbell() {
        if (doorbell_armed_ || doorbell_broken_)
            return;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring_);
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

    /* Consume every ready CQE; out == nullptr discards op results. */
    void reap(CompletionSink *out) {
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            uint64_t ud = cqe->user_data;
            if (ud == UD_DOORBELL) {
                on_doorbell(cqe->res);
            } else if (ud == UD_CANCEL) {
                cancel_pending_ = false;
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
        io_uring_cq_advance(&ring_, seen);
    }

    void enter_and_discard() {
        io_uring_submit_and_wait(&ring_, 1); /* EINTR: just loop */
        reap(nullptr);
    }

    BackendConfig cfg_;
    struct io_uring ring_;
    bool live_ = true;
    unsigned setup_flags_ = 0;
    unsigned features_ = 0;
    bool async_ftruncate_ = false;
    bool fixed_buffers_ = false;
    bool fixed_files_ = false;
    FileTable files_;
    SlotPool slots_;
    struct iovec scratch_iov_[RF_IOV_MAX];

    uint64_t doorbell_buf_ = 0;
    bool doorbell_armed_ = false;
    bool doorbell_rang_ = false;
    bool doorbell_poll_ = false;
    bool doorbell_broken_ = false;
    bool cancel_pending_ = false;
};

}  // namespace

std::unique_ptr<Backend> make_uring_backend(const BackendConfig &cfg) {
    return std::unique_ptr<Backend>(new UringBackend(cfg));
}

}  // namespace rf
