#!/usr/bin/env bash
# Fails when regenerating deepcopy or the CRD would change a checked-in file.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r api charts/wgmesh/crds "$tmp/"
go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 object paths=./api/... crd output:crd:dir=./charts/wgmesh/crds
if ! git diff --quiet --no-index "$tmp/api" api || ! git diff --quiet --no-index "$tmp/crds" charts/wgmesh/crds; then
  echo "generated files are stale: run 'make generate' and commit the result" >&2
  git diff --no-index --stat "$tmp/api" api || true
  exit 1
fi
echo "generated files are up to date"
