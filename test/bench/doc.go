// Package bench holds wgmesh's benchmarks that need network namespaces and
// print ratios measured side by side in one run (`make bench`).
//
// BenchmarkServiceProxy compares wgmesh's service proxy (WGMESH_BIN_DIR's
// wgmesh-serviceproxy, from make serviceproxy) with the real kube-proxy in nftables mode
// (WGMESH_KUBE_PROXY, from hack/kube-proxy.sh) against one API server holding
// the same Services and EndpointSlices. WGMESH_BENCH_SERVICES (default
// "100,1000,10000"), WGMESH_BENCH_QUIET (no-op resync window, default 60s),
// WGMESH_BENCH_CHANGES (timed changes per kind, default 20) and
// WGMESH_BENCH_LOGS (keep the proxies' logs there) change a run, for example
//
//	make kube-proxy control-plane
//	KUBEBUILDER_ASSETS=$(hack/control-plane.sh --dir) WGMESH_KUBE_PROXY=$(hack/kube-proxy.sh --path) \
//	  WGMESH_BIN_DIR=$PWD/bin WGMESH_BENCH_SERVICES=100,1000 \
//	  go test -run '^$' -bench ServiceProxy ./test/bench/
//
// BenchmarkMesh1000 is the 1,000-node simulation (test/meshsim): a local
// cluster (test/cluster: real etcd, kube-apiserver, controller manager)
// with WGMESH_BENCH_MESH_AGENTS (default 3) real nodes running the real
// wgmesh-agent (userspace WireGuard, each in its own network and mount
// namespace), the real wgmesh-operator as a process (--node-cidr-mask-size-ipv4=28,
// no leader election), and WGMESH_BENCH_MESH_NODES (default 1000)
// simulated nodes that exist only as API objects: the bench registers each
// Node as its kubelet would and writes its agent's annotations (a freshly
// generated WireGuard key; an endpoint in 198.18.32.0/19 that leads
// nowhere, so the real agents configure every simulated peer but none ever
// answers a probe). It reports the operator's time to assign every pod CIDR
// and publish every MeshPeer, join-to-programmed latency on the real agents
// (from the simulated agent's annotation write to the peer's route via
// wgmesh0, watched over netlink; the peer itself is checked through the
// device's UAPI socket), agent and userspace WireGuard CPU (/proc/PID/stat)
// and RSS (VmRSS) at steady state and during churn, the API server's
// request rate (apiserver_request_total before and after), and per event
// (a real node joining and failing, a simulated one joining and failing, a
// status-only MeshPeer update, a churn pair): operator writes and the real
// agents' writes (client-go's rest_client_requests_total of each process),
// status writes (wgmesh_status_writes_total) and reconciles
// (wgmesh_reconciles_total, less the steady rate), the bench's own writes
// (simulated kubelets, agents and node lifecycle controller) counted
// separately. WGMESH_BENCH_MESH_STEADY (default 60s) is the steady-state
// window, WGMESH_BENCH_MESH_CHURN (60s) and WGMESH_BENCH_MESH_CHURN_RATE
// (10: joins and leaves per second) the churn, WGMESH_BENCH_MESH_JOINS
// (50) the timed joins, WGMESH_BENCH_MESH_EVENTS (5) the counted isolated
// events of each kind, WGMESH_BENCH_MESH_WINDOW (12s) the window after each,
// WGMESH_BENCH_MESH_SETTLE (240s) the longest wait for the agents' first
// probe rounds to settle (every simulated peer unreachable after the
// hold-down, then no status write for 20s; the bench fails when they have
// not settled by then). WGMESH_BENCH_LOGS keeps the operator's and the real
// agents' logs there. A quick run:
//
//	make build control-plane cni-plugins
//	KUBEBUILDER_ASSETS=$(hack/control-plane.sh --dir) WGMESH_BIN_DIR=$PWD/bin \
//	  WGMESH_BENCH_MESH_NODES=300 WGMESH_BENCH_MESH_STEADY=15s WGMESH_BENCH_MESH_CHURN=15s \
//	  go test -run '^$' -bench Mesh1000 -benchtime 1x ./test/bench/
//
// TestMeshScale (make test) is its count-based check at 200 simulated
// nodes: status-only MeshPeer updates wake no agent reconcile and cause no
// operator write, counted once the agents and the operator have seen them
// all; a join and a failure cost the operator a constant number of writes
// and each real agent at most one status write.
package bench
