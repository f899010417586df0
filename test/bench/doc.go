// Package bench holds wgmesh's benchmarks that need network namespaces and
// print ratios measured side by side in one run (`make bench`).
//
// BenchmarkServiceProxy compares wgmesh's service proxy (WGMESH_BIN_DIR's
// wgmesh-serviceproxy, when built) with the real kube-proxy in nftables mode
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
package bench
