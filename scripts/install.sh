#!/bin/sh
# npm's install hook. Uses the prebuilt addon (prebuilds/linux-x64/, Node-API: one binary for
# every Node >= 20, liburing and libaio linked in) when it loads; otherwise builds from source
# with node-gyp, and says what to install when that fails.
# RINGFENCE_SKIP_INSTALL_BUILD=1: do nothing (scripts/setup.sh builds right after npm ci).
[ -n "${RINGFENCE_SKIP_INSTALL_BUILD:-}" ] && exit 0
if node-gyp-build; then exit 0; fi
cat >&2 <<'MSG'

ringfence: no prebuilt addon for this platform loads, and building it from source failed.
  To build from source, install a C++ toolchain, python3 and (for the io_uring and libaio
  backends) the libraries' headers, then reinstall:
    Debian/Ubuntu:  sudo apt-get install build-essential python3 liburing-dev libaio-dev
    Fedora/RHEL:    sudo dnf install gcc-c++ make python3 liburing-devel libaio-devel
  Without liburing-dev or libaio-dev that backend is left out of the build (the sync backend
  always builds); engine.info() then says "not compiled in: install liburing-dev and rebuild".
MSG
exit 1
