#!/usr/bin/env bash
# The baseline Annex's throughput is compared with: bare `wasmtime serve`
# (wasmtime-cli 48.0.8, the same Wasmtime as the worker) serving
# examples/wasi-http-hello, a wasi:http/proxy component doing the same work
# as the Rust hello extension's /hello.
#
# Installs wasmtime-cli into a cache directory on first use (a release build
# of Wasmtime: about 15 minutes on 2 cores), serves the component, and, when
# ANNEX_URL is set, runs `annex-loadtest compare` against it in alternating
# slices so the ratio comes from one run on one machine state.
#
# Usage:
#   scripts/bench-baseline.sh                    # install if needed, serve until Ctrl-C
#   ANNEX_URL=http://127.0.0.1:8080/api/ext/annex.hello/hello TOKEN=... \
#     scripts/bench-baseline.sh compare [-c 64] [--rounds 5] [...]
#
# Env: ANNEX_CACHE (default ~/.cache/annex), BASELINE_ADDR (default
# 127.0.0.1:8081), LT (annex-loadtest binary, default the release build).
set -euo pipefail
cd "$(dirname "$0")/.."

version=48.0.8
cache="${ANNEX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/annex}"
root="$cache/wasmtime-cli-$version"
wasmtime="$root/bin/wasmtime"
addr="${BASELINE_ADDR:-127.0.0.1:8081}"
component=examples/wasi-http-hello/dist/main.wasm

if [ ! -x "$wasmtime" ] || ! "$wasmtime" --version | grep -q "^wasmtime $version\b"; then
  echo "installing wasmtime-cli $version into $root (a release build; this takes a while)" >&2
  mkdir -p "$root"
  cargo install --quiet --locked --root "$root" wasmtime-cli --version "$version"
fi
"$wasmtime" --version >&2

if [ ! -f "$component" ]; then
  examples/build.sh
fi

# The same pooling allocator the worker uses; -S cli gives the guest stdout.
serve=("$wasmtime" serve -S cli -O pooling-allocator --addr "$addr" "$component")

if [ "${1:-}" != compare ]; then
  echo "serving $component on http://$addr/hello" >&2
  exec "${serve[@]}"
fi
shift

: "${ANNEX_URL:?set ANNEX_URL to the Annex URL of the same work (e.g. .../api/ext/annex.hello/hello)}"
lt="${LT:-${CARGO_TARGET_DIR:-target}/release/annex-loadtest}"
if [ -z "${TOKEN:-}" ] && [ -f .annex/dev.env ]; then
  TOKEN="$(sed -n 's/^ANNEX_TOKEN=//p' .annex/dev.env)"
fi
"${serve[@]}" >/dev/null 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://$addr/hello" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
curl -fsS -o /dev/null "http://$addr/hello"
"$lt" compare --a "http://$addr/hello" --b "$ANNEX_URL" --bearer "${TOKEN:?set TOKEN}" \
  -n 1000000 "$@"
