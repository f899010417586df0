#!/usr/bin/env bash
# Builds helm at a pinned version from the Go module proxy and caches it by
# version next to the control-plane binaries, outside the repository.
#
#   hack/helm.sh          build helm if missing, print the path of the binary
#   hack/helm.sh --path   print the path only (no build)
#
# The printed path is what WGMESH_HELM points at for the chart tests.
set -euo pipefail

HELM_VERSION="v3.22.0"
CACHE_ROOT="${WGMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wgmesh}"
HELM_DIR="${CACHE_ROOT}/helm/${HELM_VERSION}"
HELM_BIN="${HELM_DIR}/helm"

if [[ "${1:-}" == "--path" ]]; then
  echo "${HELM_BIN}"
  exit 0
fi

log() { echo "helm: $*" >&2; }

if [[ -x "${HELM_BIN}" ]]; then
  log "${HELM_VERSION}: cached"
  echo "${HELM_BIN}"
  exit 0
fi

mkdir -p "${HELM_DIR}"
log "${HELM_VERSION}: building helm.sh/helm/v3/cmd/helm (a cold build takes minutes; progress every 30s)"
start=$SECONDS
( while sleep 30; do log "    ... still building helm ($((SECONDS - start))s)"; done ) &
ticker=$!
# go install writes into GOBIN; a private temporary GOBIN keeps a half-built
# binary out of the cache path, and the final mv is atomic.
tmp="$(mktemp -d "${HELM_DIR}/.build.XXXXXX")"
cleanup() { kill "${ticker}" 2>/dev/null || true; wait "${ticker}" 2>/dev/null || true; rm -rf "${tmp}"; }
trap cleanup EXIT
if ! CGO_ENABLED=0 GOBIN="${tmp}" GOFLAGS="${GOFLAGS:-} -trimpath" \
    go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"; then
  log "build failed"
  exit 1
fi
mv -f "${tmp}/helm" "${HELM_BIN}"
log "${HELM_VERSION}: built in $((SECONDS - start))s"
echo "${HELM_BIN}"
