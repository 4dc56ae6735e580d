# Build description for the ringfence native addon.
#
#   node-gyp rebuild                         -> build/Release/ringfence.node
#   RINGFENCE_SANITIZE=1 node-gyp rebuild    -> same, instrumented with ASan+UBSan
#   npm run build:prebuild                   -> same, copied to prebuilds/linux-x64/ (prebuildify --napi)
#
# Backends are chosen at build time, like fio's CONFIG_ flags (scripts/native-config.sh):
# io_uring is compiled in when liburing's header and library are found (RF_HAVE_LIBURING=1),
# libaio likewise (RF_HAVE_LIBAIO=1); the static archives (liburing.a, libaio.a) are linked
# when present, so the addon needs neither liburing.so nor libaio.so at run time. A backend
# that is not compiled in is refused with "not compiled in: install liburing-dev and rebuild".
# RINGFENCE_NO_LIBURING=1 / RINGFENCE_NO_LIBAIO=1 force one out. sync is always built.
#
# A sanitized addon must be loaded into a process that has the ASan runtime
# first, e.g. LD_PRELOAD=$(gcc -print-file-name=libasan.so) node ...
{
  'variables': {
    # Read once at configure time so the choice is baked into the Makefiles.
    'sanitize%': '<!(echo ${RINGFENCE_SANITIZE:-0})',
    'have_liburing%': '<!(sh scripts/native-config.sh have liburing)',
    'have_libaio%': '<!(sh scripts/native-config.sh have libaio)',
  },
  'targets': [
    {
      'target_name': 'ringfence',
      'sources': [ '<!@(ls -1 native/*.cc)' ],
      'dependencies': [
        # C++ exceptions on: Napi::Error is thrown from constructors/methods
        # and turned into JS exceptions by node-addon-api.
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except",
      ],
      # Node-API only (no V8/node internals): one binary serves every Node >= 20.
      # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: a call that fails while its thread is being
      # terminated (Worker.terminate()) returns quietly instead of throwing a C++ exception that
      # nothing can catch (std::terminate): napi_throw cannot run JavaScript then.
      'defines': [ 'NAPI_VERSION=8', '_GNU_SOURCE', 'NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS',
                   'RF_HAVE_LIBURING=<(have_liburing)', 'RF_HAVE_LIBAIO=<(have_libaio)' ],
      'cflags': [ '-O2', '-Wall', '-Wextra', '-Wno-unused-parameter' ],
      'cflags_cc': [ '-std=gnu++17' ],
      # The archives' symbols stay inside the addon (and their non-PIC-safe relocations resolve).
      'ldflags': [ '-Wl,--exclude-libs,ALL', '-Wl,--version-script=<(module_root_dir)/native/exports.map' ],
      'conditions': [
        [ 'have_liburing==1', {
          'libraries': [ '<!(sh scripts/native-config.sh lib liburing)' ],
        }, {
          'sources!': [ 'native/uring_backend.cc' ],
        } ],
        [ 'have_libaio==1', {
          'libraries': [ '<!(sh scripts/native-config.sh lib libaio)' ],
        }, {
          'sources!': [ 'native/aio_backend.cc' ],
        } ],
        [ 'sanitize==1', {
          'cflags': [ '-fsanitize=address,undefined', '-fno-omit-frame-pointer', '-g' ],
          'ldflags': [ '-fsanitize=address,undefined', '-fno-omit-frame-pointer' ],
        } ],
      ],
    },
  ],
}
