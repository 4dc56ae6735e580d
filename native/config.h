/*
 * Build-time backend selection (binding.gyp defines these from
 * scripts/native-config.sh, like fio's CONFIG_ flags).  A build that does not
 * go through binding.gyp gets every backend, as before.
 */
#ifndef RINGFENCE_CONFIG_H
#define RINGFENCE_CONFIG_H

#ifndef RF_HAVE_LIBURING
#define RF_HAVE_LIBURING 1
#endif
#ifndef RF_HAVE_LIBAIO
#define RF_HAVE_LIBAIO 1
#endif

/* The reason a backend that is not compiled in is refused (engine.info().workers[i].refused). */
#define RF_NO_LIBURING_REASON "not compiled in: install liburing-dev and rebuild"
#define RF_NO_LIBAIO_REASON "not compiled in: install libaio-dev and rebuild"

#endif
