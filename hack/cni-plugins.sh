#!/usr/bin/env bash
# Builds the CNI plugins the agent installs (agent/cniinstall StandardPlugins) into a
# directory: wgmesh-guard from this module, and bridge, host-local, portmap and
# loopback from github.com/containernetworking/plugins at the version in
# go.mod, built inside that module with its own go.sum (as upstream releases
# are), so that the product's go.mod needs none of the plugins' dependencies.
#
#   hack/cni-plugins.sh <out dir>
#
# GOOS, GOARCH and CGO_ENABLED from the environment choose the target (make
# image cross-compiles with them); LDFLAGS is added to every -ldflags.
set -euo pipefail

out="${1:?usage: hack/cni-plugins.sh <out dir>}"
GO="${GO:-go}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"
module=github.com/containernetworking/plugins

"${GO}" -C "${root}" build -trimpath -buildvcs=false -ldflags "${LDFLAGS:-}" -o "${out}/wgmesh-guard" ./cmd/wgmesh-guard

"${GO}" -C "${root}" mod download "${module}"
dir="$("${GO}" -C "${root}" list -m -f '{{.Dir}}' "${module}")"
version="$("${GO}" -C "${root}" list -m -f '{{.Version}}' "${module}")"
# One build for all four: each lands in out under its directory's name.
"${GO}" -C "${dir}" build -trimpath -buildvcs=false \
  -ldflags "${LDFLAGS:-} -X ${module}/pkg/utils/buildversion.BuildVersion=${version}" \
  -o "${out}/" ./plugins/main/bridge ./plugins/ipam/host-local ./plugins/meta/portmap ./plugins/main/loopback
