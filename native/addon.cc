/*
 * Module init and the Context class.
 *
 * The addon is context-aware: it may be loaded by several worker threads
 * at once, each with its own napi_env.  Everything mutable hangs off the
 * per-env Addon instance or a Context object, except the process-wide
 * registry of tracked-request tables (registry.h), which is shared by every
 * thread on purpose.  A Context belongs to the thread that created it (the io_uring
 * backend relies on that for SINGLE_ISSUER/DEFER_TASKRUN).
 *
 * Teardown paths, idempotent:
 *   - close() from JavaScript, and the destructor (a forgotten Context
 *     that is garbage-collected): Context::Teardown();
 *   - a Context still open when its thread exits (the kernel may still be
 *     writing into the pool: drain before the SharedArrayBuffer can go
 *     away): worker mode, an env cleanup hook (Teardown()); inline mode, an
 *     async cleanup hook (AsyncCleanup()), which the env waits for until the
 *     poll handle has closed and every helper job is back (inline.h).
 */
#include <fcntl.h>
#include <napi.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <memory>
#include <vector>

#include "backend.h"
#include "inline.h"
#include "ops.h"
#include "probe.h"
#include "registry.h"
#include "reply.h"
#include "views.h"
#include "watch.h"

namespace rf {

namespace {

/*
 * tableRing(id, mask): wakes the participants in mask of a table (registry.h), on whatever
 * thread they are. Context.tableRing, and the module's tableRing for tests.
 */
Napi::Value TableRingAny(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint32_t id = uint32_t(int_arg(env, info[0], "tableRing: id", 0, INT32_MAX));
    uint32_t mask = uint32_t(int_arg(env, info[1], "tableRing: mask", 0, INT32_MAX));
    registry::ring(id, mask);
    return env.Undefined();
}

class Context : public Napi::ObjectWrap<Context> {
 public:
    static Napi::Function DefineClass(Napi::Env env) {
        return ObjectWrap<Context>::DefineClass(
            env, "Context",
            {
                InstanceMethod<&Context::Pump>("pump"),
                InstanceMethod<&Context::SetFile>("setFile"),
                InstanceMethod<&Context::ClearFile>("clearFile"),
                InstanceMethod<&Context::Inflight>("inflight"),
                InstanceMethod<&Context::Info>("info"),
                InstanceMethod<&Context::Close>("close"),
                InstanceMethod<&Context::TableJoin>("tableJoin"),
                InstanceMethod<&Context::TableLeave>("tableLeave"),
                InstanceMethod<&Context::TableRing>("tableRing"),
                InstanceMethod<&Context::TableWorkaround>("tableWorkaround"),
                InstanceMethod<&Context::ReplyOpen>("replyOpen"),
                InstanceMethod<&Context::ReplyClose>("replyClose"),
            });
    }

    explicit Context(const Napi::CallbackInfo &info) : ObjectWrap<Context>(info) {
        Napi::Env env = info.Env();
        if (!info[0].IsObject())
            throw Napi::TypeError::New(env, "Context: options object required");
        Napi::Object opts = info[0].As<Napi::Object>();

        Napi::Value b = opts.Get("backend");
        if (!b.IsString())
            throw Napi::TypeError::New(env, "Context: backend must be one of " + backend_names());
        std::string backend = b.As<Napi::String>().Utf8Value();

        BackendConfig cfg;
        cfg.depth = uint32_t(int_arg(env, opts.Get("depth"), "Context: depth", DEPTH_MIN, DEPTH_MAX));

        View pool, batch, compl_;
        Napi::Value v = opts.Get("pool");
        if (!typed_view(env, v, napi_uint8_array, &pool))
            throw Napi::TypeError::New(env, "Context: pool must be a Uint8Array (over a SharedArrayBuffer)");
        pool_ref_ = Napi::Persistent(v.As<Napi::Object>());
        cfg.pool.base = static_cast<uint8_t *>(pool.data);
        cfg.pool.size = pool.length;

        v = opts.Get("batch");
        if (!typed_view(env, v, napi_int32_array, &batch) || batch.length < ENTRY_WORDS)
            throw Napi::TypeError::New(env, "Context: batch must be an Int32Array of at least 8 elements");
        batch_ref_ = Napi::Persistent(v.As<Napi::Object>());
        batch_cap_ = uint32_t(batch.length / ENTRY_WORDS);
        ext_.resize(batch_cap_);

        v = opts.Get("completions");
        if (!typed_view(env, v, napi_int32_array, &compl_))
            throw Napi::TypeError::New(env, "Context: completions must be an Int32Array");
        compl_ref_ = Napi::Persistent(v.As<Napi::Object>());
        compl_cap_ = uint32_t(compl_.length / COMPL_WORDS);
        /* One pump produces at most (ops in flight) + (batch entries). */
        if (uint64_t(compl_cap_) < uint64_t(cfg.depth) + batch_cap_)
            throw Napi::RangeError::New(
                env, "Context: completions holds " + std::to_string(compl_cap_) +
                         " entries; need at least depth + batch capacity = " +
                         std::to_string(cfg.depth + batch_cap_));

        /*
         * Inline mode (inline.h): onReady is called on this thread's loop
         * when completions may be waiting; the Context's own eventfd takes
         * the doorbell's place.  Worker mode: the main thread's doorbell.
         */
        Napi::Value on_ready = opts.Get("onReady");
        if (!on_ready.IsUndefined()) {
            if (!on_ready.IsFunction())
                throw Napi::TypeError::New(env, "Context: onReady must be a function");
        } else {
            cfg.doorbell_fd = int(int_arg(env, opts.Get("doorbellFd"), "Context: doorbellFd", 0, INT_MAX));
            if (fcntl(cfg.doorbell_fd, F_GETFD) < 0)
                throw Napi::Error::New(env, "Context: doorbellFd " + std::to_string(cfg.doorbell_fd) +
                                                " is not open: " + errno_name(errno));
        }
        v = opts.Get("emulateWindowUs");
        if (!v.IsUndefined())
            cfg.emulate_window_us = uint32_t(int_arg(env, v, "Context: emulateWindowUs", 0, 60000000));

        /*
         * The stall word (stall.h).  Written from pump() for the Context's
         * whole life, so it must be a SharedArrayBuffer, which cannot be
         * detached and freed under the pointer; the reference keeps it.
         */
        v = opts.Get("stall");
        if (!v.IsUndefined()) {
            View stall;
            if (!typed_view(env, v, napi_int32_array, &stall) || stall.length < 1 ||
                !over_shared(env, v))
                throw Napi::TypeError::New(env, "Context: stall must be an Int32Array of at least 1 "
                                                "element over a SharedArrayBuffer");
            stall_ref_ = Napi::Persistent(v.As<Napi::Object>());
            cfg.stall = static_cast<uint32_t *>(stall.data);
            /*
             * Word 1, when present: set to 1 if Teardown() ever gives up on
             * ops still in the kernel (W_GAVEUP in src/shm.ts).  The main
             * thread then must not reuse any memory those ops name.
             */
            if (stall.length >= 2) gave_up_ = static_cast<int32_t *>(stall.data) + 1;
        }

        /*
         * Inline mode, optional: replies sent at completion time (reply.h).  `replies` holds
         * the records (REPLY_MAX * REPLY_WORDS words), `replyArm` one word per batch entry,
         * `replySlots` the engine's request slots (a tag's slot is tag >> 3).
         */
        v = opts.Get("replies");
        if (!v.IsUndefined()) {
            if (on_ready.IsUndefined())
                throw Napi::TypeError::New(env, "Context: replies are for inline mode (with onReady) only");
            View recs, arm;
            if (!typed_view(env, v, napi_int32_array, &recs) || recs.length < size_t(REPLY_MAX) * REPLY_WORDS)
                throw Napi::TypeError::New(env, "Context: replies must be an Int32Array of " +
                                                    std::to_string(REPLY_MAX * REPLY_WORDS) + " elements");
            Napi::Value a = opts.Get("replyArm");
            if (!typed_view(env, a, napi_int32_array, &arm) || arm.length < batch_cap_)
                throw Napi::TypeError::New(env, "Context: replyArm must be an Int32Array with one element per batch entry");
            uint32_t slots = uint32_t(int_arg(env, opts.Get("replySlots"), "Context: replySlots", 1, 1 << 20));
            replies_ref_ = Napi::Persistent(v.As<Napi::Object>());
            reply_arm_ref_ = Napi::Persistent(a.As<Napi::Object>());
            replies_.reset(new Replies(slots, cfg.pool));
        }

        if (!on_ready.IsUndefined()) {
            /* Last: the helpers get a copy of the finished config (emulate window...). */
            try {
                inline_.reset(new InlineLoop(env, cfg));
            } catch (const BackendError &e) {
                throw Napi::Error::New(env, e.what());
            }
            cfg.doorbell_fd = inline_->fd();
            cfg.offload = inline_.get();
        }
        wake_fd_ = cfg.doorbell_fd;

        try {
            backend_ = make_backend(backend, cfg);
            if (!backend_)
                throw Napi::TypeError::New(env, "Context: unknown backend '" + backend +
                                                    "' (expected " + backend_names() + ")");
        } catch (const BackendError &e) {
            throw Napi::Error::New(env, e.what());
        } catch (const std::bad_alloc &) {
            throw Napi::Error::New(env, "Context: out of memory (depth " +
                                            std::to_string(cfg.depth) + ")");
        }
        depth_ = cfg.depth;
        backend_->fill_info(&info_);
        if (inline_) {
            try {
                inline_->start(on_ready.As<Napi::Function>());
            } catch (const BackendError &e) {
                backend_->shutdown();
                backend_.reset();
                throw Napi::Error::New(env, e.what());
            }
        }

        env_ = env;
        if (inline_ && replies_) {
            wake_compl_.assign(size_t(compl_cap_) * COMPL_WORDS, 0);
            inline_->set_before_ready(&Context::ReapAtWake, this);
        }
        if (inline_) {
            /*
             * Inline: an async hook, which the env waits for (see
             * InlineLoop::close_for_exit): the poll handle's close callback and
             * helper jobs must come back before this library may be unloaded.
             */
            napi_add_async_cleanup_hook(env, &Context::AsyncCleanup, this, &async_hook_);
        } else {
            napi_add_env_cleanup_hook(env, &Context::EnvCleanup, this);
            hooked_ = true;
        }
    }

    ~Context() override { Teardown(); }

 private:
    static void EnvCleanup(void *arg) {
        auto *self = static_cast<Context *>(arg);
        self->hooked_ = false; /* the hook is consumed by running */
        self->Teardown();
    }

    /* Inline mode, thread exit: drain the kernel side, then close the loop side asynchronously. */
    static void AsyncCleanup(napi_async_cleanup_hook_handle handle, void *arg) {
        auto *self = static_cast<Context *>(arg);
        self->async_hook_ = nullptr; /* removed by the InlineLoop when it is done */
        if (self->inline_) self->inline_->set_before_ready(nullptr, nullptr);
        bool drained = true;
        if (self->backend_) {
            if (!self->backend_->shutdown()) {
                self->backend_.release();
                self->pool_ref_.SuppressDestruct();
                self->pool_leaked_ = true;
                drained = false;
            }
            self->backend_.reset();
        }
        /*
         * The thread is going away with table entries still held: release them once nothing
         * of this context can still be running (helper jobs included), or never, if the
         * kernel may still hold some of its I/O.
         */
        std::vector<registry::Joined> joined = std::move(self->joined_);
        self->joined_.clear();
        if (!drained) joined.clear();
        if (self->inline_) {
            std::function<void()> release;
            if (!joined.empty()) release = [joined]() { LeaveAll(joined, true); };
            self->inline_->close_for_exit(handle, std::move(release));
            self->inline_.reset();
        } else {
            LeaveAll(joined, true);
            napi_remove_async_cleanup_hook(handle);
        }
    }

    /*
     * Leaves the tables this context still belongs to.  `release`: first free the
     * entries it holds (its I/O is over) and ring whoever parked behind them.
     */
    static void LeaveAll(const std::vector<registry::Joined> &joined, bool release) {
        for (const auto &j : joined) {
            if (release) registry::ring(j.id, registry::release_owned(j));
            registry::leave(j);
        }
    }

    /* Drain and release the kernel side.  Touches no JS values. */
    void Teardown() {
        if (inline_) inline_->set_before_ready(nullptr, nullptr);
        if (replies_) replies_->close_all(); /* the sockets' dups: no reply is sent after this */
        bool drained = true;
        if (backend_) {
            if (!backend_->shutdown()) {
                drained = false;
                /*
                 * The backend gave up with ops possibly still in the
                 * kernel, which may yet write into the pool and read the
                 * backend's iovecs: leak both rather than free memory the
                 * kernel may use.  The pool reference is never deleted, so
                 * the SharedArrayBuffer lives as long as this env (Node
                 * frees all references when the env itself goes away:
                 * nothing an addon can do about that).
                 */
                backend_.release();
                pool_ref_.SuppressDestruct();
                pool_leaked_ = true;
                if (gave_up_ != nullptr) __atomic_store_n(gave_up_, 1, __ATOMIC_SEQ_CST);
            }
            backend_.reset();
        }
        /*
         * Entries still held (the thread is exiting, or close() came with requests parked or
         * in flight): released once none of this context's I/O can still be running, that is
         * after the backend drained and, inline, once every helper job is back (which may be
         * later: InlineLoop::close runs the release then). If the backend gave up on I/O stuck
         * in the kernel, they and the participant bits stay taken for good: requests behind
         * them wait rather than run next to I/O that may still land.
         */
        std::vector<registry::Joined> joined = std::move(joined_);
        joined_.clear();
        if (!drained) joined.clear();
        if (inline_) {
            /*
             * Helper jobs still running may read or write the pool: keep it
             * (they keep their own state alive; their results are dropped).
             */
            std::function<void()> release;
            if (!joined.empty()) release = [joined]() { LeaveAll(joined, true); };
            if (!inline_->close(std::move(release))) {
                if (!pool_leaked_) {
                    pool_ref_.SuppressDestruct();
                    pool_leaked_ = true;
                }
                /* This Context's own hook goes below: the loop holds the env until the jobs are back. */
                inline_->keep_env();
            }
            inline_.reset();
        } else {
            LeaveAll(joined, true);
        }
        if (hooked_) {
            napi_remove_env_cleanup_hook(env_, &Context::EnvCleanup, this);
            hooked_ = false;
        }
        if (async_hook_ != nullptr) {
            napi_remove_async_cleanup_hook(async_hook_);
            async_hook_ = nullptr;
        }
    }

    void CheckOpen(const Napi::Env &env, const char *what) {
        if (!backend_)
            throw Napi::Error::New(env, std::string(what) + ": Context is closed");
    }

    /*
     * The hot path.  Re-fetching the two views costs two N-API calls and
     * means a detached (transferred) array is caught instead of written.
     */
    Napi::Value Pump(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        CheckOpen(env, "pump");
        uint32_t n = uint32_t(int_arg(env, info[0], "pump: nSubmit", 0, batch_cap_));
        Napi::Value w = info[1];
        int wait_ms = 0;
        if (!w.IsUndefined()) {
            if (!w.IsNumber())
                throw Napi::TypeError::New(env, "pump: waitMs must be a number");
            double d = w.As<Napi::Number>().DoubleValue();
            wait_ms = d > 0 ? (d >= double(INT_MAX) ? INT_MAX : int(std::ceil(d))) : 0;
        }

        View batch, compl_;
        if (!typed_view(env, batch_ref_.Value(), napi_int32_array, &batch) ||
            !typed_view(env, compl_ref_.Value(), napi_int32_array, &compl_) ||
            batch.length / ENTRY_WORDS < batch_cap_ || compl_.length / COMPL_WORDS < compl_cap_)
            throw Napi::Error::New(env, "pump: batch or completions array was detached");

        CompletionSink sink(static_cast<int32_t *>(compl_.data), compl_cap_);
        if (inline_) {
            /*
             * FLAG_EXT entries name the caller's own buffer: exts[i] (a Uint8Array,
             * kept referenced by the engine until the request settles).  Looked up
             * only for the entries that carry the flag; a missing or detached one
             * gives a null ExtBuf, which validation fails with -EFAULT.
             */
            const int32_t *b = static_cast<const int32_t *>(batch.data);
            const ExtBuf *ext = nullptr;
            Napi::Value exts = info[2];
            if (exts.IsArray()) {
                napi_value arr = exts;
                for (uint32_t i = 0; i < n; i++) {
                    ext_[i] = ExtBuf{};
                    if (!(uint32_t(b[size_t(i) * ENTRY_WORDS + E_OP]) & FLAG_EXT))
                        continue;
                    napi_value el;
                    View v;
                    if (napi_get_element(env, arr, i, &el) == napi_ok &&
                        typed_view(env, el, napi_uint8_array, &v) && v.data != nullptr)
                        ext_[i] = ExtBuf{static_cast<uint8_t *>(v.data), uint64_t(v.length)};
                }
                ext = ext_.data();
            }
            /* Entries submitted with a reply (pump's 4th argument: the batch has some). */
            if (replies_ && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value()) {
                View arm;
                if (typed_view(env, reply_arm_ref_.Value(), napi_int32_array, &arm) && arm.length >= n) {
                    int32_t *r = static_cast<int32_t *>(arm.data);
                    for (uint32_t i = 0; i < n; i++) {
                        if (r[i] != 0) replies_->submitted(b + size_t(i) * ENTRY_WORDS, r[i], ext != nullptr ? &ext_[i] : nullptr);
                        r[i] = 0;
                    }
                }
            }
            /* Never wait on the loop thread: completions arrive through onReady. */
            backend_->pump(b, n, sink, 0, ext);
            inline_->drain(sink);
            inline_->set_active(backend_->inflight() > 0);
            /* Replies due: sent before JavaScript sees the completions. */
            if (replies_ && replies_->pending() > 0 && sink.count() > 0)
                SendDue(env, static_cast<const int32_t *>(compl_.data), sink.count());
        } else {
            backend_->pump(static_cast<const int32_t *>(batch.data), n, sink, wait_ms, nullptr);
        }
        return Napi::Number::New(env, sink.count());
    }

    /* The replies due for completions c[0..n) (reply.h): completed() for each. */
    void SendDue(napi_env env, const int32_t *c, uint32_t n) {
        View recs;
        bool ok = typed_view(env, replies_ref_.Value(), napi_int32_array, &recs);
        for (uint32_t i = 0; i < n; i++)
            replies_->completed(c[size_t(i) * COMPL_WORDS + C_TAG], c[size_t(i) * COMPL_WORDS + C_RES],
                                ok ? static_cast<int32_t *>(recs.data) : nullptr, ok ? recs.length : 0);
    }

    /*
     * Inline mode, on each wake-up, after the eventfd is cleared and before onReady runs
     * (InlineLoop::set_before_ready).  While a request submitted with a reply is in the kernel,
     * reap here and send the replies due: the reply then leaves before the entry into
     * JavaScript and the pump() that would otherwise reap it.  The completions are stashed for
     * that pump() (drain()), which onReady makes in the same callback, so JavaScript sees and
     * settles them exactly as before, and after their replies, as in pump().  Nothing has
     * settled yet, so a read's memory is still referenced (reply.h).  With no reply in flight
     * this does nothing, and the pump() reaps as it always did.
     */
    static void ReapAtWake(void *arg) {
        auto *self = static_cast<Context *>(arg);
        if (!self->backend_ || !self->replies_ || !self->inline_ || self->replies_->pending() == 0)
            return;
        /*
         * Room in the stash for everything this reap can bring, before anything leaves the
         * kernel: if it cannot be had (std::bad_alloc, thrown to on_readable, which drops it),
         * nothing was reaped and onReady's pump() reaps as usual.  After this, stash() does not
         * allocate, so no completion taken from the kernel can fail to reach that pump().
         */
        self->inline_->reserve_stash(self->compl_cap_);
        CompletionSink sink(self->wake_compl_.data(), self->compl_cap_);
        self->backend_->pump(nullptr, 0, sink, 0, nullptr);
        uint32_t n = sink.count();
        if (n == 0)
            return;
        /*
         * Stash first, then send: the completions reach onReady's pump() whatever happens to
         * the sends.  If the HandleScope cannot open, completed() never ran, the arms are still
         * set, and that pump()'s own SendDue() over the drained completions sends the replies.
         * If the reply records' view cannot be had, completed() clears the arm and sends
         * nothing; the record stays ARMED, so the connection's disarm() finds nothing sent and
         * done() writes the reply itself.  Either way no reply is lost or sent twice.
         */
        for (uint32_t i = 0; i < n; i++)
            self->inline_->stash(self->wake_compl_[size_t(i) * COMPL_WORDS + C_TAG],
                                 self->wake_compl_[size_t(i) * COMPL_WORDS + C_RES]);
        Napi::HandleScope scope(self->env_);
        self->SendDue(self->env_, self->wake_compl_.data(), n);
    }

    Napi::Value SetFile(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        CheckOpen(env, "setFile");
        uint32_t id = uint32_t(int_arg(env, info[0], "setFile: id", 0, MAX_FILES - 1));
        int fd = int(int_arg(env, info[1], "setFile: fd", 0, INT_MAX));
        if (fcntl(fd, F_GETFD) < 0)
            throw Napi::Error::New(env, "setFile: fd " + std::to_string(fd) +
                                            " is not open: " + errno_name(errno));
        backend_->set_file(id, fd);
        return env.Undefined();
    }

    Napi::Value ClearFile(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        CheckOpen(env, "clearFile");
        uint32_t id = uint32_t(int_arg(env, info[0], "clearFile: id", 0, MAX_FILES - 1));
        backend_->clear_file(id);
        return env.Undefined();
    }

    Napi::Value Inflight(const Napi::CallbackInfo &info) {
        uint32_t n = backend_ ? backend_->inflight() : 0;
        if (inline_) n += inline_->jobs();
        return Napi::Number::New(info.Env(), n);
    }

    Napi::Value Info(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        Napi::Object o = Napi::Object::New(env);
        auto strings = [&env](const std::vector<std::string> &v) {
            Napi::Array a = Napi::Array::New(env, v.size());
            for (size_t i = 0; i < v.size(); i++)
                a.Set(uint32_t(i), v[i]);
            return a;
        };
        o.Set("backend", info_.backend);
        o.Set("depth", depth_);
        /* Refreshed on every call: pool chunks are registered (or refused) as requests first use them. */
        if (backend_) backend_->fill_info(&info_);
        o.Set("fixedBuffers", info_.fixed_buffers);
        if (info_.fixed_chunks > 0) {
            Napi::Object c = Napi::Object::New(env);
            c.Set("registered", info_.fixed_chunks_registered);
            c.Set("refused", info_.fixed_chunks_refused);
            c.Set("total", info_.fixed_chunks);
            o.Set("fixedBufferChunks", c);
        }
        if (!info_.fixed_buffers_reason.empty()) o.Set("fixedBuffersReason", info_.fixed_buffers_reason);
        o.Set("fixedFiles", info_.fixed_files);
        o.Set("setupFlags", strings(info_.setup_flags));
        o.Set("asyncFtruncate", info_.async_ftruncate);
        o.Set("syncOps", strings(info_.sync_ops));
        /* inline: driven by this thread's loop; the syncOps then run on libuv's threadpool. */
        o.Set("mode", inline_ ? "inline" : "worker");
        o.Set("ringFdRegistered", info_.ring_fd_registered);
        if (inline_) o.Set("loopWakes", double(inline_->wakes()));
        if (info_.quiet_eventfd) {
            o.Set("quietEventfd", true);
            o.Set("quietRechecks", info_.quiet_rechecks);
            o.Set("quietSelfSignals", info_.quiet_self_signals);
        }
        return o;
    }

    /*
     * tableJoin(dev, ino, capacity, direct, workaround): joins the process-wide table of the
     * file identity (registry.h) with this context's wake-up eventfd.  Returns { id, bit,
     * capacity, memory } (memory: an ArrayBuffer over the table).  Throws with `code` set
     * (ERR_RINGFENCE_MIXED_IO_MODES, ERR_RINGFENCE_TABLE_PARTICIPANTS...).
     */
    Napi::Value TableJoin(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        CheckOpen(env, "tableJoin");
        if (!info[0].IsBigInt() || !info[1].IsBigInt())
            throw Napi::TypeError::New(env, "tableJoin: dev and ino must be bigints");
        bool dev_exact = true, ino_exact = true;
        uint64_t dev = info[0].As<Napi::BigInt>().Uint64Value(&dev_exact);
        uint64_t ino = info[1].As<Napi::BigInt>().Uint64Value(&ino_exact);
        bool lossless = dev_exact && ino_exact;
        uint32_t cap = uint32_t(int_arg(env, info[2], "tableJoin: capacity", 1, registry::MAX_CAPACITY));
        bool direct = info[3].ToBoolean().Value(), workaround = info[4].ToBoolean().Value();
        if (!lossless)
            throw Napi::RangeError::New(env, "tableJoin: dev and ino must fit 64 bits");
        registry::Joined j;
        try {
            j = registry::join(dev, ino, cap, direct, workaround, wake_fd_);
        } catch (const registry::Error &e) {
            Napi::Error err = Napi::Error::New(env, e.what());
            err.Set("code", e.code);
            throw err;
        } catch (const std::bad_alloc &) {
            throw Napi::Error::New(env, "tableJoin: out of memory");
        }
        /* The view before anything else can fail: if it cannot be made, leave again. */
        Napi::Object o;
        try {
            Napi::ArrayBuffer mem = registry::view(env, j.id);
            o = Napi::Object::New(env);
            o.Set("id", j.id);
            o.Set("bit", j.bit);
            o.Set("capacity", j.capacity);
            o.Set("memory", mem);
        } catch (...) {
            registry::leave(j);
            throw;
        }
        joined_.push_back(j);
        return o;
    }

    /* tableLeave(id): this context's requests on the table have all been released. */
    Napi::Value TableLeave(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        uint32_t id = uint32_t(int_arg(env, info[0], "tableLeave: id", 0, INT32_MAX));
        for (size_t i = 0; i < joined_.size(); i++) {
            if (joined_[i].id != id) continue;
            registry::leave(joined_[i]);
            joined_.erase(joined_.begin() + long(i));
            break;
        }
        return env.Undefined();
    }

    /*
     * tableWorkaround(id, wanted): this context's files of the identity now do (or no longer
     * do) want the XFS workaround: the registry's count (H_WORKAROUND) follows.
     */
    Napi::Value TableWorkaround(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        uint32_t id = uint32_t(int_arg(env, info[0], "tableWorkaround: id", 0, INT32_MAX));
        bool wanted = info[1].ToBoolean().Value();
        for (auto &j : joined_) {
            if (j.id != id) continue;
            registry::set_workaround(j, wanted);
            break;
        }
        return env.Undefined();
    }

    /* tableRing(id, mask): wake the table's participants in mask (any thread's). */
    Napi::Value TableRing(const Napi::CallbackInfo &info) { return TableRingAny(info); }

    /* replyOpen(fd): a reply record for socket fd (reply.h): its handle, or -errno. */
    Napi::Value ReplyOpen(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        CheckOpen(env, "replyOpen");
        if (!replies_)
            throw Napi::Error::New(env, "replyOpen: this context was created without replies");
        int fd = int(int_arg(env, info[0], "replyOpen: fd", 0, INT32_MAX));
        return Napi::Number::New(env, replies_->open(fd));
    }

    /* replyClose(handle): closes the record's socket dup (its index is reused once no request names it). */
    Napi::Value ReplyClose(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        uint32_t handle = uint32_t(int_arg(env, info[0], "replyClose: handle", 0, INT32_MAX));
        if (replies_) replies_->close(handle);
        return env.Undefined();
    }

    /*
     * Blocks until in-flight ops finish; their results are dropped.  With
     * io_uring, at most about 10 s: see UringBackend::shutdown().
     */
    Napi::Value Close(const Napi::CallbackInfo &info) {
        Teardown();
        if (!pool_leaked_)
            pool_ref_.Reset();
        batch_ref_.Reset();
        compl_ref_.Reset();
        stall_ref_.Reset();
        replies_ref_.Reset();
        reply_arm_ref_.Reset();
        return info.Env().Undefined();
    }

    /* Declared before backend_: destroyed after it (the backend may point at its eventfd). */
    std::unique_ptr<InlineLoop> inline_;
    std::unique_ptr<Backend> backend_;
    BackendInfo info_;
    uint32_t depth_ = 0;
    uint32_t batch_cap_ = 0;
    /* pump()'s FLAG_EXT buffers, one per batch entry (inline mode). */
    std::vector<ExtBuf> ext_;
    uint32_t compl_cap_ = 0;
    std::vector<int32_t> wake_compl_; /* ReapAtWake's completions (compl_cap_ of them) */
    /* Keep the arrays (and so the pool the kernel writes into) alive. */
    Napi::ObjectReference pool_ref_, batch_ref_, compl_ref_, stall_ref_;
    /* Replies sent at completion time (inline mode, optional): reply.h. */
    std::unique_ptr<Replies> replies_;
    Napi::ObjectReference replies_ref_, reply_arm_ref_;
    int32_t *gave_up_ = nullptr;
    bool pool_leaked_ = false;
    napi_env env_ = nullptr;
    bool hooked_ = false;
    napi_async_cleanup_hook_handle async_hook_ = nullptr;
    /* The eventfd that wakes this context: the inline loop's, or the worker's doorbell. */
    int wake_fd_ = -1;
    /* Tables joined (registry.h), left on tableLeave() or at teardown. */
    std::vector<registry::Joined> joined_;
};

/*
 * The wire constants of ops.h, for src/addon.ts to compare with src/protocol.ts
 * at load: a mismatch (an addon built from other sources) is refused there.
 */
Napi::Object Wire(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    const std::pair<const char *, uint32_t> kv[] = {
        {"ENTRY_WORDS", ENTRY_WORDS}, {"E_OP", E_OP}, {"E_FILE", E_FILE}, {"E_OFF_LO", E_OFF_LO},
        {"E_OFF_HI", E_OFF_HI}, {"E_LEN", E_LEN}, {"E_BUF", E_BUF}, {"E_TAG", E_TAG}, {"E_AUX", E_AUX},
        {"COMPL_WORDS", COMPL_WORDS}, {"OP_MAX", OP_MAX}, {"OP_READ", OP_READ}, {"OP_WRITE", OP_WRITE},
        {"OP_READV", OP_READV}, {"OP_WRITEV", OP_WRITEV}, {"OP_FALLOCATE", OP_FALLOCATE},
        {"OP_FSYNC", OP_FSYNC}, {"OP_TRUNCATE", OP_TRUNCATE}, {"OP_NOP", OP_NOP},
        {"FLAG_EMULATE_XFS_BUG", FLAG_EMULATE_XFS_BUG}, {"FLAG_EXT", FLAG_EXT},
        {"IOV_MAX", RF_IOV_MAX}, {"MAX_FILES", MAX_FILES},
        {"FALLOC_FL_KEEP_SIZE", uint32_t(RF_FALLOC_KEEP_SIZE)}, {"FALLOC_FL_PUNCH_HOLE", uint32_t(RF_FALLOC_PUNCH_HOLE)},
        {"FALLOC_FL_ZERO_RANGE", uint32_t(RF_FALLOC_ZERO_RANGE)},
        {"TABLE_HEADER_WORDS", registry::HEADER_WORDS}, {"TABLE_SLOT_WORDS", registry::SLOT_WORDS},
        {"TABLE_H_WORKAROUND", registry::H_WORKAROUND}, {"TABLE_H_RANG", registry::H_RANG}, {"TABLE_H_PARTICIPANTS", registry::H_PARTICIPANTS},
        {"TABLE_H_PART", registry::H_PART}, {"TABLE_H_PART_WORDS", registry::H_PART_WORDS},
        {"TABLE_P_IN_FLIGHT", registry::P_IN_FLIGHT}, {"TABLE_P_HIGH_WATER", registry::P_HIGH_WATER},
        {"TABLE_GEN_SHIFT", registry::GEN_SHIFT}, {"TABLE_OWNER_SHIFT", registry::OWNER_SHIFT},
        {"TABLE_MAX_CAPACITY", registry::MAX_CAPACITY}, {"TABLE_MAX_PARTICIPANTS", registry::MAX_PARTICIPANTS},
        {"REPLY_MAX", REPLY_MAX}, {"REPLY_WORDS", REPLY_WORDS}, {"REPLY_BYTES", REPLY_BYTES},
        {"REPLY_ARMED", uint32_t(REPLY_ARMED)}, {"REPLY_TRIED", uint32_t(REPLY_TRIED)},
        {"REPLY_STATE", R_STATE}, {"REPLY_RESULT", R_RESULT}, {"REPLY_DATA", R_DATA}, {"REPLY_REC_BITS", REPLY_REC_BITS},
    };
    for (const auto &p : kv)
        o.Set(p.first, p.second);
    return o;
}

/* tableStats(dev, ino): the process-wide table of a file identity now, or null. */
Napi::Value TableStats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!info[0].IsBigInt() || !info[1].IsBigInt())
        throw Napi::TypeError::New(env, "tableStats: dev and ino must be bigints");
    bool lossless = true;
    return registry::stats(env, info[0].As<Napi::BigInt>().Uint64Value(&lossless),
                           info[1].As<Napi::BigInt>().Uint64Value(&lossless));
}

/* tableView(id): this thread's ArrayBuffer over an open table (tests and diagnostics). */
Napi::Value TableView(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    return registry::view(env, uint32_t(int_arg(env, info[0], "tableView: id", 0, INT32_MAX)));
}

/* Per-env instance data: the module's exports and the Context class. */
class Addon : public Napi::Addon<Addon> {
 public:
    Addon(Napi::Env env, Napi::Object exports) {
        Napi::Function ctor = Context::DefineClass(env);
        context_ctor_ = Napi::Persistent(ctor);
        DefineAddon(exports,
                    {
                        InstanceValue("probe", Napi::Function::New(env, Probe, "probe"), napi_enumerable),
                        InstanceValue("createDoorbell", Napi::Function::New(env, CreateDoorbell, "createDoorbell"), napi_enumerable),
                        InstanceValue("ring", Napi::Function::New(env, Ring, "ring"), napi_enumerable),
                        InstanceValue("closeFd", Napi::Function::New(env, CloseFd, "closeFd"), napi_enumerable),
                        InstanceValue("dupFd", Napi::Function::New(env, DupFd, "dupFd"), napi_enumerable),
                        InstanceValue("dioAlign", Napi::Function::New(env, DioAlign, "dioAlign"), napi_enumerable),
                        InstanceValue("poolView", Napi::Function::New(env, PoolView, "poolView"), napi_enumerable),
                        InstanceValue("detach", Napi::Function::New(env, Detach, "detach"), napi_enumerable),
                        InstanceValue("addressMod", Napi::Function::New(env, AddressMod, "addressMod"), napi_enumerable),
                        InstanceValue("Context", ctor, napi_enumerable),
                        InstanceValue("Watch", DefineWatch(env), napi_enumerable),
                        InstanceValue("tableStats", Napi::Function::New(env, TableStats, "tableStats"), napi_enumerable),
                        InstanceValue("tableView", Napi::Function::New(env, TableView, "tableView"), napi_enumerable),
                        InstanceValue("tableRing", Napi::Function::New(env, TableRingAny, "tableRing"), napi_enumerable),
                        InstanceValue("wire", Wire(env), napi_enumerable),
                        InstanceValue("MAX_FILES", Napi::Number::New(env, MAX_FILES), napi_enumerable),
                        InstanceValue("IOV_MAX", Napi::Number::New(env, RF_IOV_MAX), napi_enumerable),
                    });
    }

 private:
    Napi::FunctionReference context_ctor_;
};

}  // namespace

}  // namespace rf

using RingfenceAddon = rf::Addon;
NODE_API_ADDON(RingfenceAddon)
