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

LOG_NAME=control-plane
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_VERSION="$(module_version "${TOOLS_DIR}" k8s.io/kubernetes)"
ETCD_VERSION="$(module_version "${TOOLS_DIR}" go.etcd.io/etcd/server/v3)"
BIN_DIR="${CACHE_ROOT}/control-plane/kubernetes-${KUBE_VERSION}-etcd-${ETCD_VERSION}"

if [[ "${1:-}" == "--dir" ]]; then
  echo "${BIN_DIR}"
  exit 0
fi

total=$SECONDS
(cd "${TOOLS_DIR}" && go mod download) >&2
kube="$(kube_ldflags "${KUBE_VERSION}")"
go_build "${BIN_DIR}/etcd" "${TOOLS_DIR}" go.etcd.io/etcd/server/v3 "-s -w" "[1/4]"
go_build "${BIN_DIR}/kubectl" "${TOOLS_DIR}" k8s.io/kubernetes/cmd/kubectl "${kube}" "[2/4]"
go_build "${BIN_DIR}/kube-controller-manager" "${TOOLS_DIR}" k8s.io/kubernetes/cmd/kube-controller-manager "${kube}" "[3/4]"
go_build "${BIN_DIR}/kube-apiserver" "${TOOLS_DIR}" k8s.io/kubernetes/cmd/kube-apiserver "${kube}" "[4/4]"
log "all binaries ready in ${BIN_DIR} ($((SECONDS - total))s)"
echo "${BIN_DIR}"
