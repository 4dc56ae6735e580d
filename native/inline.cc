/*
 * Inline mode: the eventfd watcher and the blocking helpers.  See inline.h.
 *
 * Threads: everything here runs on the loop thread that owns the Context,
 * except job_work(), which runs on a libuv threadpool thread and touches
 * only its own Job (a copy of the request, of its iovecs and of the
 * config).  So the shared state needs no lock: the poll callback and the
 * after-work callbacks are both loop-thread callbacks.
 *
 * Lifetimes: Shared is reference-counted: the InlineLoop, the poll handle's
 * box and every Job hold it, so a callback that arrives after the Context
 * closed still finds it (and drops its result).  At thread exit the
 * Context's async cleanup hook (addon.cc) keeps the env, and so this
 * library and the pool, alive until the poll handle has closed and the last
 * job has come back (maybe_finish()).
 */
#include "inline.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <unordered_set>

namespace rf {

struct Job;

struct InlineLoop::Shared {
    /* False once the Context closed: late helper results are dropped. */
    bool alive = true;
    napi_env env = nullptr;
    Napi::FunctionReference cb;
    napi_async_context actx = nullptr;
    /* Helper results not yet handed to pump(): (tag, res) pairs. */
    std::vector<int32_t> pending;
    size_t pending_head = 0;
    /* Jobs not yet back: waiting here, or handed to libuv (queued or running). */
    uint32_t jobs = 0;
    uint32_t max_running = 2;
    std::deque<Job *> waiting;
    std::unordered_set<Job *> handed;
    /* The poll handle has closed (or was never opened). */
    bool poll_closed = true;
    /* Times the eventfd woke the loop (info().loopWakes: wake-ups per completion). */
    uint64_t wakes = 0;
    /* The context's reap at the wake-up, before onReady (nullptr: none; see set_before_ready). */
    void (*before)(void *) = nullptr;
    void *before_arg = nullptr;
    /* Set by close_for_exit(): removed once the handle closed and every job is back. */
    napi_async_cleanup_hook_handle exit_hook = nullptr;
    /* Run by maybe_finish() once the loop is closed and every helper job is back. */
    std::function<void()> exit_done;
    /*
     * Set by keep_env(): a Context closed (or collected) with helper jobs still out holds the
     * env, and this library, until they are back, through a hook of its own (keep_self keeps
     * this state alive for it); maybe_finish() removes it.
     */
    napi_async_cleanup_hook_handle keep_hook = nullptr;
    std::shared_ptr<Shared> keep_self;

    void start(Job *j);
    void maybe_finish() {
        if (jobs == 0 && exit_done) {
            std::function<void()> done = std::move(exit_done);
            exit_done = nullptr;
            done();
        }
        if (exit_hook != nullptr && poll_closed && jobs == 0) {
            napi_async_cleanup_hook_handle h = exit_hook;
            exit_hook = nullptr;
            napi_remove_async_cleanup_hook(h);
        }
        if (keep_hook != nullptr && poll_closed && jobs == 0) {
            napi_async_cleanup_hook_handle h = keep_hook;
            keep_hook = nullptr;
            std::shared_ptr<Shared> self = std::move(keep_self); /* may free this at return */
            napi_remove_async_cleanup_hook(h);
        }
    }

    /* One call into JavaScript: onReady().  Its exceptions are uncaught exceptions. */
    void notify() {
        if (!alive || cb.IsEmpty())
            return;
        napi_env e = env;
        Napi::HandleScope scope(e);
        napi_value global, fn = cb.Value(), result;
        napi_get_global(e, &global);
        napi_status st = napi_make_callback(e, actx, global, fn, 0, nullptr, &result);
        if (st == napi_pending_exception) {
            napi_value err;
            napi_get_and_clear_last_exception(e, &err);
            napi_fatal_exception(e, err);
        }
    }
};

struct Job {
    uv_work_t work;
    Request req;
    struct iovec iov[RF_IOV_MAX];
    BackendConfig cfg;
    int res = 0;
    std::shared_ptr<InlineLoop::Shared> sh;
};

namespace {

/* The poll handle, with a reference that keeps Shared alive until it has closed. */
struct PollBox {
    uv_poll_t handle;
    std::shared_ptr<InlineLoop::Shared> sh;
};

void job_work(uv_work_t *w) {
    Job *j = static_cast<Job *>(w->data);
    j->res = execute_sync(j->req, j->iov, j->cfg);
}

void job_after(uv_work_t *w, int status) {
    Job *j = static_cast<Job *>(w->data);
    std::shared_ptr<InlineLoop::Shared> sh = std::move(j->sh);
    int32_t tag = j->req.tag, res = status == UV_ECANCELED ? -ECANCELED : j->res;
    sh->handed.erase(j);
    delete j;
    sh->jobs--;
    if (!sh->alive) {
        sh->maybe_finish();
        return;
    }
    if (!sh->waiting.empty()) {
        Job *next = sh->waiting.front();
        sh->waiting.pop_front();
        sh->start(next);
    }
    sh->pending.push_back(tag);
    sh->pending.push_back(res);
    sh->notify();
}

void on_readable(uv_poll_t *h, int status, int events) {
    auto *box = static_cast<PollBox *>(h->data);
    int fd = -1;
    uv_fileno(reinterpret_cast<uv_handle_t *>(h), &fd);
    /*
     * Clear the counter BEFORE JavaScript reaps: a completion posted after
     * this read writes the eventfd again and brings us back here.
     */
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    std::shared_ptr<InlineLoop::Shared> sh = box->sh; /* alive across the call */
    sh->wakes++;
    /*
     * A libuv callback must not throw: an exception out of the hook would end the process.  The
     * hook can throw only where dropping the exception loses nothing (ReapAtWake: the stash's
     * room is reserved before anything is reaped, and a send that fails after the stash is made
     * by onReady's pump() or by the connection), so it is dropped here.
     */
    if (sh->alive && sh->before != nullptr) {
        try {
            sh->before(sh->before_arg);
        } catch (...) {
        }
    }
    sh->notify();
}

/*
 * Helpers share libuv's threadpool with the process's own fs, dns and zlib
 * work: take at most half of it (UV_THREADPOOL_SIZE, default 4), so a stuck
 * device cannot hold every thread of it.
 */
uint32_t helper_cap() {
    const char *v = getenv("UV_THREADPOOL_SIZE");
    long n = v && *v ? strtol(v, nullptr, 10) : 4;
    if (n < 1) n = 4;
    if (n > 1024) n = 1024;
    return n >= 2 ? uint32_t(n / 2) : 1;
}

}  // namespace

void InlineLoop::Shared::start(Job *j) {
    uv_loop_t *loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    handed.insert(j);
    int rc = uv_queue_work(loop, &j->work, job_work, job_after);
    if (rc != 0) {
        /* Cannot happen with a live loop: fail it as "retry". */
        handed.erase(j);
        jobs--;
        pending.push_back(j->req.tag);
        pending.push_back(-EAGAIN);
        delete j;
    }
}

InlineLoop::InlineLoop(napi_env env, const BackendConfig &cfg)
    : env_(env), cfg_(cfg), shared_(std::make_shared<Shared>()) {
    efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd_ < 0)
        throw BackendError("inline mode: eventfd() failed: " + errno_name(-errno) +
                           (errno == EMFILE || errno == ENFILE ? " (out of file descriptors: raise ulimit -n)" : ""));
    cfg_.stall = nullptr;   /* helpers have no stall word: that is worker mode's watchdog */
    cfg_.offload = nullptr; /* a helper runs its op itself */
    shared_->env = env;
    shared_->max_running = helper_cap();
}

InlineLoop::~InlineLoop() {
    close();
    if (efd_ >= 0)
        ::close(efd_);
}

void InlineLoop::start(Napi::Function cb) {
    uv_loop_t *loop = nullptr;
    if (napi_get_uv_event_loop(env_, &loop) != napi_ok || loop == nullptr)
        throw BackendError("inline mode: this thread has no libuv loop (napi_get_uv_event_loop failed)");
    auto *box = new PollBox;
    int rc = uv_poll_init(loop, &box->handle, efd_);
    if (rc != 0) {
        delete box;
        throw BackendError(std::string("inline mode: uv_poll_init failed: ") + uv_strerror(rc));
    }
    box->sh = shared_;
    box->handle.data = box;
    shared_->poll_closed = false;
    shared_->cb = Napi::Persistent(cb);
    napi_value name;
    napi_create_string_utf8(env_, "ringfence:completion", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env_, nullptr, name, &shared_->actx);
    poll_ = &box->handle;
    uv_poll_start(poll_, UV_READABLE, on_readable);
    uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
    active_ = false;
}

void InlineLoop::run(const Request &req, const struct iovec *iov) {
    Job *j = new Job;
    j->work.data = j;
    j->req = req;
    if (req.op == OP_READV || req.op == OP_WRITEV)
        memcpy(j->iov, iov, sizeof(struct iovec) * req.iovcnt);
    j->cfg = cfg_;
    j->sh = shared_;
    shared_->jobs++;
    if (shared_->handed.size() < shared_->max_running)
        shared_->start(j);
    else
        shared_->waiting.push_back(j);
}

void InlineLoop::drain(CompletionSink &out) {
    Shared &s = *shared_;
    while (s.pending_head < s.pending.size() && out.room() > 0) {
        out.push(s.pending[s.pending_head], s.pending[s.pending_head + 1]);
        s.pending_head += 2;
    }
    if (s.pending_head == s.pending.size()) {
        s.pending.clear();
        s.pending_head = 0;
    }
}

void InlineLoop::stash(int32_t tag, int32_t res) {
    shared_->pending.push_back(tag);
    shared_->pending.push_back(res);
}

void InlineLoop::reserve_stash(size_t n) {
    shared_->pending.reserve(shared_->pending.size() + 2 * n);
}

void InlineLoop::set_before_ready(void (*fn)(void *), void *arg) {
    shared_->before = fn;
    shared_->before_arg = arg;
}

void InlineLoop::set_active(bool active) {
    if (poll_ == nullptr || active == active_)
        return;
    active_ = active;
    if (active)
        uv_ref(reinterpret_cast<uv_handle_t *>(poll_));
    else
        uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
}

uint32_t InlineLoop::jobs() const { return shared_->jobs; }

uint64_t InlineLoop::wakes() const { return shared_->wakes; }

bool InlineLoop::close(std::function<void()> done) {
    Shared &s = *shared_;
    s.alive = false;
    s.before = nullptr;
    if (done) s.exit_done = std::move(done);
    s.cb.Reset();
    if (s.actx != nullptr) {
        napi_async_destroy(env_, s.actx);
        s.actx = nullptr;
    }
    /* Jobs not yet running never will: those still waiting here go now, libuv's queued ones are cancelled. */
    while (!s.waiting.empty()) {
        delete s.waiting.front();
        s.waiting.pop_front();
        s.jobs--;
    }
    for (Job *j : std::vector<Job *>(s.handed.begin(), s.handed.end()))
        uv_cancel(reinterpret_cast<uv_req_t *>(&j->work)); /* its after-callback still runs */
    if (poll_ != nullptr) {
        uv_poll_stop(poll_);
        uv_close(reinterpret_cast<uv_handle_t *>(poll_), [](uv_handle_t *h) {
            auto *box = static_cast<PollBox *>(h->data);
            std::shared_ptr<Shared> sh = std::move(box->sh);
            delete box;
            sh->poll_closed = true;
            sh->maybe_finish();
        });
        poll_ = nullptr;
    }
    bool idle = s.jobs == 0;
    s.maybe_finish(); /* runs `done` now if no job is out, else when the last one is back */
    return idle;
}

void InlineLoop::keep_env() {
    Shared &s = *shared_;
    if (s.keep_hook != nullptr || (s.poll_closed && s.jobs == 0))
        return;
    s.keep_self = shared_;
    /* At env teardown the hook does nothing: the env waits until maybe_finish() removes it. */
    if (napi_add_async_cleanup_hook(env_, [](napi_async_cleanup_hook_handle, void *) {}, &s, &s.keep_hook) != napi_ok) {
        s.keep_hook = nullptr;
        s.keep_self.reset();
    }
}

void InlineLoop::close_for_exit(napi_async_cleanup_hook_handle hook, std::function<void()> done) {
    shared_->exit_hook = hook;
    close(std::move(done));
}

}  // namespace rf
