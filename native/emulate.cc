/*
 * Emulated XFS fallocate bug.
 *
 * Before Linux 5.5, xfs_file_fallocate() sampled the file size, did the
 * allocation (or zeroing) with the size left alone, and only then, if the
 * range extended the file, called xfs_vn_setattr_size() to set
 * i_size = offset + len.  That size update is a truncate: if an AIO+DIO
 * write had meanwhile extended the file *past* offset + len, the truncate
 * threw its data away even though the write had already completed
 * successfully.  Kernel commit 249bd9087a52 ("xfs: fix
 * fallocate/AIO+DIO race") closed the window.
 *
 * The ringfence request tracker exists to serialise exactly this kind of
 * post-EOF work.  To prove that it does on a machine whose kernel is
 * already fixed, a FALLOCATE entry flagged EMULATE_XFS_BUG is run through
 * this function, which reproduces the old sequence with a configurable,
 * deliberately wide window between "sample size" and "set size".
 *
 * It runs synchronously on the worker thread in every backend: the
 * window is the point, and a kernel-async fallocate would not have one.
 */
#include "emulate.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "ops.h"

namespace rf {

namespace {

void sleep_us(uint32_t us) {
    struct timespec ts, rem;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = long(us % 1000000) * 1000;
    /* Signals (e.g. profilers) must not shorten the window. */
    while (nanosleep(&ts, &rem) != 0 && errno == EINTR)
        ts = rem;
}

}  // namespace

int emulate_xfs_fallocate(int fd, int mode, int64_t off, int64_t len,
                          uint32_t window_us) {
    /* (1) Sample the size, as XFS did before allocating. */
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;

    /*
     * (2) Decide the new size now, from the sample.  With KEEP_SIZE the
     * caller asked for no size change, and XFS never updated it either.
     */
    int64_t end = off + len; /* validated: cannot overflow */
    bool extend = !(mode & RF_FALLOC_KEEP_SIZE) && end > int64_t(st.st_size);

    /*
     * (3) Allocate (ZERO_RANGE also zeroes) without changing the size,
     * like the old code's allocation step.
     */
    int rc;
    do {
        rc = fallocate(fd, mode | RF_FALLOC_KEEP_SIZE, off, len);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0)
        return -errno;

    /* (4) The race window: concurrent writes past `end` land here. */
    if (window_us)
        sleep_us(window_us);

    /*
     * (5) The buggy size update: a truncate to the size computed in (2).
     * If a write extended the file beyond `end` during the window, this
     * silently discards that data: exactly the bug.
     */
    if (extend) {
        do {
            rc = ftruncate(fd, end);
        } while (rc != 0 && errno == EINTR);
        if (rc != 0)
            return -errno;
    }
    return 0;
}

}  // namespace rf
