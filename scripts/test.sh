#!/usr/bin/env bash
# Runs every uvu test file in its own process (they start worker threads, mount volumes)
# and ends with one line: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0; failed=0; skipped=0
files=("$@")
if [ "${#files[@]}" -eq 0 ]; then mapfile -t files < <(ls test/*.test.mjs | sort); fi
for f in "${files[@]}"; do
  echo "=== $f"
  out=$(mktemp)
  timeout "${RINGFENCE_TEST_TIMEOUT:-900}" node "$f" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  t=$(grep -aE '^\s*Total:' "$out" | tail -1 | grep -oE '[0-9]+' || true)
  p=$(grep -aE '^\s*Passed:' "$out" | tail -1 | grep -oE '[0-9]+' || true)
  s=$(grep -aE '^\s*Skipped:' "$out" | tail -1 | grep -oE '[0-9]+' || true)
  if [ -z "$t" ] || [ -z "$p" ]; then
    echo "!!! $f exited with code $rc without a uvu summary: counted as 1 failed"
    failed=$((failed + 1))
  else
    s=${s:-0}
    passed=$((passed + p)); skipped=$((skipped + s))
    f_failed=$((t - p))   # uvu leaves skipped tests out of Total
    if [ "$rc" -ne 0 ] && [ "$f_failed" -eq 0 ]; then f_failed=1; echo "!!! $f exited with code $rc"; fi
    failed=$((failed + f_failed))
  fi
  rm -f "$out"
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
