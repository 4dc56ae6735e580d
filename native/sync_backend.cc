/*
 * The synchronous backend: every op is a plain system call made from
 * pump() on the worker thread.
 *
 * It is the fallback when neither io_uring nor libaio can be used (both
 * disabled by seccomp in some containers, io_uring by sysctl), and the
 * reference the async backends are tested against.  execute_sync() is
 * also used by the async backends for the ops they run inline.
 */
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "backend.h"
#include "emulate.h"
#include "stall.h"

namespace rf {

namespace {

/* Results are int32: rw lengths are < 2^31, so a byte count always fits. */
int result(ssize_t rc) { return rc < 0 ? -errno : int(rc); }

}  // namespace

int execute_sync(const Request &req, const struct iovec *iov,
                 const BackendConfig &cfg) {
    ssize_t rc;
    uint8_t *buf = req.mem; /* READ/WRITE only */
    /*
     * Each attempt is bracketed on its own (see stall.h): "odd" must mean
     * "inside the call", not "between an EINTR and the retry".
     */
    uint32_t *stall = cfg.stall;
    switch (req.op) {
    case OP_READ:
        do {
            StallMark m(stall);
            rc = pread(req.fd, buf, size_t(req.length), req.offset);
        } while (rc < 0 && errno == EINTR);
        return result(rc);
    case OP_WRITE:
        do {
            StallMark m(stall);
            rc = pwrite(req.fd, buf, size_t(req.length), req.offset);
        } while (rc < 0 && errno == EINTR);
        return result(rc);
    case OP_READV:
        do {
            StallMark m(stall);
            rc = preadv(req.fd, iov, int(req.iovcnt), req.offset);
        } while (rc < 0 && errno == EINTR);
        return result(rc);
    case OP_WRITEV:
        do {
            StallMark m(stall);
            rc = pwritev(req.fd, iov, int(req.iovcnt), req.offset);
        } while (rc < 0 && errno == EINTR);
        return result(rc);
    case OP_FALLOCATE:
        if (req.flags & FLAG_EMULATE_XFS_BUG) {
            /* One emulated fallocate = one blocking call, window included. */
            StallMark m(stall);
            return emulate_xfs_fallocate(req.fd, req.aux, req.offset,
                                         req.length, cfg.emulate_window_us);
        }
        do {
            StallMark m(stall);
            rc = fallocate(req.fd, req.aux, req.offset, req.length);
        } while (rc < 0 && errno == EINTR);
        return result(rc);
    case OP_FSYNC:
        do {
            StallMark m(stall);
            rc = req.aux ? fdatasync(req.fd) : fsync(req.fd);
        } while (rc < 0 && errno == EINTR);
        return result(rc);
    case OP_TRUNCATE:
        do {
            StallMark m(stall);
            rc = ftruncate(req.fd, req.offset);
        } while (rc < 0 && errno == EINTR);
        return result(rc);
    case OP_NOP:
        return 0;
    }
    return -EINVAL;
}

namespace {

class SyncBackend : public Backend {
 public:
    explicit SyncBackend(const BackendConfig &cfg) : cfg_(cfg) {}

    void pump(const int32_t *batch, uint32_t n, CompletionSink &out,
              int wait_ms, const ExtBuf *ext) override {
        for (uint32_t i = 0; i < n; i++) {
            Request req;
            int rc = validate_entry(batch + size_t(i) * ENTRY_WORDS, cfg_.pool,
                                    files_, &req, iov_, ext ? ext + i : nullptr);
            if (rc == 0 && cfg_.offload != nullptr) {
                /* Inline mode: every op blocks, so every op runs on a helper (inline.h). */
                cfg_.offload->run(req, iov_);
                continue;
            }
            if (rc == 0)
                rc = execute_sync(req, iov_, cfg_);
            out.push(req.tag, rc);
        }
        /* Nothing is ever in flight: waiting only means the doorbell. */
        if (out.count() == 0 && wait_ms > 0)
            wait_doorbell(cfg_.doorbell_fd, wait_ms);
    }

    uint32_t inflight() const override { return 0; }
    void set_file(uint32_t id, int fd) override { files_.fd[id] = fd; }
    void clear_file(uint32_t id) override { files_.fd[id] = -1; }
    bool shutdown() override { return true; }

    void fill_info(BackendInfo *info) const override {
        info->backend = "sync";
        info->sync_ops = {"read", "write", "readv", "writev", "fallocate",
                          "fsync", "truncate", "nop"};
    }

 private:
    BackendConfig cfg_;
    FileTable files_;
    struct iovec iov_[RF_IOV_MAX];
};

}  // namespace

std::unique_ptr<Backend> make_sync_backend(const BackendConfig &cfg) {
    return std::unique_ptr<Backend>(new SyncBackend(cfg));
}

}  // namespace rf
