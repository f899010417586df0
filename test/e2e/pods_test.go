package e2e

// Pod networking end to end, modelled on Kubernetes' "[sig-network]
// Networking Granular Checks: Pods": on the local cluster (test/cluster) with
// real agents, the real CNI plugins and userspace WireGuard.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/cni/conflist"
	"github.com/wgmesh/wgmesh/podnet"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

const (
	podPort      = 8080
	hostPort     = 18080
	readyTimeout = 90 * time.Second
	meshTimeout  = 60 * time.Second
	// retryTimeout bounds retries once the mesh has converged, so that a
	// broken path fails in seconds rather than a minute per probe.
	retryTimeout = 10 * time.Second
	// natKeepalive is what a user sets on nodes behind NAT
	// (wgmesh.io/persistent-keepalive): they must send first.
	natKeepalive = "5"
)

// needCluster skips unless a local cluster can run here.
// needCluster skips where no local cluster can run, and fails (not skips)
// when WGMESH_BIN_DIR is set but a product binary is missing: make test
// builds them.
func needCluster(t *testing.T) {
	t.Helper()
	netns.SkipUnlessControlPlane(t)
	bin := os.Getenv("WGMESH_BIN_DIR")
	if bin == "" {
		skip.Unless(t, "end-to-end: WGMESH_BIN_DIR is unset (make test sets it)")
	}
	for _, p := range []string{"wgmesh-agent", "wgmesh-operator", "cni/bridge", "cni/host-local", "cni/portmap", "cni/loopback"} {
		if _, err := os.Stat(filepath.Join(bin, p)); err != nil {
			t.Fatalf("%s missing in WGMESH_BIN_DIR=%s (make build cni-plugins): %v", p, bin, err)
		}
	}
}

func podIPs(p *corev1.Pod) []string {
	var out []string
	for _, ip := range p.Status.PodIPs {
		out = append(out, ip.IP)
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		out = append(out, p.Status.PodIP)
	}
	return out
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func is4(ip string) bool { return netip.MustParseAddr(ip).Is4() }

// podCIDRs returns the node's spec.podCIDRs.
func podCIDRs(ctx context.Context, t *testing.T, c *cluster.Cluster, n *cluster.Node) []netip.Prefix {
	t.Helper()
	node := &corev1.Node{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, s := range node.Spec.PodCIDRs {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// gatewayFor is the node's bridge address of ip's family.
func gatewayFor(cidrs []netip.Prefix, ip string) string {
	for _, p := range cidrs {
		if p.Addr().Is4() == is4(ip) {
			gw, _ := podnet.Gateway(p)
			return gw.Addr().String()
		}
	}
	return ""
}

// internetEcho serves, in the "internet" namespace, UDP and TCP on port:
// every request is answered with the caller's address as seen there.
func internetEcho(t *testing.T, inet *netns.NS, port int) {
	t.Helper()
	var ul net.PacketConn
	var tl net.Listener
	if err := inet.Do(func() (err error) {
		if ul, err = net.ListenPacket("udp", ":"+strconv.Itoa(port)); err != nil {
			return err
		}
		tl, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close(); tl.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = ul.WriteTo([]byte(from.String()+"\n"), from)
		}
	}()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(c.RemoteAddr().String() + "\n"))
			c.Close()
		}
	}()
}

type podNetCase struct {
	name        string
	dualStack   bool
	underlayMTU int
}

func TestPodNetworking(t *testing.T) {
	needCluster(t)
	for _, tc := range []podNetCase{
		{name: "ipv4-mtu1500", underlayMTU: 1500},
		{name: "dualstack-mtu1400", dualStack: true, underlayMTU: 1400},
	} {
		t.Run(tc.name, func(t *testing.T) { runPodNetworking(t, tc) })
	}
}

func runPodNetworking(t *testing.T, tc podNetCase) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := startCluster(ctx, t, cluster.Options{Nodes: 3, NATNodes: 1, DualStack: tc.dualStack, UnderlayMTU: tc.underlayMTU})
	setNATKeepalive(ctx, t, c)

	wantMTU := tc.underlayMTU - 80
	cidrs := map[string][]netip.Prefix{}
	for _, n := range c.Nodes {
		if err := wait.Poll(ctx, readyTimeout, func() error {
			if got := podCIDRs(ctx, t, c, n); len(got) == 0 || tc.dualStack && len(got) != 2 {
				return fmt.Errorf("node %s has podCIDRs %v", n.Name, got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cidrs[n.Name] = podCIDRs(ctx, t, c, n)
		t.Run("conflist-"+n.Name, func(t *testing.T) {
			checkNodeCNI(ctx, t, n, cidrs[n.Name], wantMTU)
			checkNodeEvent(ctx, t, c, n.Name, "CNIConfigWritten")
		})
	}

	// Two pods per node.
	var pods []*corev1.Pod
	for _, n := range c.Nodes {
		for i := 1; i <= 2; i++ {
			if _, err := c.CreatePod(ctx, n, fmt.Sprintf("%s-p%d", strings.TrimPrefix(n.Name, "wgm-"), i), podPort); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range c.Nodes {
		for i := 1; i <= 2; i++ {
			p, err := c.WaitPodReady(ctx, "default", fmt.Sprintf("%s-p%d", strings.TrimPrefix(n.Name, "wgm-"), i), readyTimeout)
			if err != nil {
				t.Fatal(err)
			}
			ips := podIPs(p)
			if tc.dualStack && len(ips) != 2 || len(ips) == 0 {
				t.Fatalf("pod %s has IPs %v", p.Name, ips)
			}
			for _, ip := range ips {
				if !containsAddr(cidrs[n.Name], ip) {
					t.Errorf("pod %s IP %s is outside node %s's podCIDRs %v", p.Name, ip, n.Name, cidrs[n.Name])
				}
			}
			pods = append(pods, p)
		}
	}

	// Encryption proof: capture the underlays during the matrix.
	filter := "not arp and not icmp6 and not host " + cluster.APIServerIP
	if tc.dualStack {
		filter += " and not host " + cluster.APIServerIP6
	}
	stopCapture := captureUnderlays(ctx, t, c, filter)
	before := map[string][2]int64{}
	for _, n := range c.Nodes {
		rx, tx, err := wgTransfer(n)
		if err != nil {
			t.Fatalf("WireGuard counters of %s: %v", n.Name, err)
		}
		before[n.Name] = [2]int64{rx, tx}
	}

	if !meshConverged(ctx, t, c, pods) {
		t.FailNow()
	}
	t.Run("pod-to-pod", func(t *testing.T) { podMatrix(ctx, t, c, pods) })
	t.Run("node-to-pod", func(t *testing.T) { nodeToPod(ctx, t, c, pods, cidrs) })
	t.Run("large-payloads", func(t *testing.T) { largePayloads(ctx, t, c, pods) })

	under, nat := stopCapture()
	t.Run("encrypted", func(t *testing.T) {
		checkCapture(t, "underlay", under, tc.dualStack)
		checkCapture(t, "NAT cloud", nat, tc.dualStack)
		for _, n := range c.Nodes {
			rx, tx, err := wgTransfer(n)
			if err != nil {
				t.Fatal(err)
			}
			if b := before[n.Name]; rx <= b[0] || tx <= b[1] {
				t.Errorf("WireGuard transfer of %s did not grow: rx %d -> %d, tx %d -> %d", n.Name, b[0], rx, b[1], tx)
			}
		}
	})

	t.Run("egress", func(t *testing.T) { egressToInternet(ctx, t, c, pods) })
	t.Run("hostport", func(t *testing.T) { hostPortWorks(ctx, t, c) })
	t.Run("recreate", func(t *testing.T) { recreatePod(ctx, t, c, pods, cidrs) })
}

// captureUnderlays captures, with filter, everything crossing the underlay
// and the NAT cloud; the returned function stops both captures and returns
// their packets.
func captureUnderlays(ctx context.Context, t *testing.T, c *cluster.Cluster, filter string) func() (under, nat []netns.Packet) {
	t.Helper()
	// "any": frames a bridge forwards between its ports never pass the
	// bridge's own interface.
	capUnder, err := netns.StartCapture(ctx, c.Underlay, "any", filter)
	if err != nil {
		t.Fatal(err)
	}
	capNAT, err := netns.StartCapture(ctx, c.Router, "any", filter)
	if err != nil {
		t.Fatal(err)
	}
	return func() ([]netns.Packet, []netns.Packet) {
		t.Helper()
		under, err := capUnder.Stop()
		if err != nil {
			t.Fatal(err)
		}
		nat, err := capNAT.Stop()
		if err != nil {
			t.Fatal(err)
		}
		return under, nat
	}
}

// startCluster starts a local cluster for one test (WGM_KEEP_CLUSTER keeps
// its work directory), names the agents' logs when the test fails, and
// stops it when the test ends.
func startCluster(ctx context.Context, t *testing.T, o cluster.Options) *cluster.Cluster {
	t.Helper()
	o.KeepWorkDir, o.Log = os.Getenv("WGM_KEEP_CLUSTER") != "", testLog{t}
	if o.WireGuardMode == "" && !o.RealNodes {
		o.WireGuardMode = wireGuardMode(t)
	}
	c, err := cluster.Start(ctx, o)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("agent log of %s: %s", n.Name, n.AgentLog())
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
	})
	if len(c.Missing) > 0 {
		t.Fatalf("binaries missing: %v", c.Missing)
	}
	return c
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func containsAddr(ps []netip.Prefix, ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// checkNodeCNI: the agent wrote the conflist for the node's podCIDRs and
// MTU, and installed the plugins.
func checkNodeCNI(ctx context.Context, t *testing.T, n *cluster.Node, cidrs []netip.Prefix, mtu int) {
	path := n.HostPath(filepath.Join("/etc/cni/net.d", conflist.ConfFileName))
	want, err := conflist.Render(conflist.Options{PodCIDRs: prefixStrings(cidrs), MTU: mtu, PortMapBackend: conflist.PortMapNFTables})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.Poll(ctx, meshTimeout, func() error {
		got, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if string(got) != string(want) {
			return fmt.Errorf("%s:\n%s\nwant\n%s", path, got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		st, err := os.Stat(n.HostPath(filepath.Join("/opt/cni/bin", p)))
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("plugin %s in node %s: %v %v", p, n.Name, st, err)
		}
	}
}

// setNATKeepalive annotates every node behind NAT with the keepalive a user
// sets there, so that the NAT side keeps its mapping open.
func setNATKeepalive(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	t.Helper()
	for _, n := range c.Nodes {
		if !n.NATted {
			continue
		}
		node := &corev1.Node{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(node.DeepCopy())
		if node.Annotations == nil {
			node.Annotations = map[string]string{}
		}
		node.Annotations[wgv1.AnnotationPersistentKeepalive] = natKeepalive
		if err := c.Client.Patch(ctx, node, patch); err != nil {
			t.Fatal(err)
		}
	}
}

// checkNodeEvent: the agent reported what it changed on the node as a
// Normal Event regarding the Node.
func checkNodeEvent(ctx context.Context, t *testing.T, c *cluster.Cluster, node, reason string) {
	if err := wait.Poll(ctx, meshTimeout, func() error {
		var evs eventsv1.EventList
		if err := c.Client.List(ctx, &evs); err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Regarding.Kind == "Node" && ev.Regarding.Name == node && ev.Reason == reason && ev.Type == corev1.EventTypeNormal {
				return nil
			}
		}
		return fmt.Errorf("no Normal Event %s regarding Node %s", reason, node)
	}); err != nil {
		t.Error(err)
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// meshConverged waits until a pod on each node reaches a pod on every other
// node, and reports the node pairs that never connect.
func meshConverged(ctx context.Context, t *testing.T, c *cluster.Cluster, pods []*corev1.Pod) bool {
	// One pod per node (the first given) stands for its node: every pair
	// of nodes, on every address family, must carry a request before the
	// test measures anything. Pods can be Ready before every agent has
	// programmed every peer, and a node behind NAT is reachable only once
	// its handshake got through: its first initiation may reach a node
	// that has not added it yet, and WireGuard retries after 5 s.
	var reps []*corev1.Pod
	seen := map[string]bool{}
	for _, p := range pods {
		if !seen[p.Spec.NodeName] {
			seen[p.Spec.NodeName] = true
			reps = append(reps, p)
		}
	}
	ok := true
	start := time.Now()
	for _, from := range reps {
		for _, to := range reps {
			if from == to {
				continue
			}
			for _, dst := range podIPs(to) {
				if err := wait.Poll(ctx, meshTimeout, func() error {
					_, err := c.PodDial(ctx, from, "http", dst, podPort, "hostname")
					return err
				}); err != nil {
					t.Errorf("mesh never converged: %s (%s) cannot reach %s (%s) at %s: %v", from.Name, from.Spec.NodeName, to.Name, to.Spec.NodeName, dst, err)
					ok = false
				}
			}
		}
	}
	t.Logf("mesh converged: every pair of %d nodes carried a request after %s", len(reps), time.Since(start).Round(time.Millisecond))
	return ok
}

// podMatrix: every pod reaches every other pod over HTTP and UDP, on every
// address family, and the target sees the caller's own pod IP.
func podMatrix(ctx context.Context, t *testing.T, c *cluster.Cluster, pods []*corev1.Pod) {
	for _, from := range pods {
		for _, to := range pods {
			if from.Name == to.Name {
				continue
			}
			for i, dst := range podIPs(to) {
				src := podIPs(from)[i]
				for _, proto := range []string{"http", "udp"} {
					var got string
					err := wait.Poll(ctx, retryTimeout, func() error {
						var err error
						got, err = c.PodDial(ctx, from, proto, dst, podPort, "clientip")
						return err
					})
					if err != nil {
						t.Errorf("%s -> %s (%s %s): %v", from.Name, to.Name, proto, dst, err)
						continue
					}
					if hostOf(got) != src {
						t.Errorf("%s -> %s (%s %s): target saw %s, want the caller's pod IP %s", from.Name, to.Name, proto, dst, got, src)
					}
				}
			}
		}
	}
}

// nodeToPod: every node namespace reaches every pod over HTTP and UDP; the
// pod sees the calling node's bridge address (the route's src).
func nodeToPod(ctx context.Context, t *testing.T, c *cluster.Cluster, pods []*corev1.Pod, cidrs map[string][]netip.Prefix) {
	for _, n := range c.Nodes {
		for _, p := range pods {
			for _, ip := range podIPs(p) {
				for _, proto := range []string{"http", "udp"} {
					req := "clientip"
					if proto == "http" {
						req = "/clientip"
					}
					var got string
					err := wait.Poll(ctx, retryTimeout, func() error {
						var err error
						got, err = n.Dial(ctx, proto, net.JoinHostPort(ip, strconv.Itoa(podPort)), req)
						return err
					})
					if err != nil {
						t.Errorf("node %s -> pod %s (%s %s): %v", n.Name, p.Name, proto, ip, err)
						continue
					}
					if want := gatewayFor(cidrs[n.Name], ip); hostOf(got) != want {
						t.Errorf("node %s -> pod %s (%s %s): pod saw %s, want the node's bridge address %s", n.Name, p.Name, proto, ip, got, want)
					}
				}
			}
		}
	}
}

// largePayloads: a 2,000-byte UDP datagram and a 1 MB HTTP body between pods
// on different nodes (one of them behind the NAT).
func largePayloads(ctx context.Context, t *testing.T, c *cluster.Cluster, pods []*corev1.Pod) {
	from := pods[0] // node-1
	big := strings.Repeat("0123456789", 200)
	for _, to := range []*corev1.Pod{pods[2], pods[len(pods)-1]} { // node-2, nat-1
		for _, dst := range podIPs(to) {
			got, err := c.PodDial(ctx, from, "udp", dst, podPort, "echo "+big)
			if err != nil || got != big {
				t.Errorf("2000-byte UDP %s -> %s (%s): %d bytes back, %v", from.Name, to.Name, dst, len(got), err)
			}
			got, err = c.PodDial(ctx, from, "http", dst, podPort, "/bytes?n=1048576")
			if err != nil || len(got) != 1<<20 || strings.Trim(got, "x") != "" {
				t.Errorf("1 MB HTTP body %s -> %s (%s): %d bytes, %v", from.Name, to.Name, dst, len(got), err)
			}
		}
	}
}

// checkCapture: nothing with a pod address crossed the underlay, and
// everything between nodes was WireGuard (UDP to or from port 51820).
// IPv6 link-local control traffic (neighbour discovery, multicast listener
// reports) is the links' own and is skipped; API server traffic is
// filtered out by the capture. Without dualStack any other IPv6 packet is
// an error too.
func checkCapture(t *testing.T, where string, pkts []netns.Packet, dualStack bool) {
	podRanges := []netip.Prefix{netip.MustParsePrefix(cluster.PodCIDR), netip.MustParsePrefix(cluster.PodCIDR6)}
	linkLocal := []netip.Prefix{netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("ff00::/8")}
	wg := 0
	for _, p := range pkts {
		if p.Family != "IP" && p.Family != "IP6" {
			t.Errorf("%s: unexpected frame %q", where, p.Line)
			continue
		}
		if p.Family == "IP6" && (containsAddr(linkLocal, p.Src) || containsAddr(linkLocal, p.Dst)) {
			continue
		}
		if p.Family == "IP6" && !dualStack {
			t.Errorf("%s: IPv6 packet in an IPv4-only cluster: %q", where, p.Line)
			continue
		}
		if containsAddr(podRanges, p.Src) || containsAddr(podRanges, p.Dst) {
			t.Errorf("%s: packet with a pod address on the underlay: %q", where, p.Line)
			continue
		}
		if p.Proto != "UDP" || (p.SrcPort != cluster.WireGuardPort && p.DstPort != cluster.WireGuardPort) {
			t.Errorf("%s: non-WireGuard packet between nodes: %q", where, p.Line)
			continue
		}
		wg++
	}
	if wg == 0 {
		t.Errorf("%s: captured no WireGuard packet during the matrix (capture broken?)", where)
	}
	t.Logf("%s: %d packets, all WireGuard", where, wg)
}

// egressToInternet: pod traffic to the "internet" host arrives from the
// node's address (through the NAT router: the router's outside address).
func egressToInternet(ctx context.Context, t *testing.T, c *cluster.Cluster, pods []*corev1.Pod) {
	const port = 18099
	internetEcho(t, c.Internet, port)
	for _, n := range c.Nodes {
		var from *corev1.Pod
		for _, p := range pods {
			if p.Spec.NodeName == n.Name {
				from = p
				break
			}
		}
		targets := map[string]string{cluster.InternetIP: n.UnderlayIP}
		if n.NATted {
			targets[cluster.InternetIP] = cluster.RouterOutside
		}
		if n.UnderlayIP6 != "" {
			targets[cluster.InternetIP6] = n.UnderlayIP6
			if n.NATted {
				targets[cluster.InternetIP6] = cluster.RouterOutside6
			}
		}
		for dst, want := range targets {
			for _, proto := range []string{"udp", "tcp"} {
				got, err := c.PodDial(ctx, from, proto, dst, port, "clientip")
				if err != nil {
					t.Errorf("%s (%s) -> internet %s %s: %v", from.Name, n.Name, proto, dst, err)
					continue
				}
				if hostOf(got) != want {
					t.Errorf("%s (%s) -> internet %s %s: arrived from %s, want %s", from.Name, n.Name, proto, dst, got, want)
				}
			}
		}
	}
}

// hostPortWorks: a pod with a hostPort on node-1 is reached at node-1's
// address from another node.
func hostPortWorks(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	n1, n2 := c.Nodes[0], c.Nodes[1]
	if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: "hostport", Node: n1, Ports: []int32{podPort}, HostPort: hostPort}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitPodReady(ctx, "default", "hostport", readyTimeout); err != nil {
		t.Fatal(err)
	}
	var got string
	err := wait.Poll(ctx, meshTimeout, func() error {
		var err error
		got, err = n2.Dial(ctx, "http", net.JoinHostPort(n1.UnderlayIP, strconv.Itoa(hostPort)), "/hostname")
		return err
	})
	if err != nil || got != "hostport" {
		t.Errorf("hostPort %s:%d from %s: %q, %v", n1.UnderlayIP, hostPort, n2.Name, got, err)
	}
}

// recreatePod: a deleted pod's address is freed in host-local's store, and a
// new pod of the same name gets an address again and is reachable.
func recreatePod(ctx context.Context, t *testing.T, c *cluster.Cluster, pods []*corev1.Pod, cidrs map[string][]netip.Prefix) {
	victim := pods[3] // second pod on node-2
	node := c.Node(victim.Spec.NodeName)
	oldIPs := podIPs(victim)
	store := node.HostPath("/var/lib/cni/networks/" + conflist.NetworkName)
	for _, ip := range oldIPs {
		if _, err := os.Stat(filepath.Join(store, ip)); err != nil {
			t.Fatalf("host-local has no record of %s's %s before delete: %v", victim.Name, ip, err)
		}
	}
	bridgeMAC := func() string {
		out, err := node.Exec(ctx, "cat", "/sys/class/net/wgmesh-br0/address")
		if err != nil {
			t.Fatalf("bridge address on %s: %v", node.Name, err)
		}
		return strings.TrimSpace(string(out))
	}
	macBefore := bridgeMAC()
	if err := c.DeletePod(ctx, "default", victim.Name, readyTimeout); err != nil {
		t.Fatal(err)
	}
	for _, ip := range oldIPs {
		if err := wait.Poll(ctx, 30*time.Second, func() error {
			if _, err := os.Stat(filepath.Join(store, ip)); err == nil {
				return fmt.Errorf("%s still allocated in %s after the pod was deleted", ip, store)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	if _, err := c.CreatePod(ctx, node, victim.Name, podPort); err != nil {
		t.Fatal(err)
	}
	p, err := c.WaitPodReady(ctx, "default", victim.Name, readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	// Pods keep their neighbour entry for the gateway: the bridge's address
	// must not follow its ports.
	if after := bridgeMAC(); after != macBefore {
		t.Errorf("bridge wgmesh-br0 on %s changed its address from %s to %s as pods came and went", node.Name, macBefore, after)
	}
	for _, ip := range podIPs(p) {
		if !containsAddr(cidrs[node.Name], ip) {
			t.Errorf("recreated pod IP %s outside %v", ip, cidrs[node.Name])
		}
		// Poll like a client that retries, as Kubernetes' networking e2e does.
		// This once caught the pod bridge changing its MAC address as pods came
		// and went (IPv6 pods then kept a stale gateway entry for 30 s and
		// more): the agent now gives the bridge a fixed address.
		if err := wait.Poll(ctx, 30*time.Second, func() error {
			got, err := c.PodDial(ctx, pods[0], "http", ip, podPort, "hostname")
			if err != nil || got != victim.Name {
				return fmt.Errorf("recreated pod %s (%s) from %s: %q, %v", victim.Name, ip, pods[0].Name, got, err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
}
