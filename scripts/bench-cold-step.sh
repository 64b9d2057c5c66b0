#!/usr/bin/env bash
# One cold-start repetition for BENCHMARKS.md: a new version (new content
# hash) of `annex-bench.cold-<GUEST>` is published and installed for tenant
# `dev` (replacing the previous install), so the next call through the edge
# is the first call of a never-seen hash. Used as the `--step` of
# `annex-loadtest scenario cold-start`. Env: ANNEX (the annex binary), GUEST
# (hello | js-echo), BENCH (scripts/bench-setup.sh's directory).
set -euo pipefail
cd "$(dirname "$0")/.."
annex="${ANNEX:-${CARGO_TARGET_DIR:-target}/release/annex}"
guest="${GUEST:-hello}"
bench="${BENCH:-.annex/bench}"
name="cold-$guest"
dir="$bench/ext/$name"
mkdir -p "$dir/dist"
cp "examples/$guest/dist/main.wasm" "$dir/dist/main.wasm"
version="1.0.$(date +%s%N | cut -c1-13)"
python3 - "$guest" "$name" "$version" > "$dir/manifest.json" <<'PY'
import json, sys
guest, name, version = sys.argv[1:4]
m = json.load(open(f"examples/{guest}/manifest.json"))
m["name"], m["publisher"], m["version"] = name, "annex-bench", version
print(json.dumps(m))
PY
(cd "$bench/ext" && "$annex" pack "$name" >/dev/null && "$annex" sign "$name/bundle.tar.zst" --key ../bench.pem >/dev/null)
"$annex" publish "$dir/bundle.tar.zst" >/dev/null
"$annex" --tenant dev uninstall "annex-bench.$name" >/dev/null 2>&1 || true
"$annex" --tenant dev install "annex-bench.$name" --version "$version" >/dev/null
