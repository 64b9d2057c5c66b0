#!/usr/bin/env bash
# Prepares a running Annex (`annex dev`, or any deployment the `annex` CLI can
# reach as operator) for the issue-7 scenarios in BENCHMARKS.md:
#
#   - a publisher key `annex-bench`, trusted;
#   - the probe guest (KV and secrets scenarios) with its storage and secrets
#     endpoints declared, the secret `loadtest` set;
#   - the misbehave guest (noisy neighbour) and the JavaScript echo guest;
#   - N hello variants (default 100), each its own extension and content hash,
#     each installed for its own tenant `bench-NN` (multi-tenant Zipf mix):
#     writes `<out>/installs.txt` with `<install id> <bearer token>` lines.
#
# Usage: scripts/bench-setup.sh [OUT_DIR] [N]
# Environment: ANNEX_CONTROL_PLANE_URL, ANNEX_TLS_DIR and ANNEX_JWT_SECRET_FILE
# (read from .annex/dev.env when ANNEX_CONTROL_PLANE_URL is unset); ANNEX (the
# annex binary, default target/release/annex). Prints shell assignments to source.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-.annex/bench}"
count="${2:-100}"
annex="${ANNEX:-${CARGO_TARGET_DIR:-target}/release/annex}"
if [ -z "${ANNEX_CONTROL_PLANE_URL:-}" ] && [ -f .annex/dev.env ]; then
  set -a
  # shellcheck disable=SC1091
  . .annex/dev.env
  set +a
fi
examples/build.sh >&2
mkdir -p "$out"
out="$(cd "$out" && pwd)"
publisher="annex-bench"

if [ ! -f "$out/bench.pem" ]; then
  "$annex" keygen --out "$out/bench.pem" >&2
fi
"$annex" trust add --publisher "$publisher" --key "$out/bench.pub.pem" >&2 || true

# stage NAME SOURCE_GUEST MANIFEST_JQ: writes $out/ext/NAME with the guest and a
# manifest derived from the guest's own, then packs, signs and publishes it.
stage() {
  local name="$1" guest="$2" endpoints="$3"
  local dir="$out/ext/$name"
  mkdir -p "$dir/dist"
  cp "examples/$guest/dist/main.wasm" "$dir/dist/main.wasm"
  python3 - "$guest" "$name" "$publisher" "$endpoints" > "$dir/manifest.json" <<'EOF'
import json, sys
guest, name, publisher, endpoints = sys.argv[1:5]
m = json.load(open(f"examples/{guest}/manifest.json"))
m["name"], m["publisher"], m["version"] = name, publisher, "1.0.0"
if endpoints:
    m["api"]["endpoints"] = [
        {"method": e.split()[0], "path": e.split()[1], "handler": "dist/main"}
        for e in endpoints.split(",")
    ]
print(json.dumps(m, indent=2))
EOF
  (cd "$out/ext" && "$annex" pack "$name" >&2 && "$annex" sign "$name/bundle.tar.zst" --key "$out/bench.pem" >&2)
  "$annex" publish "$out/ext/$name/bundle.tar.zst" >&2 || true
}

install_for() {
  local tenant="$1" slug="$2"
  "$annex" --tenant "$tenant" install "$slug" >/dev/null 2>&1 || true
  "$annex" --json --tenant "$tenant" status "$slug" | python3 -c '
import json, sys
v = json.load(sys.stdin)
print((v.get("install") or v)["install_id"])'
}

stage probe probe "GET /storage/get,POST /storage/put,GET /secrets/get,GET /context"
stage misbehave misbehave "GET /loop,GET /panic"
stage js-echo js-echo ""
install_for dev "$publisher.probe" >/dev/null
install_for dev "$publisher.misbehave" >/dev/null
install_for dev "$publisher.js-echo" >/dev/null
"$annex" --tenant dev secrets set "$publisher.probe" loadtest=bench-secret-value >&2

: > "$out/installs.txt"
for i in $(seq -w 0 $((count - 1))); do
  name="hello-$i"
  stage "$name" hello ""
  tenant="bench-$i"
  id="$(install_for "$tenant" "$publisher.$name")"
  token="$("$annex" --tenant "$tenant" token)"
  echo "$id $token" >> "$out/installs.txt"
done

echo "export PROBE=$publisher.probe MISBEHAVE=$publisher.misbehave JS=$publisher.js-echo INSTALLS=$out/installs.txt"
