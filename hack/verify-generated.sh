#!/usr/bin/env bash
# Fails when regenerating deepcopy or the CRD would change a checked-in file.
# It regenerates in a temporary copy of the module, so the working tree is
# never written, even when the generator fails halfway.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/charts/wgmesh"
cp go.mod go.sum "$tmp/"
cp -r api "$tmp/api"
cp -r charts/wgmesh/crds "$tmp/charts/wgmesh/crds"
(cd "$tmp" && go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 object paths=./api/... crd output:crd:dir=./charts/wgmesh/crds)
if ! git diff --quiet --no-index api "$tmp/api" || ! git diff --quiet --no-index charts/wgmesh/crds "$tmp/charts/wgmesh/crds"; then
  echo "generated files are stale: run 'make generate' and commit the result" >&2
  git diff --no-index --stat api "$tmp/api" || true
  git diff --no-index --stat charts/wgmesh/crds "$tmp/charts/wgmesh/crds" || true
  exit 1
fi
echo "generated files are up to date"
