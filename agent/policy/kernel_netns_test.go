package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestFailClosedInTheKernel: the rendered rules in a real kernel. A node
// namespace routes between a pod of its pod CIDR (198.19.1.10) and a
// remote pod (198.19.2.10). Unprogrammed, the local pod's packets are
// dropped both ways by the fail-closed rules (their counters prove it,
// and nothing arrives), while the node itself reaches it; programmed, it
// exchanges packets both ways.
func TestFailClosedInTheKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and network namespaces; skipped with -short")
	}
	if os.Geteuid() != 0 {
		skip.Unless(t, "needs root to create network namespaces")
	}
	node, local, remote := netns.NewForTest(t, "wgm-fc-node"), netns.NewForTest(t, "wgm-fc-local"), netns.NewForTest(t, "wgm-fc-remote")
	var (
		localIP, remoteIP = netip.MustParseAddr("198.19.1.10"), netip.MustParseAddr("198.19.2.10")
		gwLocal           = netip.MustParseAddr("198.19.1.1")
	)
	for _, l := range []struct {
		pod              *netns.NS
		hostIf, addr, gw string
	}{{local, "wgmfc-l", "198.19.1.10/24", "198.19.1.1"}, {remote, "wgmfc-r", "198.19.2.10/24", "198.19.2.1"}} {
		if err := netns.Veth(node, l.hostIf, l.pod, "eth0", 0); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddAddr(node, l.hostIf, l.gw+"/24"); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddAddr(l.pod, "eth0", l.addr); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddRoute(l.pod, "0.0.0.0/0", l.gw, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := node.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(node.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k := &nft.Kernel{Part: Part, NetNSFd: int(f.Fd())}
	n := Node{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}}
	ix := netpol.NewIndex()
	program := func() {
		t.Helper()
		for _, fam := range nft.Families {
			if err := k.EnsureSkeleton(fam); err != nil {
				t.Fatal(err)
			}
			if _, err := nft.Sync(k, fam, Render(ix, n, fam)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// dropped counts the fail-closed rule's packets in chain.
	dropped := func(chain string) uint64 {
		t.Helper()
		rs := Render(ix, n, nft.IPv4)
		cs, err := k.Counters(nft.IPv4, chain)
		if err != nil {
			t.Fatal(err)
		}
		var sum uint64
		for _, rc := range cs {
			if r := rs.Chains[chain][rc.Index]; r.NotSaddrSet == SetProgrammed || r.NotDaddrSet == SetProgrammed {
				sum += rc.Packets
			}
		}
		return sum
	}
	program()

	// Unprogrammed: each way, the packet is counted by the fail-closed
	// drop (the barrier), and then nothing has arrived.
	for _, c := range []struct {
		what     string
		from, to *netns.NS
		dst      netip.Addr
		chain    string
	}{
		{"the new pod -> a remote pod", local, remote, remoteIP, ChainEgress},
		{"a remote pod -> the new pod", remote, local, localIP, ChainIngress},
	} {
		before := dropped(c.chain)
		err := udpOnce(c.from, c.to, c.dst, func() error {
			if got := dropped(c.chain); got <= before {
				return fmt.Errorf("%s: %d packets dropped, still %d", c.chain, got, before)
			}
			return nil
		})
		if !errors.Is(err, errNotArrived) {
			t.Errorf("%s, unprogrammed: %v, want dropped by the fail-closed rule and not arrived", c.what, err)
		}
	}
	// The node reaches it all the same (output, not forward).
	if err := udpOnce(node, local, localIP, nil); err != nil {
		t.Errorf("the node -> the new pod (from %s): %v, want delivered", gwLocal, err)
	}

	// Programmed (no policy selects it): both ways.
	ix.SetPod(&netpol.Pod{Namespace: "x", Name: "new", UID: "u1", Node: "n1", Phase: corev1.PodPending, IPs: []netip.Addr{localIP}})
	program()
	for _, c := range []struct {
		what     string
		from, to *netns.NS
		dst      netip.Addr
	}{{"the new pod -> a remote pod", local, remote, remoteIP}, {"a remote pod -> the new pod", remote, local, localIP}} {
		if err := udpOnce(c.from, c.to, c.dst, nil); err != nil {
			t.Errorf("%s, programmed: %v, want delivered", c.what, err)
		}
	}
}

var errNotArrived = errors.New("not arrived")

// udpOnce sends one UDP datagram from one namespace to dst in another.
// With dropped nil it waits (up to 5 s) for it to arrive; else it waits
// until dropped says the kernel dropped it, then reports errNotArrived
// when nothing is in the receiver's queue.
func udpOnce(from, to *netns.NS, dst netip.Addr, dropped func() error) error {
	var conn *net.UDPConn
	if err := to.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: dst.AsSlice(), Port: 7200})
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()
	if err := from.Do(func() error {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: dst.AsSlice(), Port: 7200})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	}); err != nil {
		return err
	}
	buf := make([]byte, 64)
	if dropped == nil {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := conn.Read(buf)
		return err
	}
	if err := wait.Poll(context.Background(), 5*time.Second, dropped); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now()) // the queue as it is now: the packet is gone
	if _, err := conn.Read(buf); err == nil {
		return errors.New("arrived")
	}
	return errNotArrived
}

// TestPluginSeesTheFailClosedRule: the CNI plugin's fallback check
// (guard.PolicyInstalled, which lets ADD succeed without an answer from the
// agent) passes on the real render and fails on chains without the
// fail-closed drop: a render without the node's pod CIDRs, as an older
// agent's chains would be.
func TestPluginSeesTheFailClosedRule(t *testing.T) {
	if os.Geteuid() != 0 {
		skip.Unless(t, "needs root to create network namespaces")
	}
	ns := netns.NewForTest(t, "wgm-fc-plugin")
	k := &nft.Kernel{Part: Part, NetNSFd: netns.FDForTest(t, ns)}
	defer k.Close()
	program := func(n Node) {
		t.Helper()
		if err := k.EnsureSkeleton(nft.IPv4); err != nil {
			t.Fatal(err)
		}
		if _, err := nft.Sync(k, nft.IPv4, Render(netpol.NewIndex(), n, nft.IPv4)); err != nil {
			t.Fatal(err)
		}
	}
	installed := func() error {
		return ns.Do(func() error { return guard.PolicyInstalled([]string{"ipv4"}) })
	}
	if err := installed(); err == nil {
		t.Fatal("PolicyInstalled passes with no table")
	}
	program(Node{Name: "n1"}) // no pod CIDRs: chains, but nothing fails closed
	if err := installed(); err == nil || !strings.Contains(err.Error(), "fail-closed rule") {
		t.Fatalf("PolicyInstalled on chains without the drop: %v, want the missing fail-closed rule named", err)
	}
	program(Node{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}})
	if err := installed(); err != nil {
		t.Fatalf("PolicyInstalled on the real render: %v", err)
	}
}
