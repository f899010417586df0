#!/usr/bin/env bash
# Builds the real kube-proxy at the control plane's version (k8s.io/kubernetes in
# hack/tools/go.mod), from the Go module proxy, and caches it by version outside
# the repository. The benchmarks (`make bench`: kube-proxy in nftables mode side by
# side with wgmesh's service NAT), `make conformance-reference` and `make test`'s
# real-node test beside kube-proxy (test/e2e TestBesideKubeProxy) use it.
#
#   hack/kube-proxy.sh            build it when missing, print the binary's path
#   hack/kube-proxy.sh --path     print the binary's path only (no build)
#
# It builds in the same tools module as hack/control-plane.sh, so a warm module
# and build cache from the control plane make it quick.
set -euo pipefail

LOG_NAME=kube-proxy
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_VERSION="$(module_version "${TOOLS_DIR}" k8s.io/kubernetes)"
BIN="${CACHE_ROOT}/kube-proxy/kubernetes-${KUBE_VERSION}/kube-proxy"

if [[ "${1:-}" == "--path" ]]; then
  echo "${BIN}"
  exit 0
fi

if [[ ! -x "${BIN}" ]]; then
  (cd "${TOOLS_DIR}" && go mod download) >&2
fi
go_build "${BIN}" "${TOOLS_DIR}" k8s.io/kubernetes/cmd/kube-proxy "$(kube_ldflags "${KUBE_VERSION}")" "${KUBE_VERSION}"
echo "${BIN}"
