/*
 * Inline mode: the eventfd watcher and the blocking helpers.  See inline.h.
 *
 * Threads: everything here runs on the loop thread that owns the Context,
 * except Job::work(), which runs on a libuv threadpool thread and touches
 * only its own Job (a copy of the request, of its iovecs and of the
 * config).  So the shared state needs no lock: the poll callback and the
 * after-work callbacks are both loop-thread callbacks.
 */
#include "inline.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rf {

struct InlineLoop::Shared {
    /* False once the Context closed: late helper results are dropped. */
    bool alive = true;
    napi_env env = nullptr;
    Napi::FunctionReference cb;
    napi_async_context actx = nullptr;
    /* Helper results not yet handed to pump(): (tag, res) pairs. */
    std::vector<int32_t> pending;
    size_t pending_head = 0;
    uint32_t jobs = 0;

    /* One call into JavaScript: onReady().  Its exceptions are uncaught exceptions. */
    void notify() {
        if (!alive || cb.IsEmpty())
            return;
        Napi::HandleScope scope(env);
        napi_value global, fn = cb.Value(), result;
        napi_get_global(env, &global);
        napi_status st = napi_make_callback(env, actx, global, fn, 0, nullptr, &result);
        if (st == napi_pending_exception) {
            napi_value err;
            napi_get_and_clear_last_exception(env, &err);
            napi_fatal_exception(env, err);
        }
    }
};

namespace {

struct Job {
    uv_work_t work;
    Request req;
    struct iovec iov[RF_IOV_MAX];
    BackendConfig cfg;
    int res = 0;
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
    delete j;
    sh->jobs--;
    if (!sh->alive)
        return;
    sh->pending.push_back(tag);
    sh->pending.push_back(res);
    sh->notify();
}

void on_readable(uv_poll_t *h, int status, int events) {
    auto *sh = static_cast<InlineLoop::Shared *>(h->data);
    int fd = -1;
    uv_fileno(reinterpret_cast<uv_handle_t *>(h), &fd);
    /*
     * Clear the counter BEFORE JavaScript reaps: a completion posted after
     * this read writes the eventfd again and brings us back here.
     */
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    sh->notify();
}

}  // namespace

InlineLoop::InlineLoop(napi_env env, const BackendConfig &cfg)
    : env_(env), cfg_(cfg), shared_(std::make_shared<Shared>()) {
    efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd_ < 0)
        throw BackendError("inline mode: eventfd() failed: " + errno_name(-errno) +
                           (errno == EMFILE || errno == ENFILE ? " (out of file descriptors: raise ulimit -n)" : ""));
    cfg_.stall = nullptr;   /* helpers have no stall word: that is worker mode's watchdog */
    cfg_.offload = nullptr; /* a helper runs its op itself */
    shared_->env = env;
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
    shared_->cb = Napi::Persistent(cb);
    napi_value name;
    napi_create_string_utf8(env_, "ringfence:completion", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env_, nullptr, name, &shared_->actx);
    poll_ = new uv_poll_t;
    int rc = uv_poll_init(loop, poll_, efd_);
    if (rc != 0) {
        delete poll_;
        poll_ = nullptr;
        throw BackendError(std::string("inline mode: uv_poll_init failed: ") + uv_strerror(rc));
    }
    poll_->data = shared_.get();
    uv_poll_start(poll_, UV_READABLE, on_readable);
    uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
    active_ = false;
}

void InlineLoop::run(const Request &req, const struct iovec *iov) {
    uv_loop_t *loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    Job *j = new Job;
    j->work.data = j;
    j->req = req;
    if (req.op == OP_READV || req.op == OP_WRITEV)
        memcpy(j->iov, iov, sizeof(struct iovec) * req.iovcnt);
    j->cfg = cfg_;
    j->sh = shared_;
    shared_->jobs++;
    int rc = uv_queue_work(loop, &j->work, job_work, job_after);
    if (rc != 0) {
        shared_->jobs--;
        shared_->pending.push_back(req.tag);
        shared_->pending.push_back(-EAGAIN);
        delete j;
    }
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

bool InlineLoop::close() {
    shared_->alive = false;
    shared_->cb.Reset();
    if (shared_->actx != nullptr) {
        napi_async_destroy(env_, shared_->actx);
        shared_->actx = nullptr;
    }
    if (poll_ != nullptr) {
        uv_poll_stop(poll_);
        uv_close(reinterpret_cast<uv_handle_t *>(poll_),
                 [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
        poll_ = nullptr;
    }
    return shared_->jobs == 0;
}

}  // namespace rf
