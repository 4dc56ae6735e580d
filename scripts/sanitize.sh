#!/usr/bin/env bash
# Memory-safety checks of the native addon:
#   1. build it with ASan+UBSan (RINGFENCE_SANITIZE=1) and run test/native.test.mjs, a short
#      engine workload in each mode (worker, inline), test/inline.test.mjs (inline teardown:
#      Worker threads ending with engines open, helper jobs), test/threads.test.mjs (the
#      process-wide table registry: engines on several threads, a thread terminated) and a short ring fuzz
#      (test/fuzz.test.mjs) under it: zero reports allowed;
#   2. rebuild it normally and run a tiny engine workload under valgrind memcheck: no invalid
#      reads or writes allowed;
#   3. ALWAYS (trap, even on failure or Ctrl-C) leave the normal addon built.
# One line per step with its duration; exit status non-zero on any finding.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=$(mktemp -d /var/tmp/rf-sanitize-XXXXXX)
WORK=$(mktemp -d /var/tmp/rf-sanitize-work-XXXXXX)
findings=0
normal_built=0

rebuild_normal() {
  if [ "$normal_built" = 0 ]; then
    local t0=$SECONDS
    if RINGFENCE_SANITIZE=0 npm run build:native >"$LOG/build-normal.log" 2>&1; then
      normal_built=1; echo "step rebuild-normal: ok ($((SECONDS - t0)) s)"
    else
      echo "step rebuild-normal: FAILED ($((SECONDS - t0)) s) see $LOG/build-normal.log"; findings=$((findings + 1))
    fi
  fi
}
on_exit() {
  rebuild_normal
  rm -rf "$WORK"
  if [ "$findings" -eq 0 ]; then rm -rf "$LOG"; echo "sanitize: PASS"; exit 0; fi
  echo "logs: $LOG"
  echo "sanitize: FAIL ($findings finding(s))"; exit 1
}
trap on_exit EXIT
trap 'echo interrupted; findings=$((findings + 1)); exit 1' INT TERM

step() { # name, log, command...
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  echo "$rc" >"$log.rc"
  STEP_SECS=$((SECONDS - t0))
  return $rc
}

# ---- 1. ASan + UBSan ------------------------------------------------------------------
normal_built=0
if ! step build-asan "$LOG/build-asan.log" env RINGFENCE_SANITIZE=1 npm run build:native; then
  echo "step build-asan: FAILED ($STEP_SECS s) see $LOG/build-asan.log"; findings=$((findings + 1)); exit 1
fi
# (grep -c, not grep -q: with pipefail an early-exiting grep makes nm die of SIGPIPE)
[ "$(nm -D build/Release/ringfence.node 2>/dev/null | grep -c __asan_init)" -gt 0 ] || \
  { echo "step build-asan: the addon is not instrumented (no __asan_init)"; findings=$((findings + 1)); exit 1; }
echo "step build-asan: ok ($STEP_SECS s)"

ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
PRELOAD="$ASAN_LIB"
[ -f "$UBSAN_LIB" ] && PRELOAD="$ASAN_LIB:$UBSAN_LIB"
export_asan() {
  env LD_PRELOAD="$PRELOAD" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=0:log_path="$LOG/asan" \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0:log_path="$LOG/ubsan" \
    "$@"
}
asan_reports() { cat "$LOG"/asan.* "$LOG"/ubsan.* 2>/dev/null | grep -cE 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' ; }
for t in "native:node test/native.test.mjs" "engine-workload:node test/helpers/child-workload.mjs $WORK 400" \
         "engine-workload-inline:env RINGFENCE_TEST_MODE=inline node test/helpers/child-workload.mjs $WORK 400" \
         "inline:node test/inline.test.mjs" \
         "threads:node test/threads.test.mjs" \
         "fuzz:env RINGFENCE_FUZZ_N=3000 node test/fuzz.test.mjs"; do
  name=${t%%:*}; cmd=${t#*:}
  before=$(asan_reports)
  # shellcheck disable=SC2086
  step "asan-$name" "$LOG/asan-$name.log" export_asan $cmd; rc=$?
  # Reports also go to stderr when the log_path cannot be used.
  now=$(( $(asan_reports) + $(grep -cE 'ERROR: AddressSanitizer|runtime error:' "$LOG/asan-$name.log") ))
  new=$((now - before))
  if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
    echo "step asan-$name: FAILED ($STEP_SECS s): exit $rc, $new sanitizer report(s); see $LOG/asan-$name.log $LOG/asan.* $LOG/ubsan.*"
    findings=$((findings + 1))
  else
    echo "step asan-$name: ok, 0 sanitizer reports ($STEP_SECS s)"
  fi
done

# ---- 2. valgrind memcheck on the normal build ---------------------------------------------
rebuild_normal
if ! command -v valgrind >/dev/null; then
  echo "step valgrind: SKIPPED (valgrind not installed: apt-get install valgrind)"
else
  # --undef-value-errors=no: V8's JIT and GC produce uninitialised-value noise; invalid reads
  # and writes, bad frees and overlaps are still reported and fail the run (exit 99).
  step valgrind "$LOG/valgrind.log" valgrind --tool=memcheck --error-exitcode=99 --undef-value-errors=no \
    --trace-children=no --num-callers=30 node test/helpers/child-workload.mjs "$WORK" 100 io_uring,sync
  rc=$?
  inval=$(grep -cE 'Invalid (read|write)|Invalid free|Mismatched free|Source and destination overlap' "$LOG/valgrind.log")
  errs=$(grep -oE 'ERROR SUMMARY: [0-9]+' "$LOG/valgrind.log" | tail -1)
  if [ "$rc" -ne 0 ] || [ "$inval" -gt 0 ]; then
    echo "step valgrind: FAILED ($STEP_SECS s): exit $rc, $inval invalid access report(s), $errs; see $LOG/valgrind.log"
    findings=$((findings + 1))
  else
    echo "step valgrind: ok, 0 invalid reads/writes, $errs ($STEP_SECS s)"
  fi
fi
