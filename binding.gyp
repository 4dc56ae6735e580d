# Build description for the ringfence native addon.
#
#   node-gyp rebuild                         -> build/Release/ringfence.node
#   RINGFENCE_SANITIZE=1 node-gyp rebuild    -> same, instrumented with ASan+UBSan
#
# A sanitized addon must be loaded into a process that has the ASan runtime
# first, e.g. LD_PRELOAD=$(gcc -print-file-name=libasan.so) node ...
{
  'variables': {
    # Read once at configure time so the choice is baked into the Makefiles.
    'sanitize%': '<!(echo ${RINGFENCE_SANITIZE:-0})',
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
      'defines': [ 'NAPI_VERSION=8', '_GNU_SOURCE' ],
      'cflags': [ '-O2', '-Wall', '-Wextra', '-Wno-unused-parameter' ],
      'cflags_cc': [ '-std=gnu++17' ],
      'libraries': [ '-luring', '-laio' ],
      'conditions': [
        [ 'sanitize==1', {
          'cflags': [ '-fsanitize=address,undefined', '-fno-omit-frame-pointer', '-g' ],
          'ldflags': [ '-fsanitize=address,undefined', '-fno-omit-frame-pointer' ],
        } ],
      ],
    },
  ],
}
