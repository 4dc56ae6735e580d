/*
 * Views of the buffer pool handed to JavaScript: see views.h.
 *
 * poolView() gives each pool allocation an ArrayBuffer of its own, so the
 * engine can take it away again (detach()) when the allocation is freed:
 * every Uint8Array a user made over it, subarrays included, becomes
 * length 0 at once instead of silently aliasing the next allocation.
 */
#include "views.h"

#include <cstdint>
#include <string>

#include "probe.h"

namespace rf {

namespace {

/* Largest integer a double holds exactly: offsets and lengths stay below. */
constexpr int64_t kMaxSafe = (int64_t(1) << 53) - 1;

/*
 * The external ArrayBuffer's finalizer: drop the strong reference to the
 * pool's SharedArrayBuffer that kept its memory alive (see PoolView).
 *
 * Node runs it on the JavaScript thread that created the view (the
 * backing store's deleter may run on a GC thread; Node defers the call
 * to the env's own thread), so napi_delete_reference is allowed here.  It
 * runs once no JavaScript object can reach the bytes any more: after the
 * ArrayBuffer and every view of it were collected, or after it was
 * detached (which empties every view) and collected, or at env teardown
 * (Node detaches the ArrayBuffer first, then calls it).
 */
void release_pool(napi_env env, void * /* data */, void *hint) {
    napi_delete_reference(env, static_cast<napi_ref>(hint));
}

}  // namespace

bool typed_view(napi_env env, napi_value v, napi_typedarray_type want, View *out) {
    bool is = false;
    if (napi_is_typedarray(env, v, &is) != napi_ok || !is)
        return false;
    napi_typedarray_type type;
    if (napi_get_typedarray_info(env, v, &type, &out->length, &out->data, nullptr,
                                 nullptr) != napi_ok)
        return false;
    return type == want;
}

bool over_shared(napi_env env, napi_value v) {
    napi_value ab;
    if (napi_get_typedarray_info(env, v, nullptr, nullptr, nullptr, &ab, nullptr) != napi_ok)
        return false;
    /*
     * A typed array's buffer is an ArrayBuffer or a SharedArrayBuffer, and
     * napi_is_arraybuffer says false for the latter (Node 20 has no
     * napi_is_sharedarraybuffer).
     */
    bool plain = true;
    return napi_is_arraybuffer(env, ab, &plain) == napi_ok && !plain;
}

/*
 * poolView(pool, offset, length): a NEW external, detachable ArrayBuffer
 * over bytes [offset, offset + length) of pool's memory.
 *
 * Why the view cannot outlive the memory (no use-after-free, whatever is
 * collected first):
 *   - the bytes belong to the pool's SharedArrayBuffer (its backing store
 *     lives as long as some SharedArrayBuffer object over it does, in
 *     this thread or another);
 *   - the view holds a strong napi reference (refcount 1) to that
 *     SharedArrayBuffer object: a GC root.  While the view's ArrayBuffer
 *     exists, the SharedArrayBuffer is reachable, so it is not collected
 *     even when the engine, the pool Uint8Array and every other reference
 *     are gone;
 *   - the reference is dropped only by the finalizer, i.e. after no
 *     JavaScript object can reach the bytes through the view any more
 *     (see release_pool).
 * The engine being collected while a user still holds a view therefore
 * only means the pool's memory stays allocated a little longer.
 *
 * Only over a SharedArrayBuffer: an ArrayBuffer could be detached or
 * transferred by its owner and its memory freed under the view, which no
 * reference to the ArrayBuffer object would prevent.  A SharedArrayBuffer
 * can be neither (and a growable one only grows, in place).
 *
 * Node 20 marks external ArrayBuffers untransferable, so the view cannot be
 * moved to another thread (whose lifetime this reference does not cover);
 * postMessage copies it instead.
 */
Napi::Value PoolView(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    View pool;
    if (!typed_view(env, info[0], napi_uint8_array, &pool))
        throw Napi::TypeError::New(env, "poolView: pool must be a Uint8Array");
    if (!over_shared(env, info[0]))
        throw Napi::TypeError::New(env, "poolView: pool must be a Uint8Array over a SharedArrayBuffer "
                                        "(an ArrayBuffer can be detached and freed under the view)");
    int64_t offset = int_arg(env, info[1], "poolView: offset", 0, kMaxSafe);
    int64_t length = int_arg(env, info[2], "poolView: length", 1, kMaxSafe);
    if (uint64_t(offset) + uint64_t(length) > pool.length)
        throw Napi::RangeError::New(env, "poolView: offset + length = " +
                                             std::to_string(offset + length) +
                                             " is past the end of the pool (" +
                                             std::to_string(pool.length) + " bytes)");

    napi_value ab;
    if (napi_get_typedarray_info(env, info[0], nullptr, nullptr, nullptr, &ab, nullptr) != napi_ok)
        throw Napi::Error::New(env, "poolView: cannot get the pool's buffer");
    napi_ref ref;
    if (napi_create_reference(env, ab, 1, &ref) != napi_ok)
        throw Napi::Error::New(env, "poolView: napi_create_reference failed");
    napi_value out;
    napi_status st = napi_create_external_arraybuffer(
        env, static_cast<uint8_t *>(pool.data) + offset, size_t(length), release_pool, ref, &out);
    if (st != napi_ok) {
        /*
         * Leak ref on purpose: Node may or may not already have called the
         * finalizer on this path, and deleting it twice would crash.  A
         * leaked reference only keeps the pool alive.  (Not seen in
         * practice: the length is that of an existing buffer.)
         */
        throw Napi::Error::New(env, "poolView: napi_create_external_arraybuffer failed");
    }
    return Napi::Value(env, out);
}

/*
 * detach(ab): napi_detach_arraybuffer.  Every view of ab becomes length 0.
 * Detaching an already detached ArrayBuffer is a no-op, not an error: the
 * engine may free an allocation whose view the user already detached
 * (transferred), and there is nothing left to protect.
 */
Napi::Value Detach(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bool is = false;
    if (napi_is_arraybuffer(env, info[0], &is) != napi_ok || !is)
        throw Napi::TypeError::New(env, "detach: expected an ArrayBuffer (a SharedArrayBuffer or a "
                                        "typed array cannot be detached)");
    bool detached = false;
    if (napi_is_detached_arraybuffer(env, info[0], &detached) == napi_ok && detached)
        return env.Undefined();
    napi_status st = napi_detach_arraybuffer(env, info[0]);
    if (st == napi_detachable_arraybuffer_expected)
        throw Napi::TypeError::New(env, "detach: this ArrayBuffer is not detachable "
                                        "(e.g. a WebAssembly.Memory buffer)");
    if (st != napi_ok)
        throw Napi::Error::New(env, "detach: napi_detach_arraybuffer failed");
    return env.Undefined();
}

/* addressMod(u8, m): (address of u8[0]) mod m, m a power of two <= 2^20. */
Napi::Value AddressMod(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    View v;
    if (!typed_view(env, info[0], napi_uint8_array, &v))
        throw Napi::TypeError::New(env, "addressMod: u8 must be a Uint8Array");
    int64_t m = int_arg(env, info[1], "addressMod: m", 1, int64_t(1) << 20);
    if (m & (m - 1))
        throw Napi::RangeError::New(env, "addressMod: m must be a power of two, got " +
                                             std::to_string(m));
    return Napi::Number::New(env, double(reinterpret_cast<uintptr_t>(v.data) & uintptr_t(m - 1)));
}

}  // namespace rf
