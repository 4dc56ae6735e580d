/*
 * Inline mode: a Context driven from the thread's own libuv loop.
 *
 * In worker mode a Context belongs to an offload worker that sleeps in
 * pump(n, waitMs).  In inline mode it belongs to the thread that called
 * Engine.start() (the main thread, or any worker_threads Worker), and that
 * thread must never wait in the kernel: its event loop runs everything
 * else.  So:
 *
 *   - pump() is only ever called with waitMs = 0 (submit, flush deferred
 *     completions, reap: one io_uring_enter);
 *   - the backend signals completions on an eventfd (io_uring: registered
 *     with IORING_REGISTER_EVENTFD; libaio: io_set_eventfd on every iocb),
 *     which a uv_poll_t on the thread's loop watches.  When it becomes
 *     readable the counter is cleared first and then JavaScript is called
 *     once (onReady), which calls pump(n, 0) to reap every CQE there is.
 *     Clearing before reaping is what makes a wake-up impossible to lose:
 *     a completion posted after the read signals the eventfd again.  While
 *     a reply to be sent at completion is in flight (reply.h), the context
 *     reaps first, natively, between the read and onReady: it sends the
 *     replies due and stashes the completions for the pump() onReady makes;
 *   - ops that can block in a system call (fsync/fallocate/ftruncate under
 *     libaio, buffered libaio I/O, the emulated XFS fallocate, every op of
 *     the sync backend) go to libuv's threadpool (uv_queue_work): the
 *     helper runs execute_sync(), and its after-callback, on the loop
 *     thread, queues the result and calls onReady like a completion;
 *   - the poll handle is referenced only while ops are in the kernel, so a
 *     program with nothing in flight exits (queued helper jobs keep the
 *     loop alive by themselves);
 *   - at most half of libuv's threadpool runs helpers at once (the rest
 *     wait in order), so a stuck device cannot take the process's whole
 *     threadpool (fs, dns, zlib) with it.
 */
#ifndef RINGFENCE_INLINE_H
#define RINGFENCE_INLINE_H

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backend.h"

namespace rf {

class InlineLoop : public Offload {
 public:
    /* Creates the eventfd; start() begins watching it. Throws BackendError. */
    InlineLoop(napi_env env, const BackendConfig &cfg);
    ~InlineLoop() override;

    int fd() const { return efd_; }

    /* Watch the eventfd on the env's loop; `cb` is called with no arguments. */
    void start(Napi::Function cb);

    /* Offload: run req on a helper thread; its completion arrives through drain(). */
    void run(const Request &req, const struct iovec *iov) override;

    /* Move helper results into the sink (as many as fit). */
    void drain(CompletionSink &out);

    /* A completion reaped outside pump() (the context's reap at the wake-up): the next drain() reports it. */
    void stash(int32_t tag, int32_t res);
    /* Room for `n` more stash() calls without allocating (throws std::bad_alloc if there is none). */
    void reserve_stash(size_t n);

    /*
     * fn(arg) runs on every wake-up, after the eventfd is cleared and before onReady (nullptr:
     * nothing). The context sets it to reap there while a reply may be due (addon.cc, ReapAtWake),
     * and clears it before it tears down; close() clears it too.
     */
    void set_before_ready(void (*fn)(void *), void *arg);

    /* Reference the poll handle while anything is in the kernel. */
    void set_active(bool active);

    /* Helper jobs not yet completed (queued or running). */
    uint32_t jobs() const;

    /* Times the eventfd has woken the loop. */
    uint64_t wakes() const;

    /*
     * Stop watching and forget the callback.  Returns false if helper jobs
     * are still running: they keep the state they use (and the caller must
     * keep the pool, which they may still read or write) alive.  `done`, if
     * given, runs on this thread once no helper job is out any more: now, or
     * when the last one comes back.
     */
    bool close(std::function<void()> done = nullptr);

    /*
     * After close() returned false (helper jobs still out), outside thread exit: hold the env,
     * and with it this library and the pool, until the jobs are back and the poll handle has
     * closed, with an async cleanup hook of the loop's own.
     */
    void keep_env();

    /*
     * close() at thread exit, from the Context's async cleanup hook: the hook
     * is removed (letting the env go on tearing down) only once the poll
     * handle has closed and every helper job is back, so neither a close
     * callback nor a job's after-callback can run in an unloaded library or
     * write into a freed pool.
     */
    void close_for_exit(napi_async_cleanup_hook_handle hook, std::function<void()> done = nullptr);

    struct Shared;

 private:
    napi_env env_;
    BackendConfig cfg_;
    int efd_ = -1;
    uv_poll_t *poll_ = nullptr;
    bool active_ = false;
    std::shared_ptr<Shared> shared_;
};

}  // namespace rf

#endif
