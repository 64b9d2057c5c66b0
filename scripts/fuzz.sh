#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 300):
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz: both are installed here when
# missing (`rustup toolchain install nightly`, `cargo install cargo-fuzz`).
# Under CI=true a prerequisite that cannot be installed is a failure; else
# the script says what is missing and exits 0 without fuzzing.
#
# Each run starts from the seed corpus in fuzz/corpus/<target>/ and writes
# what it finds to a scratch corpus, so the repository's seeds stay small.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script:
# turn it into a unit test in the crate and fix the bug. With
# CARGO_TARGET_DIR set, the build goes to $CARGO_TARGET_DIR/fuzz, so a warm
# target directory outside the clone is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-300}"
shift || true
cargo_fuzz_version=0.13.2

missing() {
    if [ "${CI:-}" = true ]; then
        echo "scripts/fuzz.sh: $1" >&2
        exit 1
    fi
    echo "scripts/fuzz.sh: $1; not fuzzing" >&2
    exit 0
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal >/dev/null \
        || missing "the nightly toolchain could not be installed"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version" \
        || missing "cargo-fuzz could not be installed"
fi

if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Release builds with debug assertions (cargo-fuzz's default), and no
# sanitizer: the code under test is safe Rust (the workspace denies
# `unsafe`), so AddressSanitizer would only slow the runs down.
build=(--sanitizer none)
cargo +nightly fuzz build "${build[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    echo "fuzzing $t for ${seconds}s"
    if ! cargo +nightly fuzz run "${build[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        > "$scratch/$t.log" 2>&1; then
        tail -n 40 "$scratch/$t.log" >&2
        failed+=("$t")
        continue
    fi
    grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$scratch/$t.log" | tail -n 1 || true
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzzed ${#targets[@]} targets for ${seconds}s each"
