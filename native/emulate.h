/*
 * Emulation of the pre-Linux-5.5 XFS fallocate size-update race.
 * See emulate.cc for the story.
 */
#ifndef RINGFENCE_EMULATE_H
#define RINGFENCE_EMULATE_H

#include <cstdint>

namespace rf {

/*
 * fallocate(fd, mode, off, len) the way XFS did it before kernel commit
 * 249bd9087a52: allocate/zero without touching i_size, sleep window_us,
 * then set the size to off+len if the range ended past the EOF sampled at
 * the start.  Runs synchronously; returns 0 or -errno.
 */
int emulate_xfs_fallocate(int fd, int mode, int64_t off, int64_t len,
                          uint32_t window_us);

}  // namespace rf

#endif
