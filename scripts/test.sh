#!/usr/bin/env bash
# The whole Annex test suite: builds the guest components (Rust for
# wasm32-wasip2 and the JavaScript one with jco), runs each fuzz target for a
# bounded time, then runs every crate's tests, including the Postgres suite
# (a throwaway cluster is started from the system's PostgreSQL binaries when
# DATABASE_URL is unset), the tenant-isolation matrix and the hostile-guest
# corpus.
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

# The hostile-guest test runs its stack in a private network namespace
# (`unshare --net`, then `ip link set lo up`), so a guest's fetch of the
# metadata address or a private range can never leave this machine.
if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
    if [ "${CI:-}" = true ]; then
        echo "unshare and ip are required for the hostile-guest test" >&2
        exit 1
    fi
    echo "warning: unshare or ip is missing: the hostile-guest test skips its off-host cases" >&2
fi

# The cargo-fuzz targets (fuzz/), each for ANNEX_FUZZ_SECONDS (default 20;
# 0 skips them) from the seed corpus; scripts/fuzz.sh installs the nightly
# toolchain and cargo-fuzz when missing (under CI=true a missing
# prerequisite fails).
fuzz_seconds="${ANNEX_FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" != 0 ]; then
    scripts/fuzz.sh "$fuzz_seconds"
fi

cargo test --workspace --all-targets --no-fail-fast "$@"
