/*
 * Factories of the backends that this build left out (binding.gyp drops
 * uring_backend.cc without liburing, aio_backend.cc without libaio): they
 * refuse with the reason 'auto' reports.  Empty when both are compiled in.
 */
#include "backend.h"
#include "config.h"

namespace rf {

#if !RF_HAVE_LIBURING
std::unique_ptr<Backend> make_uring_backend(const BackendConfig &) {
    throw BackendError(RF_NO_LIBURING_REASON);
}
#endif

#if !RF_HAVE_LIBAIO
std::unique_ptr<Backend> make_aio_backend(const BackendConfig &) {
    throw BackendError(RF_NO_LIBAIO_REASON);
}
#endif

}  // namespace rf
