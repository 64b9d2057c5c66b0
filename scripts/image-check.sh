#!/usr/bin/env bash
# Builds the image (deploy/build-image.sh) and checks it the way a cluster
# would run it: each binary answers --version inside it as user 65532, the
# image has no shell, and a worker (Wasmtime's pooling allocator, mimalloc,
# rustls on musl) starts on a read-only root without capabilities and
# answers /live and /ready. Needs podman, openssl and curl. Too slow for every CI run (a release build for
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

# A worker with a throwaway CA and worker certificate, serving local bundles.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -subj /CN=image-check-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$tmp/tls.key" -out "$tmp/tls.csr" -subj /CN=worker 2>/dev/null
printf 'subjectAltName=DNS:localhost,URI:urn:annex:role:worker\nextendedKeyUsage=serverAuth,clientAuth\n' > "$tmp/ext.cnf"
openssl x509 -req -in "$tmp/tls.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days 1 -extfile "$tmp/ext.cnf" -out "$tmp/tls.crt" 2>/dev/null
mkdir "$tmp/bundles"
echo '{"keys":[]}' > "$tmp/trust.json"
chmod -R a+rX "$tmp"
admin=127.0.0.1:${ANNEX_IMAGE_CHECK_ADMIN_PORT:-19391}
name=annex-image-check-$$
"${podman[@]}" run -d --rm --name "$name" --read-only --cap-drop ALL $RUN_FLAGS \
    -v "$tmp:/etc/annex:ro" \
    -e ANNEX_WORKER_GRPC_LISTEN=127.0.0.1:0 -e ANNEX_WORKER_ADMIN_LISTEN="$admin" \
    -e ANNEX_WORKER_BUNDLE_DIR=/etc/annex/bundles -e ANNEX_WORKER_TRUST_FILE=/etc/annex/trust.json \
    -e ANNEX_WORKER_TLS_CA=/etc/annex/ca.crt -e ANNEX_WORKER_TLS_CERT=/etc/annex/tls.crt \
    -e ANNEX_WORKER_TLS_KEY=/etc/annex/tls.key -e ANNEX_WORKER_POOL_INSTANCES=32 \
    "$ANNEX_IMAGE" annex-worker >/dev/null
trap '"${podman[@]}" stop -t 5 "$name" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do
    curl -sf "http://$admin/ready" >/dev/null && break
    sleep 0.2
done
if ! curl -sf "http://$admin/ready" >/dev/null; then
    "${podman[@]}" logs "$name" >&2 || true
    echo "image-check: the worker never became ready" >&2
    exit 1
fi
echo "worker in the image: live $(curl -sf "http://$admin/live"), ready $(curl -sf "http://$admin/ready")"
"${podman[@]}" logs "$name" 2>&1 | grep -o '"message":"wasmtime engine ready"[^}]*' || true
