#!/usr/bin/env bash
# Builds helm at a pinned version from the Go module proxy and caches it by
# version next to the control-plane binaries, outside the repository.
#
#   hack/helm.sh          build helm if missing, print the path of the binary
#   hack/helm.sh --path   print the path only (no build)
#
# The printed path is what WGMESH_HELM points at for the chart tests.
set -euo pipefail

LOG_NAME=helm
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELM_VERSION="v3.22.0"
HELM_BIN="${CACHE_ROOT}/helm/${HELM_VERSION}/helm"

if [[ "${1:-}" == "--path" ]]; then
  echo "${HELM_BIN}"
  exit 0
fi

# go install writes into GOBIN: a private temporary one, then produce moves the
# finished binary into place.
install_helm() {
  local gobin rc=0
  gobin="$(mktemp -d "${TMP_OUT}.gobin.XXXXXX")"
  CGO_ENABLED=0 GOBIN="${gobin}" GOFLAGS="${GOFLAGS:-} -trimpath" \
    go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" && mv -f "${gobin}/helm" "${TMP_OUT}" || rc=1
  rm -rf "${gobin}"
  return "${rc}"
}

produce "${HELM_BIN}" "${HELM_VERSION}" "building helm.sh/helm/v3/cmd/helm (a cold build takes minutes)" install_helm
echo "${HELM_BIN}"
