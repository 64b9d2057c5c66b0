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

# The Kubernetes manifest tests (tests/tests/kubernetes.rs) render the
# overlays with kubectl and validate them with kubernetes-validate from PyPI.
# Under CI=true a missing prerequisite fails here; elsewhere those tests say
# they skipped.
if ! command -v kubectl >/dev/null; then
    if [ "${CI:-}" = true ]; then
        echo "kubectl is required for the Kubernetes manifest tests" >&2
        exit 1
    fi
    echo "warning: kubectl is not installed: the Kubernetes manifest tests will skip" >&2
fi
if ! python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        'kubernetes-validate==1.37.0'; then
    if [ "${CI:-}" = true ]; then
        echo "installing kubernetes-validate failed" >&2
        exit 1
    fi
    echo "warning: kubernetes-validate is not installed: manifest validation will skip" >&2
fi

cargo test --workspace --all-targets --no-fail-fast "$@"
