#!/usr/bin/env bash
# Builds the real kube-proxy at the control plane's version (k8s.io/kubernetes in
# hack/tools/go.mod), from the Go module proxy, and caches it by version outside
# the repository. Only the benchmarks use it (`make bench`: kube-proxy in
# nftables mode side by side with wgmesh's service NAT); `make test` does not.
#
#   hack/kube-proxy.sh            build it when missing, print the binary's path
#   hack/kube-proxy.sh --path     print the binary's path only (no build)
#
# It builds in the same tools module as hack/control-plane.sh, so a warm module
# and build cache from the control plane make it quick.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="${HACK_DIR}/tools"
KUBE_VERSION="$(cd "${TOOLS_DIR}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
if [[ -z "${KUBE_VERSION}" ]]; then
  echo "kube-proxy: cannot read the pinned k8s.io/kubernetes version from ${TOOLS_DIR}/go.mod" >&2
  exit 1
fi
CACHE_ROOT="${WGMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wgmesh}"
BIN_DIR="${CACHE_ROOT}/kube-proxy/kubernetes-${KUBE_VERSION}"
BIN="${BIN_DIR}/kube-proxy"

if [[ "${1:-}" == "--path" ]]; then
  echo "${BIN}"
  exit 0
fi

log() { echo "kube-proxy: $*" >&2; }

if [[ -x "${BIN}" ]]; then
  log "${KUBE_VERSION}: cached"
  echo "${BIN}"
  exit 0
fi

# The version stamped into the binary, as hack/control-plane.sh stamps the control plane.
v="${KUBE_VERSION#v}"
major="${v%%.*}" rest="${v#*.}"
minor="${rest%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
  ldflags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "${BIN_DIR}"
(cd "${TOOLS_DIR}" && go mod download) >&2
log "building k8s.io/kubernetes/cmd/kube-proxy ${KUBE_VERSION} (a cold build takes minutes; progress every 30s)"
start=$SECONDS
( while sleep 30; do log "    ... still building kube-proxy ($((SECONDS - start))s)"; done ) &
ticker=$!
trap 'kill "${ticker}" 2>/dev/null || true' EXIT
tmp="${BIN_DIR}/.kube-proxy.tmp.$$"
if ! (cd "${TOOLS_DIR}" && CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${tmp}" k8s.io/kubernetes/cmd/kube-proxy); then
  rm -f "${tmp}"
  log "build failed"
  exit 1
fi
mv -f "${tmp}" "${BIN}"
log "built ${KUBE_VERSION} in $((SECONDS - start))s: ${BIN}"
echo "${BIN}"
