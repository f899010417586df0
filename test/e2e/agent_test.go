package e2e

// The agent end to end (issue 3): real operator, real agents as processes in
// node namespaces, userspace WireGuard. Uses needCluster, eventually,
// testLog and checkCapture from pods_test.go.

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/mesh"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/podnet"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/proc"
	"github.com/wgmesh/wgmesh/test/wait"
)

const agentMeshTimeout = 60 * time.Second

// TestAgent runs the agent scenarios on one three-node cluster, in order;
// the join/leave scenario comes last because it changes the cluster.
func TestAgent(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	t.Cleanup(cancel) // after the cluster's own cleanup: Cleanups run last-in first-out
	c := startAgentCluster(ctx, t, cluster.Options{Nodes: 3})
	nodes := slices.Clone(c.Nodes)
	waitFullMesh(ctx, t, c, nodes)
	checkKernelChosen(t, nodes)

	t.Run("gateways reachable through the tunnel", func(t *testing.T) { gatewaysReachable(ctx, t, c, nodes) })
	t.Run("underlay carries only WireGuard", func(t *testing.T) { underlayOnlyWireGuard(ctx, t, c, nodes) })
	t.Run("status and metrics", func(t *testing.T) { statusAndMetrics(ctx, t, c, nodes) })
	t.Run("drift repaired", func(t *testing.T) { driftRepaired(ctx, t, c, nodes) })
	t.Run("kill -9 loses no packet", func(t *testing.T) { killNineNoLoss(ctx, t, c, nodes) })
	t.Run("bad MeshPeers reported, others work", func(t *testing.T) { badMeshPeers(ctx, t, c, nodes) })
	t.Run("DNS force-endpoint", func(t *testing.T) { dnsForceEndpoint(ctx, t, c, nodes) })
	t.Run("cleanup on exit", func(t *testing.T) { cleanupOnExit(ctx, t, c, nodes) })
	t.Run("join and leave", func(t *testing.T) { joinAndLeave(ctx, t, c, nodes) })
	t.Run("1000 MeshPeers", func(t *testing.T) { thousandPeers(ctx, t, c, nodes) })
}

// TestAgentDualStackNAT: the mesh over IPv4 and IPv6 with a node behind NAT.
// Every node reaches every other node's gateways of both families through
// the tunnel, and the underlay carries only WireGuard.
func TestAgentDualStackNAT(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel) // after the cluster's own cleanup: Cleanups run last-in first-out
	c := startAgentCluster(ctx, t, cluster.Options{Nodes: 3, NATNodes: 1, DualStack: true})
	setNATKeepalive(ctx, t, c)
	nodes := slices.Clone(c.Nodes)
	infos := waitFullMesh(ctx, t, c, nodes)
	for _, n := range nodes {
		if got := len(gateways(infos[n.Name])); got != 2 {
			t.Fatalf("node %s has %d bridge gateways, want one per family", n.Name, got)
		}
	}
	t.Run("gateways of both families reachable through the tunnel", func(t *testing.T) { gatewaysReachable(ctx, t, c, nodes) })
	t.Run("underlay carries only WireGuard", func(t *testing.T) { underlayOnlyWireGuard(ctx, t, c, nodes) })
	t.Run("an external MeshPeer cannot capture the NAT node's learned endpoint", func(t *testing.T) { learnedEndpointProtected(ctx, t, c, nodes) })
}

// learnedEndpointProtected is the attack of an external MeshPeer whose
// allowedIPs hold the NAT router's public address, where every other node
// reaches the NAT node's WireGuard (learned from its handshakes; no spec
// names it). Without the protection the nodes routed their WireGuard packets
// for the NAT node into the attacker's peer and the NAT node lost every pod
// packet. Each node that learned the address refuses the peer and says why
// (a CapturesUnderlay Event), unless the operator has left it out first
// (two nodes report the address: AllowedIPsConflict); either way no node
// routes the address into the tunnel, and the NAT node keeps its mesh.
func learnedEndpointProtected(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	waitFullMesh(ctx, t, c, nodes)
	evil := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-ext-nat-capture"}, Spec: wgv1.MeshPeerSpec{
		PublicKey: wgv1.PublicKey(newKey(t).String()), AllowedIPs: []wgv1.CIDR{cluster.RouterOutside + "/32"}}}
	// The barrier: a harmless external peer created after it. Each agent
	// handles MeshPeer events in order, so once the barrier's route is on a
	// node, that node's agent has judged the attacker's peer.
	barrier := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-ext-barrier"}, Spec: wgv1.MeshPeerSpec{
		PublicKey: wgv1.PublicKey(newKey(t).String()), AllowedIPs: []wgv1.CIDR{"198.18.253.1/32"}}}
	for _, mp := range []*wgv1.MeshPeer{evil, barrier} {
		if err := c.Client.Create(ctx, mp); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Client.Delete(context.WithoutCancel(ctx), mp) }()
	}
	for _, n := range nodes {
		if n.NATted {
			continue
		}
		if err := wait.Poll(ctx, agentMeshTimeout, func() error {
			out, err := n.Exec(ctx, "ip", "route", "show", "198.18.253.1/32", "dev", agent.DefaultLinkName)
			if err != nil || strings.TrimSpace(string(out)) == "" {
				return fmt.Errorf("node %s has no route for the barrier peer yet (%v)", n.Name, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		out, err := n.Exec(ctx, "ip", "route", "get", cluster.RouterOutside)
		if err != nil || strings.Contains(string(out), "dev "+agent.DefaultLinkName) {
			t.Errorf("node %s routes the NAT router's address into the tunnel: %q %v", n.Name, out, err)
		}
	}
	// Said why: by every node that learned the address, or by the operator.
	if err := wait.Poll(ctx, agentMeshTimeout, func() error {
		mp := &wgv1.MeshPeer{}
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(evil), mp); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionAllowedIPsConflict); cond != nil && cond.Status == metav1.ConditionTrue &&
			strings.Contains(cond.Message, cluster.RouterOutside) {
			return nil
		}
		var evs eventsv1.EventList
		if err := c.Client.List(ctx, &evs); err != nil {
			return err
		}
		for _, n := range nodes {
			if n.NATted {
				continue
			}
			found := false
			for _, ev := range evs.Items {
				if ev.Regarding.Kind == "MeshPeer" && ev.Regarding.Name == evil.Name && ev.Reason == mesh.ReasonCapturesUnderlay &&
					strings.HasPrefix(ev.Note, "node "+n.Name+":") && strings.Contains(ev.Note, cluster.RouterOutside) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("neither AllowedIPsConflict on MeshPeer %s nor a %s Event from node %s naming %s", evil.Name, mesh.ReasonCapturesUnderlay, n.Name, cluster.RouterOutside)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	gatewaysReachable(ctx, t, c, nodes)
}

// startAgentCluster starts a local cluster that is stopped when the test
// ends, with the tail of every agent's log when it failed.
func startAgentCluster(ctx context.Context, t *testing.T, o cluster.Options) *cluster.Cluster {
	t.Helper()
	o.Log = testLog{t}
	if o.WireGuardMode == "" {
		o.WireGuardMode = wireGuardMode(t)
	}
	c, err := cluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- %s agent log (tail) ---\n%s", n.Name, cluster.Tail(n.AgentLog(), 40))
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping cluster: %v", err)
		}
	})
	return c
}

// nodeInfo is what the others need to have for a node: its key and ranges.
type nodeInfo struct {
	name     string
	keyHex   string
	podCIDRs []netip.Prefix
}

func infoOf(ctx context.Context, c *cluster.Cluster, n *cluster.Node) (nodeInfo, error) {
	node := &corev1.Node{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
		return nodeInfo{}, err
	}
	pk := node.Annotations[wgv1.AnnotationPublicKey]
	if pk == "" || len(node.Spec.PodCIDRs) == 0 {
		return nodeInfo{}, fmt.Errorf("node %s: no public key annotation or podCIDRs yet", n.Name)
	}
	k, err := wgtypes.ParseKey(pk)
	if err != nil {
		return nodeInfo{}, err
	}
	inf := nodeInfo{name: n.Name, keyHex: hex.EncodeToString(k[:])}
	for _, s := range node.Spec.PodCIDRs {
		inf.podCIDRs = append(inf.podCIDRs, netip.MustParsePrefix(s))
	}
	return inf, nil
}

func gateways(inf nodeInfo) []netip.Addr {
	var out []netip.Addr
	for _, p := range inf.podCIDRs {
		if gw, ok := podnet.Gateway(p); ok {
			out = append(out, gw.Addr())
		}
	}
	return out
}

// meshRoutes lists the destinations of the agent's routes on wgmesh0.
func meshRoutes(ctx context.Context, n *cluster.Node) (map[string]string, error) {
	out := map[string]string{}
	for _, fam := range []string{"-4", "-6"} {
		b, err := n.Exec(ctx, "ip", fam, "route", "show", "dev", agent.DefaultLinkName, "proto", "87")
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				out[f[0]] = line
			}
		}
	}
	return out, nil
}

// hasPeer checks that n has peer other with its AllowedIPs and routes.
func hasPeer(ctx context.Context, n *cluster.Node, other nodeInfo) error {
	peers, err := wgPeers(n)
	if err != nil {
		return err
	}
	p := peers[other.keyHex]
	if p == nil {
		return fmt.Errorf("%s has no peer for %s", n.Name, other.name)
	}
	rs, err := meshRoutes(ctx, n)
	if err != nil {
		return err
	}
	for _, c := range other.podCIDRs {
		if !slices.Contains(p.allowed, c.String()) {
			return fmt.Errorf("%s: peer %s allowed IPs %v lack %s", n.Name, other.name, p.allowed, c)
		}
		if _, ok := rs[c.String()]; !ok {
			return fmt.Errorf("%s has no route %s dev wgmesh0 for %s", n.Name, c, other.name)
		}
	}
	return nil
}

// lacksPeer checks that n has neither the peer nor its routes.
func lacksPeer(ctx context.Context, n *cluster.Node, other nodeInfo) error {
	peers, err := wgPeers(n)
	if err != nil {
		return err
	}
	if peers[other.keyHex] != nil {
		return fmt.Errorf("%s still has peer %s", n.Name, other.name)
	}
	rs, err := meshRoutes(ctx, n)
	if err != nil {
		return err
	}
	for _, c := range other.podCIDRs {
		if _, ok := rs[c.String()]; ok {
			return fmt.Errorf("%s still has route %s for %s", n.Name, c, other.name)
		}
	}
	return nil
}

func waitFullMesh(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) map[string]nodeInfo {
	t.Helper()
	infos := map[string]nodeInfo{}
	err := wait.Poll(ctx, agentMeshTimeout, func() error {
		for _, n := range nodes {
			inf, err := infoOf(ctx, c, n)
			if err != nil {
				return err
			}
			infos[n.Name] = inf
		}
		for _, n := range nodes {
			for _, o := range nodes {
				if o != n {
					if err := hasPeer(ctx, n, infos[o.Name]); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("full mesh not reached: %v", err)
	}
	return infos
}

func ping(ctx context.Context, from *cluster.Node, src, dst netip.Addr) error {
	_, err := from.Exec(ctx, "ping", "-c", "1", "-W", "2", "-I", src.String(), dst.String())
	return err
}

func gatewaysReachable(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	infos := waitFullMesh(ctx, t, c, nodes)
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			// Every family: the gateways are IPv4 first, then IPv6 on dual-stack.
			srcs, dsts := gateways(infos[a.Name]), gateways(infos[b.Name])
			for i := range min(len(srcs), len(dsts)) {
				src, dst := srcs[i], dsts[i]
				if err := wait.Poll(ctx, 20*time.Second, func() error { return ping(ctx, a, src, dst) }); err != nil {
					t.Errorf("%s cannot reach %s's gateway %s: %v", a.Name, b.Name, dst, err)
					continue
				}
				// Without -I: the route's src makes replies come back through the tunnel.
				out, err := a.Exec(ctx, "ip", "route", "get", dst.String())
				if err != nil || !strings.Contains(string(out), "dev wgmesh0") || !strings.Contains(string(out), "src "+src.String()) {
					t.Errorf("%s: route to %s = %q (%v), want dev wgmesh0 src %s", a.Name, dst, out, err, src)
				}
				if _, err := a.Exec(ctx, "ping", "-c", "1", "-W", "2", dst.String()); err != nil {
					t.Errorf("%s cannot reach %s without choosing the source: %v", a.Name, dst, err)
				}
			}
		}
	}
}

func underlayOnlyWireGuard(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	infos := waitFullMesh(ctx, t, c, nodes)
	n := nodes[0]
	// Control-plane traffic (the API server) and neighbour discovery (ICMPv6
	// types 133-137) are not node-to-node data traffic. Every other ICMPv6
	// packet stays in the capture: a pod-range ping in clear must be seen.
	capt, err := n.Capture(ctx, "eth0", "not arp and not host "+cluster.APIServerIP+
		" and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)")
	if err != nil {
		t.Fatal(err)
	}
	dualStack := false
	for _, o := range nodes[1:] {
		srcs, dsts := gateways(infos[n.Name]), gateways(infos[o.Name])
		for i := range min(len(srcs), len(dsts)) {
			dualStack = dualStack || srcs[i].Is6()
			for range 5 {
				if err := ping(ctx, n, srcs[i], dsts[i]); err != nil {
					t.Errorf("ping %s: %v", dsts[i], err)
				}
			}
		}
	}
	pkts, err := capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	checkCapture(t, n.Name+" eth0", pkts, dualStack)
}

func statusAndMetrics(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	for _, n := range nodes {
		err := wait.Poll(ctx, agentMeshTimeout, func() error {
			mp := &wgv1.MeshPeer{}
			if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, mp); err != nil {
				return err
			}
			ready := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionReady)
			if ready == nil || ready.Status != metav1.ConditionTrue {
				return fmt.Errorf("MeshPeer %s Ready = %+v", n.Name, ready)
			}
			if mp.Status.TotalPeers != int32(len(nodes)-1) || mp.Status.MTU != 1420 || mp.Status.ObservedGeneration != mp.Generation {
				return fmt.Errorf("MeshPeer %s status = %+v", n.Name, mp.Status)
			}
			if mp.Status.Connected != fmt.Sprintf("%d/%d", mp.Status.ConnectedPeers, mp.Status.TotalPeers) {
				return fmt.Errorf("MeshPeer %s connected = %q", n.Name, mp.Status.Connected)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	// Metrics and readiness, from inside the node. The oldest handshake
	// among probed peers shows once a probe has ended and a reconcile seen it.
	n := nodes[0]
	var out string
	if err := wait.Poll(ctx, agentMeshTimeout, func() error {
		out = agentMetrics(ctx, t, n)
		for _, m := range []string{"wgmesh_peers ", "wgmesh_peers_connected ", "wgmesh_peers_unreachable ", "wgmesh_peers_oldest_handshake_timestamp_seconds ",
			"wgmesh_receive_bytes_total ", "wgmesh_transmit_bytes_total ", "wgmesh_peer_probe_rtt_seconds_count ", "wgmesh_peer_metrics_dropped 0",
			"wgmesh_reconcile_duration_seconds_count", "wgmesh_mtu_bytes 1420", `wgmesh_sysctl{key="net.ipv4.ip_forward"} 1`} {
			if !strings.Contains(out, m) {
				return fmt.Errorf("metrics lack %q", m)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// By default no series per peer: they grow with nodes² across a cluster.
	if i := strings.Index(out, `{peer="`); i >= 0 {
		t.Errorf("the agent's default metrics have a series per peer: %s", out[strings.LastIndex(out[:i], "\n")+1:i+strings.Index(out[i:], "\n")])
	}
	if code, body, err := agentGet(ctx, n, agentHealthPort, "/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("readyz: %d %v %q", code, err, body)
	}
	statusNotOnATimer(ctx, t, c, nodes)
}

// statusNotOnATimer: once every node sees all its peers connected, a steady
// mesh writes no MeshPeer status: with N nodes every write fans out to N
// watchers. Two agent resyncs (5 s each) pass without a new resourceVersion.
func statusNotOnATimer(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	versions := map[string]string{}
	err := wait.Poll(ctx, agentMeshTimeout, func() error {
		for _, n := range nodes {
			mp := &wgv1.MeshPeer{}
			if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, mp); err != nil {
				return err
			}
			if mp.Status.TotalPeers == 0 || mp.Status.ConnectedPeers != mp.Status.TotalPeers {
				return fmt.Errorf("MeshPeer %s connected %s", n.Name, mp.Status.Connected)
			}
			versions[n.Name] = mp.ResourceVersion
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Wait for two full reconciles (resyncs) on every node, counted by the
	// agent's own metric, rather than sleeping for a guessed time.
	start := map[string]float64{}
	for _, n := range nodes {
		start[n.Name] = reconcileCount(ctx, t, n)
	}
	err = wait.Poll(ctx, agentMeshTimeout, func() error {
		for _, n := range nodes {
			if got := reconcileCount(ctx, t, n); got < start[n.Name]+2 {
				return fmt.Errorf("node %s: %v reconciles since, want 2", n.Name, got-start[n.Name])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		mp := &wgv1.MeshPeer{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, mp); err != nil {
			t.Fatal(err)
		}
		if mp.ResourceVersion != versions[n.Name] {
			t.Errorf("MeshPeer %s was rewritten in a steady mesh (resourceVersion %s -> %s, status %+v)", n.Name, versions[n.Name], mp.ResourceVersion, mp.Status)
		}
	}
}

var reconcileCountLine = regexp.MustCompile(`(?m)^wgmesh_reconcile_duration_seconds_count (\S+)$`)

// reconcileCount is the node agent's wgmesh_reconcile_duration_seconds_count.
func reconcileCount(ctx context.Context, t *testing.T, n *cluster.Node) float64 {
	t.Helper()
	m := reconcileCountLine.FindStringSubmatch(agentMetrics(ctx, t, n))
	if m == nil {
		t.Fatalf("metrics of %s lack wgmesh_reconcile_duration_seconds_count", n.Name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// dnsForceEndpoint: a wgmesh.io/force-endpoint with a DNS name goes through
// the operator into the MeshPeer as written, and every other node's agent
// resolves it (here through /etc/hosts in each node's own mount namespace)
// and uses the address; the mesh keeps working.
func dnsForceEndpoint(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	infos := waitFullMesh(ctx, t, c, nodes)
	b := nodes[1]
	const name = "wgm-dns-b.wgmesh.test"
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(file, append(hosts, []byte(fmt.Sprintf("\n%s %s\n", b.UnderlayIP, name))...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if out, err := n.Exec(ctx, "mount", "--bind", file, "/etc/hosts"); err != nil {
			t.Fatalf("%s: %v %s", n.Name, err, out)
		}
		t.Cleanup(func() { _, _ = n.Exec(context.WithoutCancel(ctx), "umount", "/etc/hosts") })
	}
	set := func(v *string) {
		node := &corev1.Node{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: b.Name}, node); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(node.DeepCopy())
		if v == nil {
			delete(node.Annotations, wgv1.AnnotationForceEndpoint)
		} else {
			node.Annotations[wgv1.AnnotationForceEndpoint] = *v
		}
		if err := c.Client.Patch(ctx, node, patch); err != nil {
			t.Fatal(err)
		}
	}
	ep := name + ":51820"
	set(&ep)
	t.Cleanup(func() { set(nil) })
	err = wait.Poll(ctx, agentMeshTimeout, func() error {
		mp := &wgv1.MeshPeer{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: b.Name}, mp); err != nil {
			return err
		}
		if string(mp.Spec.Endpoint) != ep {
			return fmt.Errorf("MeshPeer %s endpoint %q, want %q", b.Name, mp.Spec.Endpoint, ep)
		}
		for _, n := range nodes {
			if n == b {
				continue
			}
			peers, err := wgPeers(n)
			if err != nil {
				return err
			}
			if p := peers[infos[b.Name].keyHex]; p == nil || p.endpoint != net.JoinHostPort(b.UnderlayIP, "51820") {
				return fmt.Errorf("%s: peer %s endpoint %+v, want %s resolved from %s", n.Name, b.Name, p, b.UnderlayIP, name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a := nodes[0]
	if err := wait.Poll(ctx, 20*time.Second, func() error { return ping(ctx, a, gateways(infos[a.Name])[0], gateways(infos[b.Name])[0]) }); err != nil {
		t.Errorf("%s cannot reach %s through the DNS endpoint: %v", a.Name, b.Name, err)
	}
}

func driftRepaired(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	infos := waitFullMesh(ctx, t, c, nodes)
	n, o := nodes[0], infos[nodes[1].Name]
	route := o.podCIDRs[0].String()
	if _, err := n.Exec(ctx, "ip", "route", "del", route, "dev", agent.DefaultLinkName); err != nil {
		t.Fatal(err)
	}
	if err := removePeerByHand(n, o.keyHex); err != nil {
		t.Fatalf("removing peer by hand: %v", err)
	}
	began := time.Now()
	if err := wait.Poll(ctx, 30*time.Second, func() error { return hasPeer(ctx, n, o) }); err != nil {
		t.Fatalf("route and peer deleted by hand not restored: %v", err)
	}
	t.Logf("route %s and peer %s restored on %s after %s", route, o.name, n.Name, time.Since(began).Round(10*time.Millisecond))
	// And the traffic flows again.
	if err := wait.Poll(ctx, 20*time.Second, func() error { return ping(ctx, n, gateways(infos[n.Name])[0], gateways(o)[0]) }); err != nil {
		t.Errorf("no traffic after repair: %v", err)
	}
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

func killNineNoLoss(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	infos := waitFullMesh(ctx, t, c, nodes)
	a, b := nodes[0], nodes[1]
	dp := dataPlane(t, a)
	// 1,500 pings every 10 ms: 15 s, with the agent of a killed and
	// restarted in the middle.
	cmd := a.Command(ctx, "ping", "-q", "-i", "0.01", "-c", "1500", "-W", "1",
		"-I", gateways(infos[a.Name])[0].String(), gateways(infos[b.Name])[0].String())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := a.KillAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := a.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	m := pingSummary.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("ping output without summary (%v): %s", err, out.String())
	}
	if m[1] != m[2] || m[1] == "0" {
		t.Errorf("ping across the agent's kill -9 and restart: %s transmitted, %s received; want no loss\n%s", m[1], m[2], out.String())
	}
	t.Logf("ping every 10 ms across kill -9 + restart of %s's agent: %s/%s received", a.Name, m[2], m[1])
	if got := dataPlane(t, a); got != dp {
		t.Errorf("%s became %s: the data plane was restarted", dp, got)
	}
	// The restarted agent became ready and changed nothing.
	waitFullMesh(ctx, t, c, nodes)
}

func newKey(t *testing.T) wgtypes.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func badMeshPeers(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	infos := waitFullMesh(ctx, t, c, nodes)
	bad := []*wgv1.MeshPeer{
		{ObjectMeta: metav1.ObjectMeta{Name: "wgm-ext-dns"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(newKey(t).String()),
			Endpoint: "wgm-nonexistent.invalid:51820", AllowedIPs: []wgv1.CIDR{"198.18.250.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "wgm-ext-overlap-a"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(newKey(t).String()),
			AllowedIPs: []wgv1.CIDR{"198.18.251.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "wgm-ext-overlap-b"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(newKey(t).String()),
			AllowedIPs: []wgv1.CIDR{"198.18.251.128/25"}}},
	}
	for _, mp := range bad {
		if err := c.Client.Create(ctx, mp); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, mp := range bad {
			_ = c.Client.Delete(ctx, mp)
		}
	}()
	n := nodes[0]
	wantInMessage := []string{"wgm-ext-dns", "wgm-nonexistent.invalid:51820", "wgm-ext-overlap-a", "198.18.251.0/24", "wgm-ext-overlap-b", "198.18.251.128/25"}
	// Condition on the node's own MeshPeer.
	err := wait.Poll(ctx, agentMeshTimeout, func() error {
		mp := &wgv1.MeshPeer{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, mp); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionDegraded)
		if cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("Degraded = %+v", cond)
		}
		for _, s := range wantInMessage {
			if !strings.Contains(cond.Message, s) {
				return fmt.Errorf("Degraded message %q lacks %q", cond.Message, s)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// Events on the bad MeshPeers, naming peer and value.
	err = wait.Poll(ctx, agentMeshTimeout, func() error {
		var evs eventsv1.EventList
		if err := c.Client.List(ctx, &evs); err != nil {
			return err
		}
		for _, mp := range bad {
			found := false
			for _, ev := range evs.Items {
				if ev.Regarding.Kind == "MeshPeer" && ev.Regarding.Name == mp.Name && strings.Contains(ev.Note, mp.Name) && ev.Type == corev1.EventTypeWarning {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("no Warning Event regarding MeshPeer %s", mp.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// Log lines.
	log := readFile(n.AgentLog())
	for _, s := range []string{"wgm-ext-dns", "wgm-nonexistent.invalid:51820", "wgm-ext-overlap-a", "198.18.251.0/24"} {
		if !strings.Contains(log, s) {
			t.Errorf("agent log of %s does not mention %q", n.Name, s)
		}
	}
	// The DNS peer is kept without endpoint (it may still reach us); the
	// overlapping ones are left out; every node peer keeps working.
	peers, err := wgPeers(n)
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range bad[1:] {
		k, _ := wgtypes.ParseKey(string(mp.Spec.PublicKey))
		if peers[hex.EncodeToString(k[:])] != nil {
			t.Errorf("overlapping MeshPeer %s configured as a peer", mp.Name)
		}
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				if err := wait.Poll(ctx, 20*time.Second, func() error {
					return ping(ctx, a, gateways(infos[a.Name])[0], gateways(infos[b.Name])[0])
				}); err != nil {
					t.Errorf("with bad MeshPeers present, %s cannot reach %s: %v", a.Name, b.Name, err)
				}
			}
		}
	}
	// Removing them clears the condition.
	for _, mp := range bad {
		if err := c.Client.Delete(ctx, mp); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait.Poll(ctx, agentMeshTimeout, func() error {
		mp := &wgv1.MeshPeer{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, mp); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionDegraded); cond == nil || cond.Status != metav1.ConditionFalse {
			return fmt.Errorf("Degraded still %+v", cond)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// cleanupOnExit restarts one agent with --cleanup-on-exit, stops it, and
// checks that link, routes, bridge, userspace process and annotations are
// gone; then a normal agent brings the node back into the mesh.
func cleanupOnExit(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	waitFullMesh(ctx, t, c, nodes)
	n := nodes[len(nodes)-1]
	kernel, err := kernelLink(n)
	if err != nil {
		t.Fatal(err)
	}
	wgPID := 0
	if !kernel {
		wgPID = wireguardPID(t, n)
	}
	if err := n.KillAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Default: the data plane stays when the agent stops.
	if _, err := n.Exec(ctx, "ip", "link", "show", agent.DefaultLinkName); err != nil {
		t.Errorf("without --cleanup-on-exit the link must stay: %v", err)
	}
	if err := n.StartAgent(ctx, "--cleanup-on-exit"); err != nil {
		t.Fatal(err)
	}
	waitFullMesh(ctx, t, c, nodes)
	if err := n.KillAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{agent.DefaultLinkName, agent.DefaultBridgeName} {
		if out, err := n.Exec(ctx, "ip", "link", "show", link); err == nil {
			t.Errorf("after --cleanup-on-exit, %s still exists: %s", link, out)
		}
	}
	if out, _ := n.Exec(ctx, "ip", "route", "show", "proto", "87"); strings.TrimSpace(string(out)) != "" {
		t.Errorf("after --cleanup-on-exit, routes remain: %s", out)
	}
	if err := wait.Poll(ctx, 10*time.Second, func() error {
		if wgPID == 0 {
			return nil // kernel WireGuard: the link is gone, checked above
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", wgPID)); err == nil && !strings.Contains(readFile(fmt.Sprintf("/proc/%d/stat", wgPID)), ") Z ") {
			return fmt.Errorf("userspace WireGuard (pid %d) still runs", wgPID)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	node := &corev1.Node{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
		t.Fatal(err)
	}
	if _, ok := node.Annotations[wgv1.AnnotationPublicKey]; ok {
		t.Errorf("after --cleanup-on-exit, Node %s still has %s", n.Name, wgv1.AnnotationPublicKey)
	}
	// Back to normal: same key (state dir kept), full mesh again.
	if err := n.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	infos := waitFullMesh(ctx, t, c, nodes)
	if err := wait.Poll(ctx, 20*time.Second, func() error {
		return ping(ctx, nodes[0], gateways(infos[nodes[0].Name])[0], gateways(infos[n.Name])[0])
	}); err != nil {
		t.Errorf("after the agent came back: %v", err)
	}
}

// joinAndLeave adds nodes one at a time, measures the time from the new
// node's annotations appearing to every other node having its peer and
// routes, checks reachability, then removes it and checks it is gone.
func joinAndLeave(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	var joins []time.Duration
	for i, name := range []string{"wgm-node-4", "wgm-node-5", "wgm-node-6"} {
		type added struct {
			n   *cluster.Node
			err error
		}
		done := make(chan added, 1)
		go func() {
			n, err := c.AddNode(ctx, name, false)
			done <- added{n, err}
		}()
		// Poll for the annotations while the node comes up (every 10 ms:
		// this is the measurement).
		var appeared time.Time
		var inf nodeInfo
		if err := wait.Every(ctx, agentMeshTimeout, 10*time.Millisecond, func() error {
			node := &corev1.Node{}
			if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
				return err
			}
			if node.Annotations[wgv1.AnnotationPublicKey] == "" {
				return fmt.Errorf("node %s has announced no key", name)
			}
			if appeared.IsZero() {
				appeared = time.Now()
			}
			var err error
			inf, err = infoOf(ctx, c, &cluster.Node{Name: name})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := wait.Every(ctx, agentMeshTimeout, 10*time.Millisecond, func() error {
			for _, o := range nodes {
				if err := hasPeer(ctx, o, inf); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("%s not a peer everywhere %s after its annotations appeared: %v", name, agentMeshTimeout, err)
		}
		took := time.Since(appeared)
		joins = append(joins, took)
		a := <-done
		if a.err != nil {
			t.Fatalf("adding %s: %v", name, a.err)
		}
		all := append(slices.Clone(nodes), a.n)
		infos := waitFullMesh(ctx, t, c, all)
		for _, o := range nodes {
			if err := wait.Poll(ctx, 20*time.Second, func() error {
				return ping(ctx, o, gateways(infos[o.Name])[0], gateways(inf)[0])
			}); err != nil {
				t.Errorf("%s cannot reach new node %s: %v", o.Name, name, err)
			}
			if err := wait.Poll(ctx, 20*time.Second, func() error {
				return ping(ctx, a.n, gateways(inf)[0], gateways(infos[o.Name])[0])
			}); err != nil {
				t.Errorf("new node %s cannot reach %s: %v", name, o.Name, err)
			}
		}
		if i == 0 {
			logRSS(t, "3 peers", nodes[0])
		}
		if err := c.RemoveNode(ctx, a.n); err != nil {
			t.Fatalf("removing %s: %v", name, err)
		}
		if err := wait.Poll(ctx, agentMeshTimeout, func() error {
			for _, o := range nodes {
				if err := lacksPeer(ctx, o, inf); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Errorf("after %s left: %v", name, err)
		}
	}
	sorted := slices.Clone(joins)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	t.Logf("join propagation (annotations appear -> peer and route on every other node): %v, median %s",
		joins, sorted[len(sorted)/2].Round(time.Millisecond))
}

func logRSS(t *testing.T, what string, n *cluster.Node) {
	if kib, err := proc.StatusKiB(n.AgentPID(), "VmRSS"); err == nil {
		t.Logf("agent RSS on %s with %s: %d kB", n.Name, what, kib)
	}
}

// thousandPeers creates 1,000 external MeshPeers and measures how long until
// a node has them all configured, and the agent's memory.
func thousandPeers(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node) {
	const count = 1000
	n := nodes[0]
	logRSS(t, fmt.Sprintf("%d peers", len(nodes)-1), n)
	// A client without the default 5 QPS client-side throttling.
	cfg, err := c.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	fast, err := client.New(cfg, client.Options{Scheme: cluster.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// Labelled, so that they go in one DeleteAllOf.
	sel := client.MatchingLabels{"wgmesh.io/e2e": "thousand-peers"}
	defer func() { _ = c.Client.DeleteAllOf(context.WithoutCancel(ctx), &wgv1.MeshPeer{}, sel) }()
	began := time.Now()
	// Eight writers in parallel, like many users or controllers would.
	errs := make(chan error, count)
	work := make(chan int)
	for range 8 {
		go func() {
			for i := range work {
				// 198.18.64.0/18: outside the underlays, pods and services.
				ip := netip.AddrFrom4([4]byte{198, 18, byte(64 + i/256), byte(i % 256)})
				k, err := wgtypes.GeneratePrivateKey()
				if err != nil {
					errs <- err
					continue
				}
				mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("wgm-ext-%04d", i), Labels: sel},
					Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(k.PublicKey().String()), AllowedIPs: []wgv1.CIDR{wgv1.CIDR(ip.String() + "/32")}}}
				errs <- fast.Create(ctx, mp)
			}
		}()
	}
	for i := range count {
		work <- i
	}
	close(work)
	for range count {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	createdAt := time.Now()
	want := count + len(nodes) - 1
	err = wait.Poll(ctx, 5*time.Minute, func() error {
		peers, err := wgPeers(n)
		if err != nil {
			return err
		}
		rs, err := meshRoutes(ctx, n)
		if err != nil {
			return err
		}
		if len(peers) != want || len(rs) < want {
			return fmt.Errorf("%s has %d peers and %d routes, want %d", n.Name, len(peers), len(rs), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MeshPeers: created in %s, all configured on %s %s after the last create",
		count, createdAt.Sub(began).Round(time.Millisecond), n.Name, time.Since(createdAt).Round(time.Millisecond))
	logRSS(t, fmt.Sprintf("%d MeshPeers in the API server", count+len(nodes)), n)
	// The node mesh still works.
	infos := waitFullMesh(ctx, t, c, nodes)
	if err := ping(ctx, n, gateways(infos[n.Name])[0], gateways(infos[nodes[1].Name])[0]); err != nil {
		t.Errorf("with 1000 peers: %v", err)
	}
	deleted := time.Now()
	if err := fast.DeleteAllOf(ctx, &wgv1.MeshPeer{}, sel); err != nil {
		t.Fatal(err)
	}
	if err := wait.Poll(ctx, 5*time.Minute, func() error {
		peers, err := wgPeers(n)
		if err != nil {
			return err
		}
		if len(peers) != len(nodes)-1 {
			return fmt.Errorf("%d peers left, want %d", len(peers), len(nodes)-1)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	t.Logf("%d MeshPeers deleted: peers removed on %s after %s", count, n.Name, time.Since(deleted).Round(time.Millisecond))
}

func readFile(p string) string {
	b, _ := os.ReadFile(filepath.Clean(p))
	return string(b)
}
