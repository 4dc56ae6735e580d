/*
 * Entry validation: see validate.h.
 *
 * All arithmetic on untrusted values is done in 64 bits (or checked before
 * adding) so that no combination of words can wrap around and pass.
 */
#include "validate.h"

#include <cerrno>
#include <cstring>

namespace rf {

namespace {

/* Read a word once.  volatile: the compiler must not re-load it later. */
inline int32_t load(const int32_t *entry, uint32_t i) {
    return static_cast<const volatile int32_t *>(entry)[i];
}

inline int64_t join64(int32_t lo, int32_t hi) {
    return static_cast<int64_t>((static_cast<uint64_t>(static_cast<uint32_t>(hi)) << 32) |
                                static_cast<uint32_t>(lo));
}

constexpr int64_t kInt64Max = INT64_MAX;

bool fallocate_mode_ok(int32_t mode) {
    switch (mode) {
    case 0:
    case RF_FALLOC_KEEP_SIZE:
    case RF_FALLOC_PUNCH_HOLE | RF_FALLOC_KEEP_SIZE:
    case RF_FALLOC_ZERO_RANGE:
    case RF_FALLOC_ZERO_RANGE | RF_FALLOC_KEEP_SIZE:
        return true;
    default:
        return false;
    }
}

/*
 * READV/WRITEV: the descriptor table lives in the (shared) pool.  Copy it
 * out first and validate the copy, so the iovecs handed to the kernel are
 * exactly the ones that were checked.
 */
int decode_iovecs(const Pool &pool, uint32_t table, uint32_t count,
                  int64_t expect, struct iovec *iov) {
    if (count < 1 || count > RF_IOV_MAX)
        return -EINVAL;
    if (table % 8 != 0)
        return -EFAULT;
    uint64_t table_end = static_cast<uint64_t>(table) + uint64_t(count) * IOV_DESC_BYTES;
    if (table_end > pool.size)
        return -EFAULT;

    uint32_t desc[RF_IOV_MAX * 2];
    memcpy(desc, pool.base + table, count * IOV_DESC_BYTES);

    uint64_t sum = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t off = desc[2 * i], len = desc[2 * i + 1];
        if (len == 0)
            return -EINVAL;
        if (uint64_t(off) + len > pool.size)
            return -EFAULT;
        sum += len; /* <= 64 * 2^32: cannot overflow */
        iov[i].iov_base = pool.base + off;
        iov[i].iov_len = len;
    }
    if (sum != static_cast<uint64_t>(expect))
        return -EINVAL;
    return 0;
}

}  // namespace

int validate_entry(const int32_t *entry, const Pool &pool,
                   const FileTable &files, Request *req, struct iovec *iov,
                   const ExtBuf *ext) {
    int32_t w[ENTRY_WORDS];
    for (uint32_t i = 0; i < ENTRY_WORDS; i++)
        w[i] = load(entry, i);

    req->tag = w[E_TAG];
    uint32_t word0 = static_cast<uint32_t>(w[E_OP]);
    req->op = word0 & OP_MASK;
    req->flags = word0 & ~OP_MASK;
    req->iovcnt = 0;

    if (req->op < 1 || req->op > OP_MAX)
        return -EINVAL;
    if (req->flags & ~FLAGS_KNOWN)
        return -EINVAL;
    /* The emulation flag only has a meaning for FALLOCATE. */
    if ((req->flags & FLAG_EMULATE_XFS_BUG) && req->op != OP_FALLOCATE)
        return -EINVAL;
    /* A caller's buffer only for READ/WRITE, and only with one next to the entry. */
    req->ext = (req->flags & FLAG_EXT) != 0;
    if (req->ext && req->op != OP_READ && req->op != OP_WRITE)
        return -EINVAL;
    if (req->ext && (ext == nullptr || ext->data == nullptr))
        return -EFAULT;

    /* NOP touches no file, so it does not need a file id. */
    if (req->op == OP_NOP)
        return 0;

    uint32_t file = static_cast<uint32_t>(w[E_FILE]);
    if (file >= MAX_FILES || files.fd[file] < 0)
        return -EBADF;
    req->file = file;
    req->fd = files.fd[file];
    req->fixed_file = files.fixed[file];

    req->offset = join64(w[E_OFF_LO], w[E_OFF_HI]);
    if (req->offset < 0)
        return -EINVAL;

    switch (req->op) {
    case OP_READ:
    case OP_WRITE: {
        int32_t len = w[E_LEN];
        if (len < 1)
            return -EINVAL;
        if (req->offset > kInt64Max - len)
            return -EINVAL;
        uint32_t buf = static_cast<uint32_t>(w[E_BUF]);
        if (uint64_t(buf) + uint64_t(len) > (req->ext ? ext->length : pool.size))
            return -EFAULT;
        req->length = len;
        req->buf = buf;
        req->mem = (req->ext ? ext->data : pool.base) + buf;
        return 0;
    }
    case OP_READV:
    case OP_WRITEV: {
        int32_t len = w[E_LEN];
        if (len < 1)
            return -EINVAL;
        if (req->offset > kInt64Max - len)
            return -EINVAL;
        int rc = decode_iovecs(pool, static_cast<uint32_t>(w[E_BUF]),
                               static_cast<uint32_t>(w[E_AUX]), len, iov);
        if (rc)
            return rc;
        req->length = len;
        req->iovcnt = static_cast<uint32_t>(w[E_AUX]);
        return 0;
    }
    case OP_FALLOCATE: {
        int64_t len = join64(w[E_LEN], w[E_BUF]);
        if (len <= 0)
            return -EINVAL;
        if (req->offset > kInt64Max - len)
            return -EINVAL;
        if (!fallocate_mode_ok(w[E_AUX]))
            return -EINVAL;
        req->length = len;
        req->aux = w[E_AUX];
        return 0;
    }
    case OP_FSYNC:
        if (w[E_AUX] != 0 && w[E_AUX] != 1)
            return -EINVAL;
        req->aux = w[E_AUX];
        return 0;
    case OP_TRUNCATE:
        /* The new size is the offset, already known to be >= 0. */
        return 0;
    }
    return -EINVAL; /* not reached */
}

}  // namespace rf
