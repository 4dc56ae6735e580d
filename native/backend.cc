/*
 * Helpers shared by all backends.
 */
#include "backend.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rf {

std::string errno_name(int err) {
    if (err < 0)
        err = -err;
    /* glibc >= 2.32; returns NULL for numbers it does not know. */
    const char *name = strerrorname_np(err);
    if (name)
        return name;
    return "errno " + std::to_string(err);
}

/*
 * The backends, registered by name in this one table (like fio's engines):
 * each is one file behind the Backend interface.  src/backends.ts lists the
 * same names, in the order 'auto' tries them.
 */
namespace {
struct BackendEntry {
    const char *name;
    std::unique_ptr<Backend> (*make)(const BackendConfig &);
};
const BackendEntry kBackends[] = {
    {"io_uring", make_uring_backend},
    {"libaio", make_aio_backend},
    {"sync", make_sync_backend},
};
}  // namespace

std::unique_ptr<Backend> make_backend(const std::string &name, const BackendConfig &cfg) {
    for (const BackendEntry &b : kBackends)
        if (name == b.name)
            return b.make(cfg);
    return nullptr;
}

std::string backend_names() {
    std::string s;
    for (const BackendEntry &b : kBackends)
        s += (s.empty() ? "'" : ", '") + std::string(b.name) + "'";
    return s;
}

bool wait_doorbell(int fd, int wait_ms) {
    struct pollfd p;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    int rc = poll(&p, 1, wait_ms);
    if (rc <= 0)
        return false; /* timeout, or EINTR: the caller just pumps again */
    /*
     * Clear the counter so the next wait blocks.  The fd is non-blocking,
     * so losing a race with another reader just yields EAGAIN.
     */
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    return true;
}

}  // namespace rf
