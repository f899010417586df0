#!/usr/bin/env bash
# The kernel WireGuard tests (make test-kernel): the tests that prove the userspace path,
# run with WGMESH_TEST_WIREGUARD_MODE=kernel inside VMs that boot Debian's stock kernel
# (hack/vm.sh), because this machine's kernel has no WireGuard module.
#
#   VM 1, no control plane: agent/wireguard (auto picks the kernel module) and agent/tunnel,
#        the agent's kernel reconciler, against real kernel links in namespaces (per-peer diffs that
#        keep other peers' sessions, routes with src, MTU, drift repair, restart, cleanup).
#   VM 2, --cluster: e2e TestAgent, the real agents on three nodes in the guest, the
#        control plane and operator on the host (the API server in the guest's emulation
#        is ten times slower): mesh, gateways through the tunnel with src, underlay
#        capture showing only WireGuard, status and metrics, drift repair, kill -9 and
#        restart with no packet lost in a 10 ms ping, bad MeshPeers, DNS endpoint,
#        --cleanup-on-exit, join and leave, 1,000 MeshPeers.
#   VM 3, --cluster: e2e TestLeakGuardFromBoot (the leak guard across a reboot, the
#        underlay capture with no clear-text pod packet).
#
# WGMESH_KERNEL_TESTS picks how much: all (the default), ci (what make test runs: VM 1, and
# VM 2 with the subtests of TestAgent the kernel path changes: gateways with src, the
# underlay capture, drift repair, kill -9, --cleanup-on-exit), quick (VM 1 only).
# Expects KUBEBUILDER_ASSETS and WGMESH_BIN_DIR as make test sets them.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "test-kernel: $*" >&2; }
scope="${WGMESH_KERNEL_TESTS:-all}"
case "${scope}" in
  all) e2e=('TestAgent$' 'TestLeakGuardFromBoot$') ;;
  ci) e2e=('TestAgent$/^(gateways_reachable|underlay_carries|drift_repaired|kill_-9|cleanup_on_exit)') ;;
  quick) e2e=() ;;
  *) log "WGMESH_KERNEL_TESTS=${scope}: want all, ci or quick"; exit 2 ;;
esac

bins="${WGMESH_BIN_DIR:?WGMESH_BIN_DIR unset (make test-kernel sets it)}/vm-tests"
mkdir -p "${bins}"
log "building the test binaries into ${bins}"
go test -c -o "${bins}/wireguard.test" ./agent/wireguard
go test -c -o "${bins}/tunnel.test" ./agent/tunnel
if [[ ${#e2e[@]} -gt 0 ]]; then
  go test -c -o "${bins}/e2e.test" ./test/e2e
  # Built here: go build under the guest's emulation takes minutes.
  go build -o "${bins}/wgmesh-testnode" ./test/cmd/wgmesh-testnode
fi

vm=(hack/vm.sh run --env WGMESH_TEST_WIREGUARD_MODE=kernel --env WGMESH_NO_SKIP=1)
start=$SECONDS
rc=0
"${vm[@]}" \
  "cd agent/wireguard && ${bins}/wireguard.test -test.v -test.timeout 10m" \
  "cd agent/tunnel && ${bins}/tunnel.test -test.v -test.timeout 10m" || rc=$?
log "VM 1 (wireguard, tunnel): exit ${rc} after $((SECONDS - start))s"
if [[ ${#e2e[@]} -gt 0 ]]; then
  for t in "${e2e[@]}"; do
    s=$SECONDS
    r=0
    "${vm[@]}" --cluster --memory 3072 --timeout 40m --env "WGMESH_TESTNODE=${bins}/wgmesh-testnode" \
      "cd test/e2e && ${bins}/e2e.test -test.v -test.timeout 30m -test.run '${t}'" || r=$?
    log "VM (e2e ${t}): exit ${r} after $((SECONDS - s))s"
    [[ ${rc} != 0 ]] || rc=${r}
  done
fi
log "done in $((SECONDS - start))s, exit ${rc}"
exit "${rc}"
