/*
 * The stall word (W_STALL in src/shm.ts).
 *
 * A watchdog on another thread must tell a worker that is slow (blocked in
 * a system call that waits for the device: the thread is alive and the
 * call will return) from one that is dead or spinning.  Heartbeats cannot:
 * a thread inside pwrite() beats no more than a dead one.  So the Context
 * brackets every call that can block for the device's sake with an atomic
 * increment of one shared int32 before and one after: an odd value means
 * "inside such a call right now", and a value that keeps changing means
 * progress.
 *
 * Which calls (and only those, so that "odd" is meaningful):
 *   - sync backend and every op an async backend runs inline: pread,
 *     pwrite, preadv, pwritev, fallocate, fsync, fdatasync, ftruncate, and
 *     the emulated XFS fallocate as one call (its sleep is the emulated
 *     device being slow; its inner fallocate/ftruncate are not marked
 *     again, which would make the word even while inside);
 *   - libaio: io_submit (it can block in the block layer);
 *   - io_uring: the enter that submits op SQEs (issue may run inline),
 *     never a pure wait for completions or the doorbell.
 * Nothing else: waits for completions or the doorbell are idle, not stalls.
 *
 * Unsigned arithmetic on the int32 JavaScript sees: wrapping at 2^32 keeps
 * the parity, and unsigned overflow is defined.
 */
#ifndef RINGFENCE_STALL_H
#define RINGFENCE_STALL_H

#include <cstdint>

namespace rf {

/* RAII: increments *word when constructed and again when destroyed. */
class StallMark {
 public:
    explicit StallMark(uint32_t *word) : word_(word) { bump(); }
    ~StallMark() { bump(); }
    StallMark(const StallMark &) = delete;
    StallMark &operator=(const StallMark &) = delete;

 private:
    /* SEQ_CST: the watchdog's Atomics.load must see "inside" before the
     * call starts and "outside" only after it returned.  No errno change. */
    void bump() {
        if (word_)
            __atomic_add_fetch(word_, 1u, __ATOMIC_SEQ_CST);
    }
    uint32_t *word_;
};

}  // namespace rf

#endif
