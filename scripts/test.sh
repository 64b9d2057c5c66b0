#!/usr/bin/env bash
# The whole Annex test suite: builds the guest components (Rust for
# wasm32-wasip2 and the JavaScript one with jco), then runs every crate's
# tests, including the Postgres suite (a throwaway cluster is started from the
# system's PostgreSQL binaries when DATABASE_URL is unset).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x examples/build.sh ]; then
    examples/build.sh
fi

cargo test --workspace --all-targets --no-fail-fast "$@"
