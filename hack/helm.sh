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
# The suffix names the build recipe: a change to it must not reuse a cached
# binary built the old way.
HELM_BIN="${CACHE_ROOT}/helm/${HELM_VERSION}+kube-version/helm"

if [[ "${1:-}" == "--path" ]]; then
  echo "${HELM_BIN}"
  exit 0
fi

# go install writes into GOBIN: a private temporary one, then produce moves the
# finished binary into place.
install_helm() {
  local gobin rc=0 gomod minor pkg ldflags
  # As upstream's release build (its Makefile) does: without a cluster (helm
  # template, helm lint) helm assumes the Kubernetes version of the client-go
  # it is built with, not its source default v1.20.0, which the chart's
  # kubeVersion refuses.
  gomod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  minor="$(sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "${gomod}")"
  [[ -n "${minor}" ]] || die "no k8s.io/client-go version in helm ${HELM_VERSION}'s go.mod (${gomod})"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${minor}"
  done
  gobin="$(mktemp -d "${TMP_OUT}.gobin.XXXXXX")"
  CGO_ENABLED=0 GOBIN="${gobin}" GOFLAGS="${GOFLAGS:-} -trimpath" \
    go install -ldflags "${ldflags}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" && mv -f "${gobin}/helm" "${TMP_OUT}" || rc=1
  rm -rf "${gobin}"
  return "${rc}"
}

produce "${HELM_BIN}" "${HELM_VERSION}" "building helm.sh/helm/v3/cmd/helm (a cold build takes minutes)" install_helm
echo "${HELM_BIN}"
