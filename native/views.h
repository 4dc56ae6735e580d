/*
 * Raw access to JavaScript memory: typed-array views for the Context, and
 * the module functions that hand out or take away views of the buffer
 * pool (poolView, detach, addressMod).
 */
#ifndef RINGFENCE_VIEWS_H
#define RINGFENCE_VIEWS_H

#include <napi.h>

#include <cstddef>

namespace rf {

/* Raw view of a typed array; data already includes byteOffset. */
struct View {
    void *data = nullptr;
    size_t length = 0; /* elements */
};

/*
 * True if v is a typed array of type want; fills *out.  Uses
 * napi_get_typedarray_info rather than the ArrayBuffer: Node 20 cannot
 * hand out a SharedArrayBuffer through napi_get_arraybuffer_info, but the
 * typed array path works for both kinds.
 */
bool typed_view(napi_env env, napi_value v, napi_typedarray_type want, View *out);

/*
 * True if typed array v is over a SharedArrayBuffer.  Memory the addon
 * keeps a pointer into must be: an ArrayBuffer can be detached and freed
 * by its owner whatever references the addon holds.
 */
bool over_shared(napi_env env, napi_value v);

Napi::Value PoolView(const Napi::CallbackInfo &info);
Napi::Value Detach(const Napi::CallbackInfo &info);
Napi::Value AddressMod(const Napi::CallbackInfo &info);

}  // namespace rf

#endif
