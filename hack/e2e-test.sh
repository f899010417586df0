#!/usr/bin/env bash
# Builds the upstream Kubernetes e2e suite (`go test -c k8s.io/kubernetes/test/e2e`)
# at the control plane's version (k8s.io/kubernetes in hack/tools/go.mod), from
# the Go module proxy, and caches it by version outside the repository. Only
# `make conformance` runs it; `make test` does not.
#
#   hack/e2e-test.sh          build e2e.test when missing, print its path
#   hack/e2e-test.sh --path   print the path only (no build)
#
# A cold build takes about 10 minutes of CPU (118 MB).
set -euo pipefail

LOG_NAME=e2e-test
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_VERSION="$(module_version "${TOOLS_DIR}" k8s.io/kubernetes)"
BIN="${CACHE_ROOT}/e2e-test/kubernetes-${KUBE_VERSION}/e2e.test"

if [[ "${1:-}" == "--path" ]]; then
  echo "${BIN}"
  exit 0
fi

build_e2e() {
  CGO_ENABLED=0 go -C "${TOOLS_DIR}" test -c -trimpath -ldflags "$(kube_ldflags "${KUBE_VERSION}")" \
    -o "${TMP_OUT}" k8s.io/kubernetes/test/e2e
}

if [[ ! -x "${BIN}" ]]; then
  (cd "${TOOLS_DIR}" && go mod download) >&2
fi
produce "${BIN}" "${KUBE_VERSION}" "building k8s.io/kubernetes/test/e2e (go test -c)" build_e2e
echo "${BIN}"
