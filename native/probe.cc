/*
 * Capability probing, doorbell eventfds and DIO alignment.
 *
 * probe() answers "which backends can this process use, and with what?"
 * by actually creating (and destroying) tiny io_uring and AIO contexts:
 * sysctls, seccomp filters and container runtimes all interfere, and the
 * only reliable test is to try.  It never throws.
 */
#include "probe.h"

#include <fcntl.h>
#include "config.h"
#if RF_HAVE_LIBAIO
#include <libaio.h>
#endif
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>

#include "backend.h"
#if RF_HAVE_LIBURING
#include "uring.h"
#endif

namespace rf {

int64_t int_arg(const Napi::Env &env, const Napi::Value &v, const char *what,
                int64_t lo, int64_t hi) {
    if (!v.IsNumber())
        throw Napi::TypeError::New(env, std::string(what) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || d < double(lo) || d > double(hi))
        throw Napi::RangeError::New(env, std::string(what) + " must be an integer in [" +
                                             std::to_string(lo) + ", " +
                                             std::to_string(hi) + "]");
    return int64_t(d);
}

namespace {

Napi::Array string_array(Napi::Env env, const std::vector<std::string> &v) {
    Napi::Array a = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++)
        a.Set(uint32_t(i), Napi::String::New(env, v[i]));
    return a;
}

/* -1 when the sysctl does not exist (kernels before 6.6). */
int read_io_uring_disabled() {
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
    if (!f)
        return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

Napi::Object probe_uring(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    Napi::Object ops = Napi::Object::New(env);
#if !RF_HAVE_LIBURING
    o.Set("ok", false);
    o.Set("reason", RF_NO_LIBURING_REASON);
    o.Set("setupFlags", Napi::Array::New(env));
    o.Set("features", Napi::Array::New(env));
    for (const char *op : {"fallocate", "fsync", "readFixed", "ftruncate"})
        ops.Set(op, false);
    o.Set("ops", ops);
    return o;
#else
    /*
     * Owned: every o.Set() below can throw a JS exception (as a C++
     * exception) and must not leak the ring when it does.
     */
    OwnedRing ring;
    struct io_uring_params p;
    unsigned flags = 0;
    int rc = ring.init_best(4, &p, &flags);
    bool ok = rc == 0;
    o.Set("ok", ok);
    o.Set("reason", ok ? std::string() : uring_init_error(rc));
    o.Set("setupFlags", string_array(env, ok ? uring_setup_flag_names(flags)
                                             : std::vector<std::string>()));
    o.Set("features", string_array(env, ok ? uring_feature_names(p.features)
                                           : std::vector<std::string>()));
    std::unique_ptr<struct io_uring_probe, void (*)(struct io_uring_probe *)> pr(
        ok ? io_uring_get_probe_ring(ring.get()) : nullptr, io_uring_free_probe);
    auto has = [&pr](unsigned op) { return pr && io_uring_opcode_supported(pr.get(), int(op)); };
    ops.Set("fallocate", has(IORING_OP_FALLOCATE));
    ops.Set("fsync", has(IORING_OP_FSYNC));
    ops.Set("readFixed", has(IORING_OP_READ_FIXED));
    ops.Set("ftruncate", has(RF_IORING_OP_FTRUNCATE));
    o.Set("ops", ops);
    return o;
#endif
}

Napi::Object probe_aio(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
#if !RF_HAVE_LIBAIO
    o.Set("ok", false);
    o.Set("reason", RF_NO_LIBAIO_REASON);
    return o;
#else
    io_context_t ctx = nullptr;
    int rc = io_setup(1, &ctx);
    o.Set("ok", rc == 0);
    if (rc == 0) {
        io_destroy(ctx);
        o.Set("reason", "");
    } else {
        o.Set("reason", "io_setup failed: " + errno_name(rc) +
                            (rc == -EAGAIN ? " (fs.aio-max-nr exhausted)" : "") +
                            "; use backend 'io_uring' or 'sync'");
    }
    return o;
#endif
}

/*
 * struct statx as the kernel defines it (include/uapi/linux/stat.h), so
 * the DIO alignment fields are available even where glibc's copy predates
 * them (they arrived in Linux 6.1 / glibc 2.37 headers).
 */
struct rf_statx_timestamp {
    int64_t tv_sec;
    uint32_t tv_nsec;
    int32_t reserved;
};
struct rf_statx {
    uint32_t stx_mask;
    uint32_t stx_blksize;
    uint64_t stx_attributes;
    uint32_t stx_nlink;
    uint32_t stx_uid;
    uint32_t stx_gid;
    uint16_t stx_mode;
    uint16_t spare0;
    uint64_t stx_ino;
    uint64_t stx_size;
    uint64_t stx_blocks;
    uint64_t stx_attributes_mask;
    rf_statx_timestamp stx_atime, stx_btime, stx_ctime, stx_mtime;
    uint32_t stx_rdev_major, stx_rdev_minor;
    uint32_t stx_dev_major, stx_dev_minor;
    uint64_t stx_mnt_id;
    uint32_t stx_dio_mem_align;
    uint32_t stx_dio_offset_align;
    uint64_t spare3[12];
};
static_assert(sizeof(rf_statx) == 256, "struct statx is 256 bytes");
static_assert(offsetof(rf_statx, stx_dio_mem_align) == 0x98, "statx layout");
constexpr unsigned RF_STATX_DIOALIGN = 0x2000;

}  // namespace

Napi::Value Probe(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    struct utsname u;
    o.Set("kernel", uname(&u) == 0 ? std::string(u.release) : std::string());
    o.Set("ioUringDisabled", read_io_uring_disabled());
    o.Set("ioUring", probe_uring(env));
    o.Set("libaio", probe_aio(env));
    return o;
}

Napi::Value CreateDoorbell(const Napi::CallbackInfo &info) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        throw Napi::Error::New(info.Env(), "eventfd failed: " + errno_name(errno));
    return Napi::Number::New(info.Env(), fd);
}

/* Called by the main thread to wake a worker blocked in pump(). */
Napi::Value Ring(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    int fd = int(int_arg(env, info[0], "fd", 0, INT32_MAX));
    uint64_t one = 1;
    ssize_t r;
    do r = write(fd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: the counter is saturated, i.e. already rung. */
    if (r < 0 && errno != EAGAIN)
        throw Napi::Error::New(env, "ring: write to doorbell failed: " + errno_name(errno));
    return env.Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    int fd = int(int_arg(env, info[0], "fd", 0, INT32_MAX));
    /* No EINTR retry: on Linux the fd is gone even when close() says EINTR. */
    if (close(fd) != 0 && errno != EINTR)
        throw Napi::Error::New(env, "closeFd failed: " + errno_name(errno));
    return env.Undefined();
}

Napi::Value DupFd(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    int fd = int(int_arg(env, info[0], "dupFd: fd", 0, INT32_MAX));
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        throw Napi::Error::New(env, "dupFd failed: " + errno_name(errno) +
                                        (errno == EMFILE || errno == ENFILE ? " (out of file descriptors: raise ulimit -n)" : ""));
    return Napi::Number::New(env, d);
}

Napi::Value DioAlign(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    int fd = int(int_arg(env, info[0], "fd", 0, INT32_MAX));
    rf_statx stx = {};
    long rc = syscall(SYS_statx, fd, "", AT_EMPTY_PATH, RF_STATX_DIOALIGN, &stx);
    if (rc != 0 || !(stx.stx_mask & RF_STATX_DIOALIGN) || stx.stx_dio_mem_align == 0 ||
        stx.stx_dio_offset_align == 0)
        return env.Null();
    Napi::Object o = Napi::Object::New(env);
    o.Set("mem", stx.stx_dio_mem_align);
    o.Set("offset", stx.stx_dio_offset_align);
    return o;
}

}  // namespace rf
