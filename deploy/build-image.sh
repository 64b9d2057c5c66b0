#!/usr/bin/env bash
# Builds the Annex image (deploy/Containerfile) with podman, or docker when
# podman is missing: first the four binaries, statically linked for
# x86_64-unknown-linux-musl, then an image FROM scratch holding them.
#
#   deploy/build-image.sh                 # tags localhost/annex:<version>
#   ANNEX_IMAGE=registry.example.com/annex:1.2.3 deploy/build-image.sh
#
# Environment:
#   ANNEX_IMAGE             the tag (default localhost/annex:<workspace version>)
#   ANNEX_CONTAINER_ENGINE  podman or docker (default: podman if present)
#   ANNEX_PODMAN_FLAGS      podman's global flags (default `--storage-driver
#                           vfs`, which works where overlay mounts do not)
#   CARGO_TARGET_DIR        where cargo builds (default target/)
#   ANNEX_BIN_DIR           take the four binaries from this directory instead
#                           of building them (they must be static musl builds)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
IMAGE=${ANNEX_IMAGE:-localhost/annex:${VERSION}}
BINS=(annex-control-plane annex-worker annex-edge annex)

engine=${ANNEX_CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then engine=podman
    elif command -v docker >/dev/null; then engine=docker
    else
        echo "build-image: neither podman nor docker is installed (Debian: apt-get install podman runc)" >&2
        exit 1
    fi
fi
engine_cmd=("$engine")
if [ "$engine" = podman ]; then
    # shellcheck disable=SC2206 # word splitting of the flags is intended
    engine_cmd+=(${ANNEX_PODMAN_FLAGS:---storage-driver vfs})
fi

# The musl C toolchain: ring, zstd-sys and mimalloc compile C code.
if [ -z "${ANNEX_BIN_DIR:-}" ] && ! command -v musl-gcc >/dev/null; then
    echo "build-image: musl-gcc is missing (Debian: apt-get install musl-tools)" >&2
    exit 1
fi
if [ -z "${ANNEX_BIN_DIR:-}" ] && command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

if [ -n "${ANNEX_BIN_DIR:-}" ]; then
    out=$ANNEX_BIN_DIR
else
    cargo build --release --locked --target "$TARGET" \
        -p annex-control-plane -p annex-worker -p annex-edge -p annex --bins
    out="${CARGO_TARGET_DIR:-target}/$TARGET/release"
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin"
for b in "${BINS[@]}"; do
    # A static binary has no program interpreter (no dynamic loader).
    if command -v readelf >/dev/null && readelf -l "$out/$b" | grep -q 'Requesting program interpreter'; then
        echo "build-image: $out/$b is dynamically linked" >&2
        exit 1
    fi
    # Debug line tables stay in the build (backtraces in development);
    # the image keeps only the symbols, a quarter of the size.
    if command -v strip >/dev/null; then
        strip --strip-debug -o "$ctx/bin/$b" "$out/$b"
        chmod 0755 "$ctx/bin/$b"
    else
        install -m 0755 "$out/$b" "$ctx/bin/$b"
    fi
done
ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$ca_bundle" ]; then
    echo "build-image: no CA bundle at $ca_bundle (Debian: apt-get install ca-certificates)" >&2
    exit 1
fi
install -m 0644 "$ca_bundle" "$ctx/ca-certificates.crt"
printf 'annex:x:65532:65532:annex:/nonexistent:/sbin/nologin\n' > "$ctx/passwd"
printf 'annex:x:65532:\n' > "$ctx/group"
chmod 0644 "$ctx/passwd" "$ctx/group"
cp deploy/Containerfile "$ctx/Containerfile"

"${engine_cmd[@]}" build --build-arg "VERSION=$VERSION" -t "$IMAGE" -f "$ctx/Containerfile" "$ctx"
echo "built $IMAGE"
