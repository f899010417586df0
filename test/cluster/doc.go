// Package cluster runs a local wgmesh cluster in network namespaces: the harness of the
// end-to-end tests (test/e2e) and of `make demo`. Needs root, iproute2 (nsenter, unshare
// from util-linux), nft and tcpdump; finds etcd, kube-apiserver, kube-controller-manager and
// kubectl in KUBEBUILDER_ASSETS and the product in WGMESH_BIN_DIR.
//
//	c, err := cluster.Start(ctx, cluster.Options{Nodes: 3, NATNodes: 1})  // 3 nodes, 1 behind NAT
//	defer c.Stop()
//	c.Client, c.Kubeconfig, c.WorkDir, c.Nodes, c.Missing (binaries not found, not started)
//	c.Underlay, c.Router, c.Internet                      // *netns.NS of the network parts
//	pod, _ := c.CreatePod(ctx, c.Nodes[0], "a")            // or CreatePodWith(PodOptions{...})
//	pod, _ = c.WaitPodReady(ctx, "default", "a", time.Minute)
//	ans, _ := c.PodDial(ctx, pod, "http"|"udp"|"tcp", ip, 8080, "hostname")  // dialled FROM pod
//	ans, _ = node.Dial(ctx, "http"|"udp"|"tcp", "ip:port", "hostname")     // from the node netns
//	node.Exec(ctx, argv...), node.Command(...)             // in the node's net + mount namespaces
//	node.HostPath("/etc/cni/net.d/10-wgmesh.conflist")     // that file as seen from the host
//	node.StartAgent(ctx, extraFlags...), node.KillAgent(sig), node.AgentPID(), node.AgentLog()
//	node.StartRuntime(ctx), node.StopRuntime()             // the kubelet stand-in
//	node.Capture(ctx, iface, filter)                       // tcpdump in the node
//	c.AddNode(ctx, "wgm-node-4", natted), c.RemoveNode(ctx, node)   // also deletes the Node
//	c.StartOperator(ctx), c.StopOperator(), c.Memory(), cluster.Leftovers(), cluster.Cleanup(ctx)
//
// # Layout (addresses from DESIGN.md)
//
// The underlay bridge lives in its own namespace wgm-underlay, so the host's links, routes
// and firewall are untouched: the host gets one veth, wgm-cp0, holding the API server
// address 198.18.0.1/24 (and 2001:db8::1/64 in dual-stack clusters), whose connected route
// is the only route added on the host. etcd listens on 127.0.0.1 (free ports), the API
// server on 198.18.0.1:6443 only, the operator's metrics and probes on 198.18.0.1:18080/18081.
//
//	nodes wgm-node-N   198.18.0.1N/24 on the underlay, default route via the router
//	router wgm-router  198.18.0.254 outside, 198.18.1.1 inside (bridge br1 = second cloud);
//	                   masquerades the second cloud and lets in only replies (nftables)
//	nodes wgm-nat-N    198.18.1.1N/24 behind the router
//	wgm-internet       198.18.0.250, an outside host for egress tests
//	pods               198.19.0.0/16 (a /24 per node, given by the operator)
//	services           198.18.128.0/20
//	dual-stack         2001:db8::/64, 2001:db8:1::/64, pods 2001:db8:100::/56, services 2001:db8:200::/112
//
// Real nodes (Options.RealNodes) add one route per reachable node on the host: its pod
// CIDRs via its underlay address, so that the API server can proxy to pods as a control
// plane on a real cluster's nodes can (see routePodCIDRs).
//
// Each node is a netns.Machine: network namespace <node name> plus its own mount namespace
// with private /var/run/wireguard, /var/lib/wgmesh, /etc/cni/net.d, /opt/cni/bin,
// /var/lib/cni and /run/netns (backed by <WorkDir>/nodes/<node>/root/) and a fresh /sys.
// The node name is also the namespace name (node names already carry the wgm prefix).
//
// # Control plane
//
// Real etcd, kube-apiserver (client certificates from a CA made per run, RBAC
// authorisation: AlwaysAllow would turn anonymous auth off and break it) and
// kube-controller-manager with only endpointslice, garbagecollector, namespace,
// serviceaccount and serviceaccount-token (no node IPAM: pod CIDRs are the operator's),
// using per-controller service accounts. The CRDs from charts/wgmesh/crds are applied
// before the controller manager starts. The operator runs with --cluster-cidrs=198.19.0.0/16
// (plus 2001:db8:100::/56 in dual-stack clusters). Admin, operator and node identities are
// in system:masters until the chart's RBAC roles are used here. Stop stops the API server
// before etcd (the other order hangs the API server).
//
// # Nodes
//
// Per node: wgmesh-testnode (test/noderuntime) registers the Node as a kubelet would
// (InternalIP, Ready, no podCIDR) and runs the pods bound to it through CNI; wgmesh-agent
// runs with the contract flags (--node-name, --wireguard-mode, --cluster-cidrs,
// --service-cidrs, --cni-bin-source=$WGMESH_BIN_DIR/cni, admin kubeconfig) and logs to
// <WorkDir>/nodes/<node>/agent.log. A missing binary is reported in Missing, not faked.
//
// # One cluster per machine, and cleanup
//
// Clusters share addresses, so a machine runs one at a time: Start takes a lock
// (/run/wgm-cluster/lock, an flock the kernel drops when the owner dies) and waits for it
// up to Options.LockWait. With the lock, Start removes what a crashed run left: the
// processes it recorded in /run/wgm-cluster/state.json (PID and start time), its work
// directory, and every wgm namespace, link and mount whose owner is gone
// (netns.CleanupLeftovers). Stop kills every process in every node namespace, stops the
// control plane, removes namespaces, links, mounts and the work directory; Leftovers lists
// whatever still carries the prefix.
//
// # Split across a VM
//
// For kernel WireGuard (hack/vm.sh --cluster, make test-kernel) the nodes run in a VM and
// the rest on the host: Options.ControlPlaneOnly on the host starts the network, the
// control plane and the operator and writes remote.json; Options.Remote (default
// $WGMESH_CLUSTER_REMOTE) in the guest makes a cluster of nodes only, whose underlay
// bridge holds the guest's NIC, a tap on the host's underlay bridge (remote.go).
package cluster
