#!/usr/bin/env bash
# Builds the real control-plane binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl) at the versions pinned in hack/tools/go.mod,
# from the Go module proxy, and caches them by version outside the repository.
#
#   hack/control-plane.sh            build what is missing, print the directory
#   hack/control-plane.sh --dir      print the directory only (no build)
#
# The directory is what KUBEBUILDER_ASSETS points at.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="${HACK_DIR}/tools"
KUBE_VERSION="$(cd "${TOOLS_DIR}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
ETCD_VERSION="$(cd "${TOOLS_DIR}" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
if [[ -z "${KUBE_VERSION}" || -z "${ETCD_VERSION}" ]]; then
  echo "control-plane: cannot read the pinned versions from ${TOOLS_DIR}/go.mod" >&2
  exit 1
fi
CACHE_ROOT="${WGMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wgmesh}"
BIN_DIR="${CACHE_ROOT}/control-plane/kubernetes-${KUBE_VERSION}-etcd-${ETCD_VERSION}"

if [[ "${1:-}" == "--dir" ]]; then
  echo "${BIN_DIR}"
  exit 0
fi

mkdir -p "${BIN_DIR}"
log() { echo "control-plane: $*" >&2; }

kube_ldflags() {
  local v="${KUBE_VERSION#v}"
  local major="${v%%.*}" rest="${v#*.}"
  local minor="${rest%%.*}"
  local pkg
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
    flags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  echo "${flags}"
}

build() {
  local name="$1" pkg="$2" ldflags="$3" step="$4"
  if [[ -x "${BIN_DIR}/${name}" ]]; then
    log "${step} ${name}: cached"
    return
  fi
  log "${step} ${name}: building ${pkg} (cold builds take minutes; progress every 30s)"
  local start=$SECONDS
  ( while sleep 30; do log "    ... still building ${name} ($((SECONDS - start))s)"; done ) &
  local ticker=$!
  local tmp="${BIN_DIR}/.${name}.tmp.$$"
  if ! (cd "${TOOLS_DIR}" && CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${tmp}" "${pkg}"); then
    kill "${ticker}" 2>/dev/null || true
    rm -f "${tmp}"
    log "${name}: build failed"
    exit 1
  fi
  kill "${ticker}" 2>/dev/null || true
  wait "${ticker}" 2>/dev/null || true
  mv -f "${tmp}" "${BIN_DIR}/${name}"
  log "${step} ${name}: built in $((SECONDS - start))s"
}

total=$SECONDS
(cd "${TOOLS_DIR}" && go mod download) >&2
build etcd go.etcd.io/etcd/server/v3 "-s -w" "[1/4]"
build kubectl k8s.io/kubernetes/cmd/kubectl "$(kube_ldflags)" "[2/4]"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$(kube_ldflags)" "[3/4]"
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$(kube_ldflags)" "[4/4]"
log "all binaries ready in ${BIN_DIR} ($((SECONDS - total))s)"
echo "${BIN_DIR}"
