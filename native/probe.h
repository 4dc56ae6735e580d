/*
 * Module-level functions that need no Context: capability probing, the
 * doorbell eventfd, and O_DIRECT alignment discovery.
 */
#ifndef RINGFENCE_PROBE_H
#define RINGFENCE_PROBE_H

#include <napi.h>

namespace rf {

Napi::Value Probe(const Napi::CallbackInfo &info);
Napi::Value CreateDoorbell(const Napi::CallbackInfo &info);
Napi::Value Ring(const Napi::CallbackInfo &info);
Napi::Value CloseFd(const Napi::CallbackInfo &info);
/* dupFd(fd): a close-on-exec duplicate of an open socket's fd (serve's transmission socket). */
Napi::Value DupFd(const Napi::CallbackInfo &info);
Napi::Value DioAlign(const Napi::CallbackInfo &info);

/* Integer argument check shared with addon.cc: throws TypeError/RangeError. */
int64_t int_arg(const Napi::Env &env, const Napi::Value &v, const char *what,
                int64_t lo, int64_t hi);

}  // namespace rf

#endif
