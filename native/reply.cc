/* Replies sent at completion time: see reply.h. */
#include "reply.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "ops.h"

namespace rf {

Replies::Replies(uint32_t slots, const Pool &pool)
    : fd_(REPLY_MAX, -1), uses_(REPLY_MAX, 0), open_(REPLY_MAX, 0), gen_(REPLY_MAX, 0), arm_(slots), pool_(pool) {
    free_.reserve(REPLY_MAX);
    for (uint32_t i = REPLY_MAX; i-- > 0;)
        free_.push_back(i);
}

Replies::~Replies() { close_all(); }

int Replies::open(int fd) {
    if (free_.empty())
        return -ENFILE;
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return -errno;
    uint32_t rec = free_.back();
    free_.pop_back();
    fd_[rec] = d;
    open_[rec] = 1;
    gen_[rec] = (gen_[rec] + 1) & REPLY_GEN_MASK;
    return int(rec | gen_[rec] << REPLY_REC_BITS);
}

int32_t Replies::current(uint32_t handle) const {
    uint32_t rec = handle & (REPLY_MAX - 1), gen = handle >> REPLY_REC_BITS;
    if (gen > REPLY_GEN_MASK || !open_[rec] || gen_[rec] != gen)
        return -1;
    return int32_t(rec);
}

void Replies::maybe_free(uint32_t rec) {
    if (!open_[rec] && fd_[rec] < 0 && uses_[rec] == 0)
        free_.push_back(rec);
}

void Replies::close(uint32_t handle) {
    int32_t r = current(handle);
    if (r < 0)
        return;
    uint32_t rec = uint32_t(r);
    open_[rec] = 0;
    if (fd_[rec] >= 0) {
        ::close(fd_[rec]);
        fd_[rec] = -1;
    }
    maybe_free(rec);
}

void Replies::close_all() {
    for (uint32_t rec = 0; rec < REPLY_MAX; rec++)
        if (fd_[rec] >= 0) {
            ::close(fd_[rec]);
            fd_[rec] = -1;
            open_[rec] = 0;
        }
}

void Replies::submitted(const int32_t *entry, int32_t r, const ExtBuf *ext) {
    /* Each word read once: the batch is JavaScript's memory. */
    const volatile int32_t *e = entry;
    uint32_t tag = uint32_t(e[E_TAG]), slot = tag >> 3, word0 = uint32_t(e[E_OP]), op = word0 & OP_MASK;
    int32_t len = e[E_LEN];
    uint32_t buf = uint32_t(e[E_BUF]);
    if (r < 1 || (tag & 7) != 0 || slot >= arm_.size())
        return;
    int32_t cur = current(uint32_t(r - 1)); /* a stale handle (record closed, maybe reopened): -1 */
    if (cur < 0 || (op != OP_WRITE && op != OP_READ) || len <= 0)
        return;
    const uint8_t *data = nullptr;
    if (op == OP_READ) {
        /* The memory the kernel reads into, checked as validate_entry() checks it (a bad one: no arm). */
        bool is_ext = (word0 & FLAG_EXT) != 0;
        const uint8_t *base = is_ext ? (ext != nullptr ? ext->data : nullptr) : pool_.base;
        uint64_t size = is_ext ? (ext != nullptr ? ext->length : 0) : pool_.size;
        if (base == nullptr || uint64_t(buf) + uint64_t(len) > size)
            return;
        data = base + buf;
    }
    uint32_t rec = uint32_t(cur);
    Arm &a = arm_[slot];
    if (a.rec >= 0) { /* a stale arm (its request never completed): forget it */
        uses_[a.rec]--;
        pending_total_--;
        maybe_free(uint32_t(a.rec));
    }
    a.rec = int32_t(rec);
    a.len = len;
    a.data = data;
    uses_[rec]++;
    pending_total_++;
}

void Replies::completed(int32_t tag, int32_t res, int32_t *words, size_t nwords) {
    uint32_t t = uint32_t(tag), slot = t >> 3;
    if ((t & 7) != 0 || slot >= arm_.size() || arm_[slot].rec < 0)
        return;
    Arm a = arm_[slot];
    arm_[slot].rec = -1;
    uint32_t rec = uint32_t(a.rec);
    uses_[rec]--;
    pending_total_--;
    size_t w = size_t(rec) * REPLY_WORDS;
    int32_t data_len = a.data != nullptr ? a.len : 0;
    if (res == a.len && fd_[rec] >= 0 && w + REPLY_WORDS <= nwords && words[w + R_STATE] == REPLY_ARMED &&
        words[w + R_DATA] == data_len) {
        struct iovec iov[2] = {{words + w, REPLY_BYTES}, {const_cast<uint8_t *>(a.data), size_t(data_len)}};
        struct msghdr mh = {};
        mh.msg_iov = iov;
        mh.msg_iovlen = data_len > 0 ? 2 : 1;
        ssize_t n = sendmsg(fd_[rec], &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        words[w + R_RESULT] = n >= 0 ? int32_t(n) : -errno;
        words[w + R_STATE] = REPLY_TRIED;
    }
    maybe_free(rec);
}

}  // namespace rf
