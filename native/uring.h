/*
 * io_uring setup helpers shared by the io_uring backend and probe().
 */
#ifndef RINGFENCE_URING_H
#define RINGFENCE_URING_H

#include <liburing.h>

#include <string>
#include <vector>

namespace rf {

/* Not in liburing 2.3's headers: added in Linux 6.9. */
constexpr unsigned RF_IORING_OP_FTRUNCATE = 55;

/*
 * io_uring_queue_init_params() with the best setup flags the kernel takes:
 * SINGLE_ISSUER|DEFER_TASKRUN|COOP_TASKRUN (+SUBMIT_ALL), dropping flags
 * while the kernel answers EINVAL (flag unknown to it).  `extra` is added to
 * the DEFER_TASKRUN candidates (an inline ring with the quiet eventfd:
 * IORING_SETUP_TASKRUN_FLAG).  Returns 0 or -errno from the last attempt; on success
 * *flags holds what was used.
 */
int uring_init_best(unsigned entries, struct io_uring *ring,
                    struct io_uring_params *params, unsigned *flags, unsigned extra = 0);

/* Human-readable names for setup flags and IORING_FEAT_* bits. */
std::vector<std::string> uring_setup_flag_names(unsigned flags);
std::vector<std::string> uring_feature_names(unsigned features);

/* "io_uring_queue_init failed: EPERM (...); use backend ..." */
std::string uring_init_error(int err);

/*
 * Owns one struct io_uring: io_uring_queue_exit() runs in the destructor
 * unless the ring was never set up, already exited, or released.  It
 * exists so that every path out of a function or constructor that set up
 * a ring (a throw after io_uring_queue_init included) closes the ring fd
 * and unmaps the rings exactly once.
 */
class OwnedRing {
 public:
    OwnedRing() = default;
    ~OwnedRing() { exit(); }
    OwnedRing(const OwnedRing &) = delete;
    OwnedRing &operator=(const OwnedRing &) = delete;

    /* uring_init_best() into this (not yet live) ring; 0 or -errno. */
    int init_best(unsigned entries, struct io_uring_params *params, unsigned *flags, unsigned extra = 0) {
        int rc = uring_init_best(entries, &ring_, params, flags, extra);
        live_ = rc == 0;
        return rc;
    }
    struct io_uring *get() { return &ring_; }
    const struct io_uring *get() const { return &ring_; }
    bool live() const { return live_; }

    /* Tear the ring down now (idempotent). */
    void exit() {
        if (live_)
            io_uring_queue_exit(&ring_);
        live_ = false;
    }

    /*
     * Give up ownership without tearing down: the fd and the mappings stay
     * for the life of the process.  For a ring the kernel may still write
     * into (see UringBackend::shutdown()).
     */
    void release() { live_ = false; }

 private:
    struct io_uring ring_ = {};
    bool live_ = false;
};

}  // namespace rf

#endif
