#!/usr/bin/env bash
# Migrating a tenant base (issue 18, part 4), measured: 26 JavaScript
# extensions installed at once on a fresh `annex dev`; how long until every
# one answers through the edge, and the peak resident memory of the
# `annex dev` process (control plane, worker and edge together: an upper
# bound for the worker's own). Figures go to BENCHMARKS.md and
# docs/operators.md ("Migrating from Alga").
#
# Rounds (the first argument; default `shared distinct`):
#   shared     examples/js-echo published 26 times under different names:
#              26 bundles, one component digest, so one compile.
#   distinct   26 variants of js-echo, each with its own digest: a custom
#              section holding its number appended to dist/main.wasm (the
#              same code, which Wasmtime compiles in full each time;
#              building 26 sources with jco would take ~20 min for the
#              same result).
#   unbounded  `distinct` with the compile queue opened up (26 at once, no
#              memory budget), the way a worker behaved before the queue.
#
# Needs: a release build of `annex` (ANNEX, default
# $CARGO_TARGET_DIR/release/annex), examples/build.sh done, curl, python3.
# Each round starts its own `annex dev` on free ports in a scratch directory
# (PostgreSQL when installed, else the in-memory store) and stops it; the
# log (stdout) counts the compiles ("component compiled" lines).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
annex="${ANNEX:-${CARGO_TARGET_DIR:-target}/release/annex}"
annex="$(cd "$(dirname "$annex")" && pwd)/$(basename "$annex")"
count="${COUNT:-26}"
if [ $# -eq 0 ]; then rounds=(shared distinct); else rounds=("$@"); fi
wasm="$root/examples/js-echo/dist/main.wasm"
[ -x "$annex" ] || { echo "no annex binary at $annex (cargo build --release -p annex)" >&2; exit 1; }
[ -f "$wasm" ] || { echo "no $wasm (run examples/build.sh)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

round() {
  local mode="$1" work; work="$(mktemp -d)"
  local edge cp worker; edge=$(free_port); cp=$(free_port); worker=$(free_port)
  local extra_env=()
  if [ "$mode" = unbounded ]; then
    extra_env=(ANNEX_WORKER_COMPILE_CONCURRENCY="$count" ANNEX_WORKER_COMPILE_MEMORY_MB=1000000)
  fi
  # `exec`: the background job is `annex dev` itself, stopped by its id.
  (cd "$work" && exec env "${extra_env[@]}" "$annex" dev --no-sample --examples "$root/examples" \
     --edge-port "$edge" --control-plane-port "$cp" --worker-port "$worker" 2> "$work/dev.log" > "$work/dev.out") &
  local dev_pid=$!
  local deadline=$(( $(date +%s) + 300 ))
  until [ -f "$work/.annex/dev.env" ]; do
    kill -0 "$dev_pid" 2>/dev/null || { cat "$work/dev.log" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "annex dev did not start" >&2; exit 1; }
    sleep 0.2
  done
  set -a; . "$work/.annex/dev.env"; set +a
  cd "$work"
  "$annex" keygen --out migrate.pem > /dev/null
  "$annex" trust add --publisher migrate --key migrate.pub.pem > /dev/null
  for i in $(seq 1 "$count"); do
    local ext="$work/ext/mig-$i"
    mkdir -p "$ext/dist"
    if [ "$mode" = shared ]; then
      cp "$wasm" "$ext/dist/main.wasm"
    else
      python3 - "$wasm" "$ext/dist/main.wasm" "$i" <<'PY'
import sys
src, dst, tag = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7f; n >>= 7
        if n: out.append(b | 0x80)
        else: out.append(b); return bytes(out)
name = b"annex-variant"
body = leb(len(name)) + name + tag
open(dst, "wb").write(open(src, "rb").read() + b"\x00" + leb(len(body)) + body)
PY
    fi
    python3 - "$root/examples/js-echo/manifest.json" "mig-$i" > "$ext/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["name"], m["publisher"] = sys.argv[2], "migrate"
print(json.dumps(m))
PY
    (cd "$work/ext" && "$annex" pack "mig-$i" > /dev/null && "$annex" sign "mig-$i/bundle.tar.zst" --key ../migrate.pem > /dev/null)
    "$annex" publish "$ext/bundle.tar.zst" > /dev/null
  done
  local digests; digests=$(sha256sum "$work"/ext/*/dist/main.wasm | cut -d' ' -f1 | sort -u | wc -l)

  # Install all at once, then call each until it answers.
  local t0; t0=$(now)
  local installs=()
  for i in $(seq 1 "$count"); do
    "$annex" install "migrate.mig-$i" > /dev/null &
    installs+=($!)
  done
  wait "${installs[@]}"
  local installed; installed=$(now)
  declare -A ready=()
  local compiling=0 other=0 first="" last=""
  deadline=$(( $(date +%s) + 1800 ))
  while [ "${#ready[@]}" -lt "$count" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "not all callable within 30 min" >&2; break; }
    for i in $(seq 1 "$count"); do
      [ -n "${ready[$i]:-}" ] && continue
      local code
      code=$(curl -s -o "$work/out" -w '%{http_code}' -H "Authorization: Bearer $ANNEX_TOKEN" \
        "$ANNEX_EDGE_URL/api/ext/migrate.mig-$i/dynamic/echo" || echo 000)
      if [ "$code" = 200 ]; then
        ready[$i]=$(now); last=${ready[$i]}; [ -n "$first" ] || first=$last
      elif [ "$code" = 503 ] && grep -q component_compiling "$work/out"; then
        compiling=$((compiling + 1))
      else
        other=$((other + 1))
      fi
    done
    sleep 0.5
  done
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$dev_pid/status")
  local compiles; compiles=$(cat "$work/dev.log" "$work/dev.out" | grep -c "component compiled" || true)
  kill "$dev_pid" 2>/dev/null || true
  wait "$dev_pid" 2>/dev/null || true
  printf '| %s | %d | %d | %d | %s | %s | %s | %d MB | %d | %d |\n' \
    "$mode" "$count" "$digests" "$compiles" \
    "$(since "$t0" "$installed")" "$(since "$t0" "$first")" "$(since "$t0" "$last")" \
    $((hwm / 1024)) "$compiling" "$other"
  cd "$root"
  rm -rf "$work"
}

echo '| round | extensions | component digests | compiles | all installed (s) | first callable (s) | all callable (s) | peak RSS of annex dev | 503 component_compiling seen | other non-200 seen |'
echo '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'
for r in "${rounds[@]}"; do round "$r"; done
