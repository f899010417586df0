package egress

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wgmesh/wgmesh/agent/leakguard"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
)

func mp(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ma(s string) netip.Addr   { return netip.MustParseAddr(s) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// sourceSeenBy sends a UDP datagram from `from` to dst and returns the source
// address the listener in `to` saw.
func sourceSeenBy(t *testing.T, from, to *netns.NS, dst string) string {
	t.Helper()
	src, ok := send(t, from, to, dst, 20)
	if !ok {
		t.Fatalf("no datagram from %s reached %s in %s", from, dst, to)
	}
	return src
}

// reaches reports whether a UDP datagram from `from` to dst arrives in `to`.
func reaches(t *testing.T, from, to *netns.NS, dst string) bool {
	t.Helper()
	_, ok := send(t, from, to, dst, 4)
	return ok
}

// send sends up to tries datagrams from `from` to dst, 250 ms apart, until
// the listener in `to` receives one, and returns its source address.
func send(t *testing.T, from, to *netns.NS, dst string, tries int) (string, bool) {
	t.Helper()
	var srv net.PacketConn
	must(t, to.Do(func() (err error) {
		srv, err = net.ListenPacket("udp", net.JoinHostPort(dst, "0"))
		return err
	}))
	defer srv.Close()
	port := srv.LocalAddr().(*net.UDPAddr).Port
	var cli net.Conn
	must(t, from.Do(func() (err error) {
		cli, err = net.Dial("udp", net.JoinHostPort(dst, fmt.Sprint(port)))
		return err
	}))
	defer cli.Close()
	buf := make([]byte, 64)
	for range tries {
		_, _ = cli.Write([]byte("hello"))
		_ = srv.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		if _, addr, err := srv.ReadFrom(buf); err == nil {
			return addr.(*net.UDPAddr).IP.String(), true
		}
	}
	return "", false
}

// TestEgressMasqueradeNetns: a pod namespace behind a node namespace sends to
// an "internet" namespace and to a pod of another range; only the first is
// masqueraded to the node address. Real nftables in throwaway namespaces.
func TestEgressMasqueradeNetns(t *testing.T) {
	netns.SkipUnlessRoot(t)
	node := netns.NewForTest(t, "wgm-egr-node")
	pod := netns.NewForTest(t, "wgm-egr-pod")
	peer := netns.NewForTest(t, "wgm-egr-peer") // a pod of another node's range
	inet := netns.NewForTest(t, "wgm-egr-inet")

	for _, ns := range []*netns.NS{node, pod, peer, inet} {
		must(t, ns.Sysctl("net.ipv6.conf.all.accept_dad", "0"))
	}
	must(t, node.Sysctl("net.ipv4.ip_forward", "1"))
	must(t, node.Sysctl("net.ipv6.conf.all.forwarding", "1"))
	must(t, netns.Veth(node, "eth0", inet, "eth0", 1500))
	// Named like the real links: pods behind the bridge, other nodes' pods
	// behind the tunnel.
	must(t, netns.Veth(node, "wgmesh-br0", pod, "eth0", 1500))
	must(t, netns.Veth(node, "wgmesh0", peer, "eth0", 1500))
	for _, a := range []struct {
		ns   *netns.NS
		link string
		cidr string
	}{
		{node, "eth0", "198.18.0.11/24"}, {node, "eth0", "2001:db8::11/64"},
		{inet, "eth0", "198.18.0.250/24"}, {inet, "eth0", "2001:db8::250/64"},
		{node, "wgmesh-br0", "198.19.1.1/24"}, {node, "wgmesh-br0", "2001:db8:100:1::1/64"},
		{pod, "eth0", "198.19.1.2/24"}, {pod, "eth0", "2001:db8:100:1::2/64"},
		{node, "wgmesh0", "198.19.2.1/24"}, {node, "wgmesh0", "2001:db8:100:2::1/64"},
		{peer, "eth0", "198.19.2.2/24"}, {peer, "eth0", "2001:db8:100:2::2/64"},
	} {
		must(t, netns.AddAddr(a.ns, a.link, a.cidr))
	}
	must(t, netns.AddRoute(pod, "default", "198.19.1.1", ""))
	must(t, netns.AddRoute(pod, "default6", "2001:db8:100:1::1", ""))
	must(t, netns.AddRoute(peer, "default", "198.19.2.1", ""))
	must(t, netns.AddRoute(peer, "default6", "2001:db8:100:2::1", ""))
	// The internet has no route back to pod ranges: only masqueraded traffic
	// works both ways. It also holds 198.19.3.3, a cluster pod address whose
	// node has no route yet: without the leak guard the node's default route
	// would carry pod traffic for it onto the underlay.
	must(t, netns.AddAddr(inet, "eth0", "198.19.3.3/32"))
	// And 198.18.200.1, in an external peer's allowedIPs (a laptop): with
	// wgmesh0 deleted by hand the default route carried pod traffic for it
	// in clear, with the pod's own address.
	must(t, netns.AddAddr(inet, "eth0", "198.18.200.1/32"))
	must(t, netns.AddRoute(node, "default", "198.18.0.250", ""))
	if !reaches(t, pod, inet, "198.19.3.3") {
		t.Fatal("sanity: without the guard, pod traffic to an unrouted pod range should leak to the underlay")
	}
	if !reaches(t, pod, inet, "198.18.200.1") {
		t.Fatal("sanity: without the guard, pod traffic to an external peer's range should leak to the underlay")
	}

	f, err := os.Open(node.Path())
	must(t, err)
	defer f.Close()
	metrics := NewMetrics(nil)
	cluster := []netip.Prefix{mp("198.19.0.0/16"), mp("2001:db8:100::/56")}
	services := []netip.Prefix{mp("198.18.128.0/20"), mp("2001:db8:200::/112")}
	m := NewManager(ManagerOptions{
		ClusterCIDRs: cluster,
		ServiceCIDRs: services,
		NFT:          &nft.Kernel{Part: Part, NetNSFd: int(f.Fd())},
		ProcSys:      t.TempDir(), // the node's real /proc/sys is per-netns; checked separately
		Log:          logr.Discard(),
		Metrics:      metrics,
	})
	g := leakguard.New(leakguard.Options{ClusterCIDRs: cluster, ServiceCIDRs: services},
		&nft.Kernel{Part: leakguard.Part, NetNSFd: int(f.Fd())}, logr.Discard(), nil)
	// Service NAT's chain in the same table must survive everything egress does.
	conn, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	must(t, err)
	tbl := conn.AddTable(&nftables.Table{Name: nft.Table, Family: nftables.TableFamilyIPv4})
	conn.AddChain(&nftables.Chain{Name: "services", Table: tbl})
	must(t, conn.Flush())

	ctx := context.Background()
	pods := []netip.Prefix{mp("198.19.1.0/24"), mp("2001:db8:100:1::/64")}
	apply := func(peerRanges ...netip.Prefix) {
		t.Helper()
		must(t, g.Apply(ctx, peerRanges, nil))
		must(t, m.Apply(ctx, pods))
	}
	apply()

	check := func(stage string) {
		t.Helper()
		if reaches(t, pod, inet, "198.19.3.3") {
			t.Errorf("%s: pod traffic to an unrouted cluster pod address left through the underlay", stage)
		}
		if reaches(t, node, inet, "198.19.3.3") {
			t.Errorf("%s: node traffic to an unrouted cluster pod address left through the underlay", stage)
		}
		if got := sourceSeenBy(t, pod, inet, "198.18.0.250"); got != "198.18.0.11" {
			t.Errorf("%s: internet saw pod traffic from %s, want the node address 198.18.0.11", stage, got)
		}
		if got := sourceSeenBy(t, pod, inet, "2001:db8::250"); got != "2001:db8::11" {
			t.Errorf("%s: internet saw IPv6 pod traffic from %s, want 2001:db8::11", stage, got)
		}
		if got := sourceSeenBy(t, pod, peer, "198.19.2.2"); got != "198.19.1.2" {
			t.Errorf("%s: pod-to-pod traffic arrived from %s, want the pod's own 198.19.1.2", stage, got)
		}
		if got := sourceSeenBy(t, pod, peer, "2001:db8:100:2::2"); got != "2001:db8:100:1::2" {
			t.Errorf("%s: IPv6 pod-to-pod traffic arrived from %s, want 2001:db8:100:1::2", stage, got)
		}
		if got := sourceSeenBy(t, node, inet, "198.18.0.250"); got != "198.18.0.11" {
			t.Errorf("%s: node traffic from %s", stage, got)
		}
	}
	check("after apply")

	// An external peer joins the mesh: its range travels only encrypted.
	external := mp("198.18.200.0/24")
	apply(external)
	if reaches(t, pod, inet, "198.18.200.1") || reaches(t, node, inet, "198.18.200.1") {
		t.Error("with the external peer in the mesh, traffic to its range left through the underlay")
	}
	check("with an external peer")
	// It leaves: its range is no longer held back.
	apply()
	if !reaches(t, pod, inet, "198.18.200.1") {
		t.Error("the external peer left the mesh, yet its range is still dropped")
	}

	// Idempotent: nothing rewritten.
	before := testutil.ToFloat64(metrics.Syncs.WithLabelValues("ip"))
	apply()
	if after := testutil.ToFloat64(metrics.Syncs.WithLabelValues("ip")); after != before {
		t.Errorf("unchanged state rewrote the chain (%v -> %v)", before, after)
	}

	// Drift: a rule deleted by hand comes back.
	rules, err := conn.GetRules(tbl, &nftables.Chain{Name: ChainName, Table: tbl})
	must(t, err)
	must(t, conn.DelRule(rules[len(rules)-1]))
	must(t, conn.Flush())
	if got := sourceSeenBy(t, pod, inet, "198.18.0.250"); got != "198.19.1.2" {
		t.Fatalf("with the masquerade rule deleted the internet should see the pod address, saw %s", got)
	}
	apply()
	if after := testutil.ToFloat64(metrics.Syncs.WithLabelValues("ip")); after != before+1 {
		t.Errorf("drift not repaired: syncs %v -> %v", before, after)
	}
	check("after drift repair")

	// The whole table deleted by hand: recreated.
	conn.DelTable(&nftables.Table{Name: nft.Table, Family: nftables.TableFamilyIPv6})
	must(t, conn.Flush())
	apply()
	check("after table deleted")

	// Readable for operators (the nft binary is only used by this test).
	if out, err := node.Exec(ctx, "nft", "list", "table", "ip", nft.Table); err == nil {
		for _, want := range []string{`oifname "wgmesh0"`, "ip daddr 198.19.0.0/16", "ip daddr 198.18.128.0/20", "ip saddr 198.19.1.0/24", "masquerade", "chain services",
			"chain guard-forward", "chain guard-output", "drop"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("nft list table ip wgmesh lacks %q:\n%s", want, out)
			}
		}
	}

	// The other parts' chains are never touched.
	if _, err := conn.GetRules(tbl, &nftables.Chain{Name: "services", Table: tbl}); err != nil {
		t.Errorf("the service NAT's chain is gone after the egress and guard writes: %v", err)
	}
	// Uninstall: the table's one owner deletes it, in every family.
	must(t, nft.DeleteTable(int(f.Fd())))
	tables, err := conn.ListTables()
	must(t, err)
	for _, tb := range tables {
		if tb.Name == nft.Table {
			t.Errorf("table %s left in family %v after DeleteTable", nft.Table, tb.Family)
		}
	}
	if got := sourceSeenBy(t, pod, peer, "198.19.2.2"); got != "198.19.1.2" {
		t.Errorf("after cleanup: %s", got)
	}
}

// TestBridgeNetfilterInNetns checks the real per-namespace sysctls.
func TestBridgeNetfilterInNetns(t *testing.T) {
	netns.SkipUnlessRoot(t)
	node := netns.NewForTest(t, "wgm-egr-brnf")
	if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
		skip.Unless(t, fmt.Sprintf("br_netfilter is not available on this host (%v); Ensure reports it as a condition", err))
	}
	var st BridgeNFStatus
	var err error
	must(t, node.Do(func() error {
		// /proc/sys/net follows the calling thread's network namespace.
		for _, k := range BridgeNFSysctls {
			if werr := os.WriteFile("/proc/sys/"+k, []byte("0"), 0o644); werr != nil {
				return werr
			}
		}
		st, err = BridgeNetfilter{}.Ensure()
		return nil
	}))
	if err != nil || !st.Enabled || len(st.Changed) != 2 {
		t.Fatalf("status %+v, err %v", st, err)
	}
	for _, k := range []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"} {
		out, err := node.Exec(context.Background(), "sysctl", "-n", k)
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("%s = %q %v", k, out, err)
		}
	}
}
