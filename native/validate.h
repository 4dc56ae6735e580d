/*
 * Entry validation.
 *
 * A batch entry is decoded exactly once into a Request; every later stage
 * (the backends, the emulated fallocate) only ever looks at the Request.
 * Reading each shared word once means a racing writer can at worst turn a
 * valid entry into a different valid entry, never into one that escapes
 * the pool or the file table.
 */
#ifndef RINGFENCE_VALIDATE_H
#define RINGFENCE_VALIDATE_H

#include <sys/uio.h>
#include <cstdint>

#include "ops.h"

namespace rf {

/* The shared buffer pool as the addon sees it: fixed for a Context's life. */
struct Pool {
    uint8_t *base = nullptr;
    uint64_t size = 0;
};

/*
 * Per-context file table, indexed by file id.  fd < 0 means "not set".
 * fixed[id] says the fd is also in io_uring's registered file table at
 * index id (only the io_uring backend ever sets it).
 */
struct FileTable {
    int fd[MAX_FILES];
    bool fixed[MAX_FILES];
    FileTable() {
        for (uint32_t i = 0; i < MAX_FILES; i++) {
            fd[i] = -1;
            fixed[i] = false;
        }
    }
};

/* A caller buffer for a FLAG_EXT entry (inline mode): where it is, how long. */
struct ExtBuf {
    uint8_t *data = nullptr;
    uint64_t length = 0;
};

/* A validated request.  Only meaningful when validate_entry() returned 0. */
struct Request {
    uint32_t op = 0;
    uint32_t flags = 0;
    int32_t tag = 0;
    uint32_t file = 0;
    int fd = -1;
    bool fixed_file = false;
    int64_t offset = 0;      /* file offset (TRUNCATE: new size) */
    int64_t length = 0;      /* bytes for rw ops, range for FALLOCATE */
    uint32_t buf = 0;        /* pool offset for READ/WRITE (ext: offset in the caller's buffer) */
    /* READ/WRITE: the bytes the kernel reads or writes (pool + buf, or the caller's buffer). */
    uint8_t *mem = nullptr;
    bool ext = false;        /* FLAG_EXT: mem is the caller's memory, never a fixed buffer */
    uint32_t iovcnt = 0;     /* READV/WRITEV: number of iovecs filled */
    int32_t aux = 0;         /* FALLOCATE mode, FSYNC datasync flag */
};

/*
 * Decode and check one 8-word entry.  On success returns 0 and fills *req;
 * for READV/WRITEV it also fills iov[0..req->iovcnt) with absolute pointers
 * into the pool (iov must hold RF_IOV_MAX elements).  ext: the caller
 * buffer of a FLAG_EXT entry (nullptr: none, and such an entry fails with
 * -EFAULT).  On failure returns a
 * negative errno; req->tag is valid either way so the caller can complete
 * the entry.
 */
int validate_entry(const int32_t *entry, const Pool &pool,
                   const FileTable &files, Request *req, struct iovec *iov,
                   const ExtBuf *ext = nullptr);

}  // namespace rf

#endif
