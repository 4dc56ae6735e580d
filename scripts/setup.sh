#!/usr/bin/env bash
# One-step set-up for a fresh Debian/Ubuntu machine with Node >= 20:
# system packages, npm ci, the native addon (prebuildify: build/ and prebuilds/linux-x64/, with
# liburing and libaio linked in statically) and the TypeScript, then the main job.
# Usage: bash scripts/setup.sh [--no-run] [main-job arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

run_main=1
if [ "${1:-}" = "--no-run" ]; then run_main=0; shift; fi

need_node_major=20
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt "$need_node_major" ]; then
  echo "ringfence needs Node >= $need_node_major (found: $(node --version 2>/dev/null || echo none)); install it first" >&2
  exit 2
fi

pkgs=(liburing-dev libaio-dev xfsprogs fio qemu-utils libnbd-bin nbdkit build-essential python3 valgrind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "==> installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export JOBS=${JOBS:-max}   # node-gyp: compile on every core
echo "==> npm ci, then npm run build (the native addon with prebuildify + node-gyp, and the TypeScript)"
# The install script would build the addon a first time; npm run build builds it right after.
RINGFENCE_SKIP_INSTALL_BUILD=1 npm ci --no-audit --no-fund
npm run build --silent

if [ "$run_main" = 1 ]; then
  echo "==> main job: node dist/src/cli.js stress $* (the embedded default volume; see docs/STRESS.md)"
  node dist/src/cli.js stress "$@"
fi
