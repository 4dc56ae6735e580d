#!/usr/bin/env bash
# Runs every uvu test file in its own process (they start worker threads, mount volumes)
# and ends with one line: "N passed, N failed, N skipped".
#   bash scripts/test.sh [test/x.test.mjs ...]
#   RINGFENCE_NODE=/path/to/node   the Node binary to run the tests with (default: node on PATH);
#                                  its directory goes first on PATH, so child processes use it too
#   RINGFENCE_TEST_SKIP="a b"      leave out test/a.test.mjs and test/b.test.mjs (listed, not counted)
#   RINGFENCE_TEST_TIMEOUT=900     seconds per file
#   RINGFENCE_TEST_INLINE="a b"    the mode-agnostic files, run a second time with
#                                  RINGFENCE_TEST_MODE=inline (default: the list below; "" for none)
set -uo pipefail
cd "$(dirname "$0")/.."
NODE=${RINGFENCE_NODE:-node}
if [ -n "${RINGFENCE_NODE:-}" ]; then
  [ -x "$NODE" ] || { echo "RINGFENCE_NODE=$NODE is not an executable"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
  NODE=$(cd "$(dirname "$NODE")" && pwd)/$(basename "$NODE")
  export PATH="$(dirname "$NODE"):$PATH"
fi
echo "=== node $("$NODE" --version) ($(command -v "$NODE"))"
passed=0; failed=0; skipped=0
files=("$@")
runs=()
if [ "${#files[@]}" -eq 0 ]; then
  mapfile -t files < <(ls test/*.test.mjs | sort)
  # Files written with worker-mode options ({ workers: N }) that hold in either mode: run once
  # as written, then again with test/helpers/env.mjs engineOptions() turning them into inline mode.
  inline=${RINGFENCE_TEST_INLINE-engine lifetimes unaligned xfs-race durability fulldisk short-writes zero-admission inputs leaks policy overload}
  for f in "${files[@]}"; do runs+=("$f"); done
  for n in $inline; do runs+=("inline:test/$n.test.mjs"); done
else
  for f in "${files[@]}"; do runs+=("$f"); done
fi
skip=" ${RINGFENCE_TEST_SKIP:-} "
t_all=$SECONDS
for run in "${runs[@]}"; do
  f=${run#inline:}
  mode=""; [ "$run" != "$f" ] && mode=inline
  name=$(basename "$f" .test.mjs)
  if [[ "$skip" == *" $name "* ]]; then echo "=== $f: not run with this Node (RINGFENCE_TEST_SKIP)"; continue; fi
  label=$f; [ -n "$mode" ] && label="$f (inline mode)"
  echo "=== $label"
  out=$(mktemp)
  t0=$SECONDS
  RINGFENCE_TEST_MODE=$mode timeout "${RINGFENCE_TEST_TIMEOUT:-900}" "$NODE" "$f" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  echo "=== $label: $((SECONDS - t0)) s"
  t=$(grep -aE '^\s*Total:' "$out" | tail -1 | grep -oE '[0-9]+' || true)
  p=$(grep -aE '^\s*Passed:' "$out" | tail -1 | grep -oE '[0-9]+' || true)
  s=$(grep -aE '^\s*Skipped:' "$out" | tail -1 | grep -oE '[0-9]+' || true)
  if [ -z "$t" ] || [ -z "$p" ]; then
    echo "!!! $label exited with code $rc without a uvu summary: counted as 1 failed"
    failed=$((failed + 1))
  else
    s=${s:-0}
    passed=$((passed + p)); skipped=$((skipped + s))
    f_failed=$((t - p))   # uvu leaves skipped tests out of Total
    if [ "$rc" -ne 0 ] && [ "$f_failed" -eq 0 ]; then f_failed=1; echo "!!! $label exited with code $rc"; fi
    failed=$((failed + f_failed))
  fi
  rm -f "$out"
done
echo "=== node $("$NODE" --version): $((SECONDS - t_all)) s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
