/*
 * The Linux-native AIO (libaio) backend.
 *
 * Kernel AIO is only truly asynchronous for O_DIRECT reads and writes, so
 * only READ/WRITE/READV/WRITEV are queued.  The rest run synchronously on
 * the worker thread inside pump() (reported in info().syncOps):
 *   - FALLOCATE: there is no IOCB_CMD for it;
 *   - FSYNC: IOCB_CMD_FSYNC/FDSYNC exist but most filesystems rejected
 *     them (EINVAL) before 4.18 and they still run on a workqueue, so a
 *     plain fsync/fdatasync is both simpler and more predictable;
 *   - TRUNCATE: no IOCB_CMD for it;
 *   - NOP: nothing to queue.
 *
 * Every iocb carries io_set_eventfd(doorbell), so kernel completions and
 * the main thread's doorbell rings land on the same eventfd and a single
 * poll() waits for either.
 */
#include <fcntl.h>
#include <libaio.h>
#include <sys/uio.h>
#include <linux/fs.h>

#include <cerrno>
#include <cstdint>
#include <vector>

#include "backend.h"
#include "stall.h"

namespace rf {

namespace {

class AioBackend : public Backend {
 public:
    explicit AioBackend(const BackendConfig &cfg)
        : cfg_(cfg), slots_(cfg.depth), reqs_(cfg.depth), iocbs_(cfg.depth), queue_(cfg.depth),
          events_(cfg.depth) {
        int rc = io_setup(int(cfg.depth), &ctx_);
        if (rc < 0) {
            ctx_ = nullptr;
            std::string msg = "io_setup(" + std::to_string(cfg.depth) +
                              ") failed: " + errno_name(rc);
            if (rc == -EAGAIN)
                msg += " (fs.aio-max-nr exhausted: raise /proc/sys/fs/aio-max-nr "
                       "or lower depth)";
            else if (rc == -ENOSYS || rc == -EPERM)
                msg += " (kernel AIO unavailable or blocked by seccomp)";
            throw BackendError(msg + "; use backend 'io_uring' or 'sync'");
        }
    }

    ~AioBackend() override {
        if (ctx_)
            io_destroy(ctx_);
    }

    void pump(const int32_t *batch, uint32_t n, CompletionSink &out,
              int wait_ms, const ExtBuf *ext) override {
        uint32_t nq = 0;
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
             * Inline mode (inline.h): what would block the loop thread goes to a
             * helper: the ops libaio cannot queue, and all I/O on a file opened
             * without O_DIRECT (io_submit runs buffered I/O synchronously).
             */
            if (cfg_.offload != nullptr && (!queueable(req.op) || !direct_[req.file])) {
                cfg_.offload->run(req, iov);
                continue;
            }
            if (!queueable(req.op)) {
                out.push(req.tag, execute_sync(req, iov, cfg_));
                continue;
            }
            if (slots_.empty()) {
                out.push(req.tag, -EBUSY);
                continue;
            }
            uint32_t s = slots_.pop();
            slots_[s].tag = req.tag;
            reqs_[s] = req;
            queue_[nq++] = prepare(s, req);
        }
        submit(nq, out);

        reap(out, 0, &kZero);
        if (out.count() == 0 && wait_ms > 0) {
            /* Completions and doorbell rings share the eventfd. */
            wait_doorbell(cfg_.doorbell_fd, wait_ms);
            reap(out, 0, &kZero);
        }
    }

    uint32_t inflight() const override { return slots_.inflight(); }
    void set_file(uint32_t id, int fd) override {
        files_.fd[id] = fd;
        int fl = fcntl(fd, F_GETFL);
        direct_[id] = fl >= 0 && (fl & O_DIRECT) != 0;
    }
    void clear_file(uint32_t id) override {
        files_.fd[id] = -1;
        direct_[id] = false;
    }

    /*
     * Never gives up: io_destroy() itself waits for whatever is still in
     * the kernel, so nothing can write into freed memory afterwards.
     */
    bool shutdown() override {
        /* Results are discarded: reap into a sink with no room. */
        while (slots_.inflight() > 0) {
            int got = io_getevents(ctx_, 1, long(events_.size()), events_.data(), nullptr);
            for (int i = 0; i < got; i++)
                slots_.push(slot_of(events_[i]));
            if (got < 0 && got != -EINTR)
                break; /* cannot happen with a live ctx; do not spin */
        }
        io_destroy(ctx_);
        ctx_ = nullptr;
        return true;
    }

    void fill_info(BackendInfo *info) const override {
        info->backend = "libaio";
        info->sync_ops = {"fallocate", "fsync", "truncate", "nop"};
    }

 private:
    static constexpr struct timespec kZero = {0, 0};

    static bool queueable(uint32_t op) {
        return op == OP_READ || op == OP_WRITE || op == OP_READV || op == OP_WRITEV;
    }

    static uint32_t slot_of(const struct io_event &ev) {
        return uint32_t(reinterpret_cast<uintptr_t>(ev.data));
    }

    struct iocb *prepare(uint32_t s, const Request &req) {
        struct iocb *cb = &iocbs_[s];
        void *buf = req.mem;
        switch (req.op) {
        case OP_READ:
            io_prep_pread(cb, req.fd, buf, size_t(req.length), req.offset);
            break;
        case OP_WRITE:
            io_prep_pwrite(cb, req.fd, buf, size_t(req.length), req.offset);
            break;
        case OP_READV:
            io_prep_preadv(cb, req.fd, slots_[s].iov, int(req.iovcnt), req.offset);
            break;
        case OP_WRITEV:
            io_prep_pwritev(cb, req.fd, slots_[s].iov, int(req.iovcnt), req.offset);
            break;
        }
        io_set_eventfd(cb, cfg_.doorbell_fd);
        /*
         * Inline mode: O_DIRECT io_submit can still block (an appending or
         * extent-allocating write, the inode lock): RWF_NOWAIT makes the kernel
         * refuse with EAGAIN instead, and the op goes to a helper (retry_on_helper).
         */
        if (cfg_.offload != nullptr && nowait_)
            cb->aio_rw_flags = RWF_NOWAIT;
        cb->data = reinterpret_cast<void *>(uintptr_t(s));
        return cb;
    }

    void fail(struct iocb *cb, int err, CompletionSink &out) {
        uint32_t s = uint32_t(reinterpret_cast<uintptr_t>(cb->data));
        out.push(slots_[s].tag, err);
        slots_.push(s);
    }

    /* Inline mode: the kernel would have blocked (EAGAIN): run the op on a helper instead. */
    void retry_on_helper(uint32_t s) {
        cfg_.offload->run(reqs_[s], slots_[s].iov); /* copies the request and its iovecs */
        slots_.push(s);
    }

    /*
     * One io_submit for the whole batch in the normal case.  io_submit may
     * take only a prefix; a negative return means the first remaining
     * iocb was rejected (complete it with that error and go on), except
     * EAGAIN, which means "kernel out of resources now": reap something
     * and retry while anything of ours is in the kernel.
     */
    void submit(uint32_t nq, CompletionSink &out) {
        uint32_t done = 0;
        while (done < nq) {
            int rc;
            {
                StallMark m(cfg_.stall); /* may block in the block layer */
                rc = io_submit(ctx_, long(nq - done), &queue_[done]);
            }
            if (rc > 0) {
                done += uint32_t(rc);
                continue;
            }
            if (rc == -EINTR)
                continue;
            if (cfg_.offload != nullptr) {
                /*
                 * Inline: never wait on the loop thread.  EAGAIN (would block, or
                 * no kernel resources now) goes to a helper; so does a kernel that
                 * does not know RWF_NOWAIT for AIO (EINVAL/EOPNOTSUPP: stop asking).
                 */
                /* (Judged by this iocb's own flag: the rest of a batch was prepared with it too.) */
                bool asked = (queue_[done]->aio_rw_flags & RWF_NOWAIT) != 0;
                if (rc == -EAGAIN || rc == 0 || ((rc == -EINVAL || rc == -EOPNOTSUPP) && asked)) {
                    if (rc == -EINVAL || rc == -EOPNOTSUPP) nowait_ = false;
                    retry_on_helper(uint32_t(reinterpret_cast<uintptr_t>(queue_[done++]->data)));
                    continue;
                }
                fail(queue_[done++], rc, out);
                continue;
            }
            if (rc == -EAGAIN || rc == 0) {
                uint32_t in_kernel = slots_.inflight() - (nq - done);
                if (in_kernel > 0 && reap(out, 1, nullptr) > 0)
                    continue;
                rc = -EAGAIN;
            }
            fail(queue_[done++], rc, out);
        }
    }

    /* Move up to the sink's room of completed events into it. */
    int reap(CompletionSink &out, long min_nr, const struct timespec *ts) {
        long room = long(out.room());
        if (room > long(events_.size()))
            room = long(events_.size());
        if (room == 0 || slots_.inflight() == 0)
            return 0;
        int got = io_getevents(ctx_, min_nr, room, events_.data(),
                               const_cast<struct timespec *>(ts));
        if (got < 0)
            return 0; /* EINTR: the next pump reaps */
        for (int i = 0; i < got; i++) {
            uint32_t s = slot_of(events_[i]);
            /* res is -errno or a byte count <= 2^31-1. */
            long res = long(events_[i].res);
            if (res == -EAGAIN && cfg_.offload != nullptr) {
                retry_on_helper(s); /* RWF_NOWAIT refused it after submission */
                continue;
            }
            out.push(slots_[s].tag, int32_t(res));
            slots_.push(s);
        }
        return got;
    }

    BackendConfig cfg_;
    io_context_t ctx_ = nullptr;
    FileTable files_;
    /* Opened with O_DIRECT (only those are queued in inline mode). */
    bool direct_[MAX_FILES] = {};
    SlotPool slots_;
    /* The validated request of each slot (inline mode retries it on a helper). */
    std::vector<Request> reqs_;
    /* Inline mode asks for RWF_NOWAIT until the kernel says it does not know it. */
    bool nowait_ = true;
    std::vector<struct iocb> iocbs_;
    std::vector<struct iocb *> queue_;
    std::vector<struct io_event> events_;
    struct iovec scratch_iov_[RF_IOV_MAX];
};

constexpr struct timespec AioBackend::kZero;

}  // namespace

std::unique_ptr<Backend> make_aio_backend(const BackendConfig &cfg) {
    return std::unique_ptr<Backend>(new AioBackend(cfg));
}

}  // namespace rf
