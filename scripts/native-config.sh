#!/bin/sh
# Build-time backend selection for binding.gyp, like fio's CONFIG_ flags.
#
#   sh scripts/native-config.sh have liburing|libaio   -> 1 if the backend can be compiled in, else 0
#   sh scripts/native-config.sh lib  liburing|libaio   -> what to link: the static archive's path
#                                                         (liburing.a / libaio.a), else -luring / -laio
#
# A backend is compiled in when its header compiles and its library is found (the static
# archive preferred, so a prebuilt addon does not depend on liburing.so / libaio.so at run
# time). RINGFENCE_NO_LIBURING=1 / RINGFENCE_NO_LIBAIO=1 force a backend out (to test the
# build of a machine without liburing-dev / libaio-dev). The sync backend is always built.
set -u
what=$1 name=$2
case "$name" in
  liburing) header=liburing.h short=uring force=${RINGFENCE_NO_LIBURING:-0} ;;
  libaio)   header=libaio.h   short=aio   force=${RINGFENCE_NO_LIBAIO:-0} ;;
  *) echo "native-config.sh: unknown library $name" >&2; exit 2 ;;
esac
cc=${CC:-cc}
command -v "$cc" >/dev/null 2>&1 || cc=gcc

lib() {
  p=$("$cc" -print-file-name="$name.a" 2>/dev/null); case "$p" in /*) p=$(readlink -f "$p" 2>/dev/null || echo "$p") ;; esac
  case "$p" in /*) [ -f "$p" ] && { echo "$p"; return 0; } ;; esac
  p=$("$cc" -print-file-name="$name.so" 2>/dev/null)
  case "$p" in /*) [ -e "$p" ] && { echo "-l$short"; return 0; } ;; esac
  return 1
}

have() {
  case "$force" in 1|true|yes) return 1 ;; esac
  printf '#include <%s>\nint main(void) { return 0; }\n' "$header" | "$cc" -x c -fsyntax-only - >/dev/null 2>&1 || return 1
  lib >/dev/null
}

case "$what" in
  have) if have; then echo 1; else echo 0; fi ;;
  lib)  if have; then lib; else echo ""; fi ;;
  *) echo "native-config.sh: unknown query $what" >&2; exit 2 ;;
esac
