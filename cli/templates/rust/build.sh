#!/usr/bin/env sh
# Builds the component into dist/main.wasm without the annex CLI (`annex build` does the
# same, then packs bundle.tar.zst). Needs `rustup target add wasm32-wasip2`.
set -eu
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
mkdir -p dist
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate_name}}.wasm" dist/main.wasm
echo "dist/main.wasm"
