#!/usr/bin/env bash
# Builds every guest component in examples/ into <guest>/dist/main.wasm:
# the Rust guests (wasm32-wasip2, wit-bindgen; wasi-http-hello with the
# wasip2 crate's wasi:http/proxy world) and the JavaScript guests (jco
# componentize: js-echo against alga:extension, js-http against
# wasi:http/proxy). Idempotent and quick when everything is up to date;
# safe to run from several processes at once (it takes a lock).
#
# Missing tools (rustup/cargo, node/npm) are errors: the worker's tests need
# every guest, so nothing is silently skipped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

exec 9>"$here/.build.lock"
flock 9

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "examples/build.sh: '$1' is required to build the guest components but was not found" >&2
    exit 1
  fi
}

# --- Rust guests -------------------------------------------------------------
need cargo
if ! rustc --print target-libdir --target wasm32-wasip2 >/dev/null 2>&1 \
  || [ ! -d "$(rustc --print target-libdir --target wasm32-wasip2)" ]; then
  need rustup
  rustup target add wasm32-wasip2
fi

rust_guests=(hello probe misbehave hostile wasi-http-hello)
# The guests have their own target dir; CARGO_TARGET_DIR from a caller (the
# worker's tests set one) must not redirect them.
CARGO_TARGET_DIR="$here/target" cargo build --quiet --release --target wasm32-wasip2 \
  --manifest-path "$here/Cargo.toml"

for g in "${rust_guests[@]}"; do
  src="$here/target/wasm32-wasip2/release/${g//-/_}.wasm"
  dst="$here/$g/dist/main.wasm"
  mkdir -p "$here/$g/dist"
  if ! cmp -s "$src" "$dst"; then
    cp "$src" "$dst.tmp"
    mv "$dst.tmp" "$dst"
  fi
done

# --- JavaScript guests ---------------------------------------------------------
need node
need npm
js="$here/js-echo"
# npm ci only when the lock file changed since the last install.
if [ ! -f "$js/node_modules/.package-lock.json" ] \
  || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
fi
out="$js/dist/main.wasm"
if [ ! -f "$out" ] \
  || [ "$js/src/echo.js" -nt "$out" ] \
  || [ "$here/wit/alga-extension.wit" -nt "$out" ] \
  || [ "$js/package-lock.json" -nt "$out" ]; then
  mkdir -p "$js/dist"
  (cd "$js" && npx --no-install jco componentize src/echo.js \
    --wit ../wit/alga-extension.wit --world-name runner --disable http fetch-event \
    --out dist/main.wasm.tmp >/dev/null)
  mv "$out.tmp" "$out"
fi

# js-http: the same jco, the wasi:http/proxy world (fetch-event handler).
http="$here/js-http"
out="$http/dist/main.wasm"
if [ ! -f "$out" ] \
  || [ "$http/src/http.js" -nt "$out" ] \
  || [ -n "$(find "$http/wit" -newer "$out" -name '*.wit' -print -quit)" ] \
  || [ "$js/package-lock.json" -nt "$out" ]; then
  mkdir -p "$http/dist"
  (cd "$js" && npx --no-install jco componentize ../js-http/src/http.js \
    --wit ../js-http/wit --world-name js-http \
    --out ../js-http/dist/main.wasm.tmp >/dev/null)
  mv "$out.tmp" "$out"
fi

# --- alga-ui: an iframe UI against Alga's own SDK ------------------------------
# Written only against @alga-psa/extension-iframe-sdk from npm and bundled
# with esbuild into alga-ui/dist/app.js; the browser test embeds it through
# Annex's bridge.
ui="$here/alga-ui"
if [ ! -f "$ui/node_modules/.package-lock.json" ] \
  || [ "$ui/package-lock.json" -nt "$ui/node_modules/.package-lock.json" ]; then
  (cd "$ui" && npm ci --no-audit --no-fund --loglevel=error)
fi
out="$ui/dist/app.js"
if [ ! -f "$out" ] \
  || [ "$ui/src/main.js" -nt "$out" ] \
  || [ "$ui/package-lock.json" -nt "$out" ]; then
  mkdir -p "$ui/dist"
  (cd "$ui" && npx --no-install esbuild src/main.js --bundle --format=iife --minify \
    --define:process.env.NODE_ENV='"production"' --log-level=warning \
    --outfile=dist/app.js.tmp)
  mv "$out.tmp" "$out"
fi
