#!/usr/bin/env bash
# Builds promtool at the github.com/prometheus/prometheus version pinned in
# hack/promtool/go.mod, and beside it wgmesh-promql (hack/promtool/wgmesh-promql:
# the metric names each PromQL expression selects, by Prometheus' own parser),
# and caches both outside the repository. The chart tests run them on the
# chart's dashboard and alerting rules.
#
#   hack/promtool.sh         build what is missing, print the directory
#   hack/promtool.sh --dir   print the directory only (no build)
#
# The directory is what WGMESH_PROMTOOL_DIR points at. promtool is built with
# upstream's remove_all_sd tag (no cloud service discovery, which the rule
# commands never use): a cold build takes a few minutes instead of many.
set -euo pipefail

LOG_NAME=promtool
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROM_DIR="${HACK_DIR}/promtool"
PROM_VERSION="$(module_version "${PROM_DIR}" github.com/prometheus/prometheus)"
# The directory names what it was built from: the version, the recipe
# (remove_all_sd) and a hash of the tools module (go.mod, go.sum, the helper's
# source), so a change to any of them builds anew instead of reusing.
SRC_HASH="$(cd "${PROM_DIR}" && cat go.mod go.sum wgmesh-promql/*.go | sha256sum | cut -c1-12)"
BIN_DIR="${CACHE_ROOT}/promtool/prometheus-${PROM_VERSION}+remove_all_sd-${SRC_HASH}"

if [[ "${1:-}" == "--dir" ]]; then
  echo "${BIN_DIR}"
  exit 0
fi

# Module v0.MMmm.p is Prometheus release v(MM/100).(mm%100).p (v0.316.0 is 3.16.0).
v="${PROM_VERSION#v0.}"
n="${v%%.*}"
release="$((n / 100)).$((n % 100)).${v#*.}"
ldflags="-s -w -X github.com/prometheus/common/version.Version=${release} -X github.com/prometheus/common/version.Branch=HEAD"

# No go mod download: go.mod lists every cloud SDK of the full build, which
# remove_all_sd leaves out; go build fetches only what it compiles.
total=$SECONDS
go_build "${BIN_DIR}/promtool" "${PROM_DIR}" github.com/prometheus/prometheus/cmd/promtool "${ldflags}" "[1/2]" remove_all_sd
go_build "${BIN_DIR}/wgmesh-promql" "${PROM_DIR}" ./wgmesh-promql "-s -w" "[2/2]"
log "promtool and wgmesh-promql ready in ${BIN_DIR} ($((SECONDS - total))s)"
echo "${BIN_DIR}"
