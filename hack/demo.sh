#!/usr/bin/env bash
# make demo / make demo-down (and stop-for-tests, which make test, bench and conformance run
# first: their clusters need the demo's addresses): a 3-node wgmesh cluster (1 behind NAT) in network namespaces
# with a real control plane, real kubelets and containerd, wgmesh installed with helm
# (WGMESH_DEMO_NODES=simulated: the fast node runtime of the tests instead). Needs root. The Makefile builds the product, the CNI plugins
# and the control plane first; this script builds the small demo program (cached) and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root (it creates network namespaces)" >&2
  exit 1
fi
case "${1:-up}" in
  up|deps) hack/deps.sh install demo ;; # the one list of Debian packages (hack/deps.sh)
esac
cache="${XDG_CACHE_HOME:-$HOME/.cache}/wgmesh/demo"
mkdir -p "$cache"
go build -o "$cache/wgmesh-demo" ./test/cmd/wgmesh-demo
case "${1:-up}" in
  deps) ;; # only the Debian packages (hack/deps.sh install demo)
  up)
    export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$(hack/control-plane.sh --dir)}"
    export WGMESH_BIN_DIR="${WGMESH_BIN_DIR:-$PWD/bin}"
    # Real nodes (the default; WGMESH_DEMO_NODES=simulated for the fast node runtime):
    # kubelet and containerd from hack/node-parts.sh, the image from make image, helm.
    export WGMESH_NODE_PARTS="${WGMESH_NODE_PARTS:-$(hack/node-parts.sh --dir)}"
    export WGMESH_IMAGE="${WGMESH_IMAGE:-$(hack/image.sh --path)}"
    export WGMESH_HELM="${WGMESH_HELM:-$(hack/helm.sh --path)}"
    exec "$cache/wgmesh-demo" up ;;
  down)
    exec "$cache/wgmesh-demo" down ;;
  stop-for-tests)
    # The tests' clusters use the demo's addresses and namespace names: one at a time.
    if pid="$("$cache/wgmesh-demo" running)"; then
      echo "the demo (pid ${pid}) holds the local cluster's addresses the tests need: stopping it (make demo starts it again)"
      exec "$cache/wgmesh-demo" down
    fi ;;
  *)
    echo "usage: $0 up|down|deps|stop-for-tests" >&2; exit 2 ;;
esac
