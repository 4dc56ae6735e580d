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
 * while the kernel answers EINVAL (flag unknown to it).  Returns 0 or
 * -errno from the last attempt; on success *flags holds what was used.
 */
int uring_init_best(unsigned entries, struct io_uring *ring,
                    struct io_uring_params *params, unsigned *flags);

/* Human-readable names for setup flags and IORING_FEAT_* bits. */
std::vector<std::string> uring_setup_flag_names(unsigned flags);
std::vector<std::string> uring_feature_names(unsigned features);

/* "io_uring_queue_init failed: EPERM (...); use backend ..." */
std::string uring_init_error(int err);

}  // namespace rf

#endif
