// Package meshsim simulates a large wgmesh mesh on one machine, for the
// scale test (TestMeshScale) and the 1,000-node benchmark (BenchmarkMesh1000)
// in test/bench.
//
// What is real: the local cluster of test/cluster (etcd, kube-apiserver,
// kube-controller-manager), the wgmesh-operator binary as a process (a /28
// per node, no leader election), and a few real nodes, each in its own
// network and mount namespace, running the real wgmesh-agent with userspace
// WireGuard. The real agents program every peer, simulated or not, on their
// wgmesh0, write their MeshPeer status and export their metrics.
//
// What is simulated: every other node exists only as API objects. Sim plays
// its kubelet (it registers the Node, Ready, with an InternalIP), its agent
// (it writes wgmesh.io/public-key, a freshly generated WireGuard key, and
// wgmesh.io/endpoint, an address in 198.18.32.0/19 that leads nowhere, and
// on request a status-only MeshPeer update) and the node lifecycle
// controller (Fail marks a Node Ready=Unknown and taints it unreachable). No
// simulated peer ever answers a handshake or a probe: to the real agents all
// of them are unreachable, a worst case for the status they write. Joins and
// failures whose effect on status matters are done with a real node
// (JoinReal, FailReal). Sim counts its own writes apart (Snapshot.Own), so
// that the operator's and the agents' writes can be told from them.
//
// Measurements: Snap reads every counter at one moment (the API server's
// requests, the operator's and each real agent's client writes, the agents'
// reconciles by trigger, watch events, status writes, Go memory, and CPU and
// resident memory from /proc); Snapshot.Since gives what happened between
// two. Route watches on the real nodes time each join from the simulated
// agent's annotation write to the route via wgmesh0 (JoinLatencies).
//
// It needs root, KUBEBUILDER_ASSETS and the built binaries in
// WGMESH_BIN_DIR (Need); its own unit tests need none of them.
package meshsim
