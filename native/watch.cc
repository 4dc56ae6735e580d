/* Watch: see watch.h. */
#include "watch.h"

#include <uv.h>
#include <unistd.h>
#include <fcntl.h>

#include <cerrno>
#include <climits>
#include <string>

#include "probe.h"

namespace rf {

namespace {

struct Box {
    uv_poll_t handle;
    napi_env env = nullptr;
    Napi::FunctionReference cb;
    napi_async_context actx = nullptr;
    int fd = -1;
    bool open = true;
    /* Set at thread exit: removed once the handle has closed. */
    napi_async_cleanup_hook_handle exit_hook = nullptr;
};

void on_readable(uv_poll_t *h, int status, int events) {
    Box *b = static_cast<Box *>(h->data);
    uint64_t v;
    ssize_t r = read(b->fd, &v, sizeof v); /* clear first: a later write brings us back */
    (void)r;
    if (!b->open || b->cb.IsEmpty())
        return;
    napi_env env = b->env;
    Napi::HandleScope scope(env);
    napi_value global, fn = b->cb.Value(), result;
    napi_get_global(env, &global);
    if (napi_make_callback(env, b->actx, global, fn, 0, nullptr, &result) == napi_pending_exception) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);
    }
}

/* Stop watching; the box is freed by the close callback (which also ends an exit hook). */
void close_box(Box *b) {
    if (!b->open)
        return;
    b->open = false;
    b->cb.Reset();
    if (b->actx) {
        napi_async_destroy(b->env, b->actx);
        b->actx = nullptr;
    }
    uv_poll_stop(&b->handle);
    uv_close(reinterpret_cast<uv_handle_t *>(&b->handle), [](uv_handle_t *h) {
        Box *box = static_cast<Box *>(h->data);
        if (box->exit_hook)
            napi_remove_async_cleanup_hook(box->exit_hook);
        delete box;
    });
}

class Watch : public Napi::ObjectWrap<Watch> {
 public:
    static Napi::Function Define(Napi::Env env) {
        return DefineClass(env, "Watch", {
            InstanceMethod<&Watch::Ref>("ref"),
            InstanceMethod<&Watch::Unref>("unref"),
            InstanceMethod<&Watch::Close>("close"),
        });
    }

    explicit Watch(const Napi::CallbackInfo &info) : ObjectWrap<Watch>(info) {
        Napi::Env env = info.Env();
        int fd = int(int_arg(env, info[0], "Watch: fd", 0, INT_MAX));
        if (fcntl(fd, F_GETFD) < 0)
            throw Napi::Error::New(env, "Watch: fd " + std::to_string(fd) + " is not open");
        if (!info[1].IsFunction())
            throw Napi::TypeError::New(env, "Watch: callback must be a function");
        uv_loop_t *loop = nullptr;
        if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop)
            throw Napi::Error::New(env, "Watch: this thread has no libuv loop");
        box_ = new Box;
        box_->env = env;
        box_->fd = fd;
        if (uv_poll_init(loop, &box_->handle, fd) != 0) {
            delete box_;
            box_ = nullptr;
            throw Napi::Error::New(env, "Watch: uv_poll_init failed");
        }
        box_->handle.data = box_;
        box_->cb = Napi::Persistent(info[1].As<Napi::Function>());
        napi_value name;
        napi_create_string_utf8(env, "ringfence:wake", NAPI_AUTO_LENGTH, &name);
        napi_async_init(env, nullptr, name, &box_->actx);
        uv_poll_start(&box_->handle, UV_READABLE, on_readable);
        uv_unref(reinterpret_cast<uv_handle_t *>(&box_->handle));
        napi_add_async_cleanup_hook(env, &Watch::AtExit, this, &hook_);
    }

    ~Watch() override { Shut(); }

 private:
    static void AtExit(napi_async_cleanup_hook_handle h, void *arg) {
        Watch *self = static_cast<Watch *>(arg);
        self->hook_ = nullptr;
        if (self->box_) {
            self->box_->exit_hook = h; /* removed by the close callback */
            close_box(self->box_);
            self->box_ = nullptr;
        } else {
            napi_remove_async_cleanup_hook(h);
        }
    }

    void Shut() {
        if (hook_) {
            napi_remove_async_cleanup_hook(hook_);
            hook_ = nullptr;
        }
        if (box_) {
            close_box(box_);
            box_ = nullptr;
        }
    }

    Napi::Value Ref(const Napi::CallbackInfo &info) {
        if (box_) uv_ref(reinterpret_cast<uv_handle_t *>(&box_->handle));
        return info.Env().Undefined();
    }
    Napi::Value Unref(const Napi::CallbackInfo &info) {
        if (box_) uv_unref(reinterpret_cast<uv_handle_t *>(&box_->handle));
        return info.Env().Undefined();
    }
    Napi::Value Close(const Napi::CallbackInfo &info) {
        Shut();
        return info.Env().Undefined();
    }

    Box *box_ = nullptr;
    napi_async_cleanup_hook_handle hook_ = nullptr;
};

}  // namespace

Napi::Function DefineWatch(Napi::Env env) { return Watch::Define(env); }

}  // namespace rf
