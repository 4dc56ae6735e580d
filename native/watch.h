/*
 * Watch: calls a JavaScript function on this thread's libuv loop whenever an
 * eventfd (one the caller owns, e.g. from createDoorbell()) becomes
 * readable, after clearing it.  Worker mode uses it for the engine thread's
 * completion wake-up: a worker writes the eventfd instead of Atomics.notify.
 * The poll handle is referenced only between ref() and unref(), and is
 * closed through an async cleanup hook at thread exit (like inline.h).
 */
#ifndef RINGFENCE_WATCH_H
#define RINGFENCE_WATCH_H

#include <napi.h>

namespace rf {

Napi::Function DefineWatch(Napi::Env env);

}  // namespace rf

#endif
