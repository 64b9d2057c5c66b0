#!/usr/bin/env bash
# Builds the image (deploy/build-image.sh) and checks it the way a cluster
# would run it: each binary answers --version inside it as user 65532, and
# the image has no shell. Too slow for every CI run (a release build for
# musl); run it after changing deploy/ or the dependencies.
#
# The podman flags are the ones that work on a machine without cgroup
# delegation or overlay mounts (Debian's podman with runc); set
# ANNEX_PODMAN_FLAGS and ANNEX_PODMAN_RUN_FLAGS for another machine.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
export ANNEX_IMAGE=${ANNEX_IMAGE:-localhost/annex:${VERSION}}
export ANNEX_CONTAINER_ENGINE=podman
export ANNEX_PODMAN_FLAGS=${ANNEX_PODMAN_FLAGS:---runtime runc --cgroup-manager cgroupfs --storage-driver vfs}
RUN_FLAGS=${ANNEX_PODMAN_RUN_FLAGS:---ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host}

deploy/build-image.sh

# shellcheck disable=SC2206 # word splitting of the flags is intended
podman=(podman $ANNEX_PODMAN_FLAGS)
# shellcheck disable=SC2206
run=("${podman[@]}" run --rm $RUN_FLAGS)

echo "image: $ANNEX_IMAGE"
echo "user: $("${podman[@]}" image inspect --format '{{.Config.User}}' "$ANNEX_IMAGE")"
echo "size: $("${podman[@]}" image inspect --format '{{.Size}}' "$ANNEX_IMAGE") bytes"
for b in annex-control-plane annex-worker annex-edge annex; do
    printf '%s --version: ' "$b"
    "${run[@]}" "$ANNEX_IMAGE" "$b" --version
done
if "${run[@]}" "$ANNEX_IMAGE" sh -c true >/dev/null 2>&1; then
    echo "image-check: the image has a shell" >&2
    exit 1
fi
echo "no shell: ok"
