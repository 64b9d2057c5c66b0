#!/usr/bin/env bash
# Runs the issue-7 scenario table against a running Annex prepared by
# scripts/bench-setup.sh (default: `annex dev` on 127.0.0.1:8080) and writes
# one JSON and one Markdown report per scenario to OUT_DIR.
#
# Usage: scripts/bench.sh [OUT_DIR]   (env: LT = annex-loadtest binary,
# BASE = edge URL, TOKEN = bearer for tenant dev, BENCH = bench-setup dir,
# DURATION = seconds per run, default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.annex/bench/results}"
lt="${LT:-${CARGO_TARGET_DIR:-target}/release/annex-loadtest}"
base="${BASE:-http://127.0.0.1:8080}"
bench="${BENCH:-.annex/bench}"
d="${DURATION:-8}s"
if [ -z "${TOKEN:-}" ] && [ -z "${ANNEX_CONTROL_PLANE_URL:-}" ] && [ -f .annex/dev.env ]; then
  TOKEN="$(sed -n 's/^ANNEX_TOKEN=//p' .annex/dev.env)"
fi
hello="${HELLO:-annex.hello}"
mkdir -p "$out"
run() {
  local name="$1"; shift
  echo "== $name" >&2
  "$lt" "$@" --json "$out/$name.json" --markdown "$out/$name.md" | tee "$out/$name.txt"
}
common=(--base-url "$base" --bearer "$TOKEN" --warmup 2s -d "$d")
run hello-c64 scenario hello --extension "$hello" -c 64 -n 1000000 "${common[@]}"
run hello-c1 scenario hello --extension "$hello" -c 1 -n 1000000 "${common[@]}"
run echo-1k scenario echo-1k --extension "$hello" "${common[@]}"
run echo-64k scenario echo-64k --extension "$hello" "${common[@]}"
run kv-read scenario kv-read --extension annex-bench.probe "${common[@]}"
run kv-write scenario kv-write --extension annex-bench.probe "${common[@]}"
run secrets scenario secrets --extension annex-bench.probe --secret-key loadtest "${common[@]}"
run js-echo-c64 http --url "$base/api/ext/annex-bench.js-echo/dynamic/echo" --bearer "$TOKEN" -c 64 --warmup 2s -d "$d"
run multi-tenant-zipf scenario multi-tenant-zipf --installs-file "$bench/installs.txt" -c 64 "${common[@]}"
run noisy-neighbour scenario noisy-neighbour --extension "$hello" --flood-extension annex-bench.misbehave "${common[@]}"
