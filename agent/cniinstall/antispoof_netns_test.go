package cniinstall

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/wgmesh/wgmesh/cni/antispoof"
	"github.com/wgmesh/wgmesh/cni/conflist"
	"github.com/wgmesh/wgmesh/test/frame"
	"github.com/wgmesh/wgmesh/test/netns"
)

// Pod addresses of the anti-spoofing tests' node.
var asPodCIDRs = []string{"198.19.5.0/24", "2001:db8:100:5::/64"}

// withoutAntiSpoof rewrites the rig's conflist without its antiSpoof entry:
// the node as it was before anti-spoofing (and the control of the tests).
func (r *cniRig) withoutAntiSpoof(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(r.mgr.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	var kept []any
	for _, p := range list["plugins"].([]any) {
		if p.(map[string]any)["antiSpoof"] != true {
			kept = append(kept, p)
		}
	}
	if len(kept) != len(list["plugins"].([]any))-1 {
		t.Fatalf("conflist has no antiSpoof entry to remove:\n%s", b)
	}
	list["plugins"] = kept
	if b, err = json.Marshal(list); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.mgr.ConfigPath(), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// asPod is a pod on the node's bridge, networked by the conflist.
type asPod struct {
	ns   *netns.NS
	id   string
	port antispoof.Port // host veth, MAC, addresses (from the ADD result)
	v4   netip.Addr
	v6   netip.Addr
}

func (r *cniRig) addPod(ctx context.Context, t *testing.T, name, id string) asPod {
	t.Helper()
	p := asPod{ns: netns.NewForTest(t, name), id: id}
	res, err := r.add(ctx, p.ns, id, nil)
	if err != nil {
		t.Fatalf("ADD %s: %v", id, err)
	}
	if p.port, err = antispoof.PortFromResult(res, "eth0", conflist.BridgeName); err != nil {
		t.Fatal(err)
	}
	for _, ip := range p.port.IPs {
		if ip.Is4() {
			p.v4 = ip
		} else {
			p.v6 = ip
		}
	}
	return p
}

// dropCount sums the packets counted by the anti-spoofing chain's drop
// rules in the node (0 without the table).
func dropCount(t *testing.T, node *netns.NS) uint64 {
	t.Helper()
	f, err := os.Open(node.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Name: antispoof.Table, Family: nftables.TableFamilyBridge}
	rules, err := c.GetRules(tb, &nftables.Chain{Name: antispoof.Chain, Table: tb})
	if err != nil {
		return 0
	}
	var n uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				n += c.Packets
			}
		}
	}
	return n
}

// spoofCase is a frame pod A sends to (or past) pod B.
type spoofCase struct {
	name  string
	frame []byte
	spoof bool // not A's own identity: must not reach B when protected
}

func spoofCases(a, b asPod, gw4, gw6 netip.Addr) []spoofCase {
	forgedMAC := net.HardwareAddr{0x02, 0x00, 0x00, 0x5e, 0xaa, 0x99}
	toB := frame.Ether{Dst: b.port.MAC, Src: a.port.MAC}
	forged := frame.Ether{Dst: b.port.MAC, Src: forgedMAC}
	bcast := frame.Ether{Dst: frame.Broadcast, Src: a.port.MAC}
	llA := netip.MustParseAddr("fe80::a")
	llB := netip.MustParseAddr("fe80::b")
	msg := []byte("wgmesh anti-spoofing test")
	return []spoofCase{
		{"IPv4 own source", frame.UDP(toB, a.v4, b.v4, 7001, 7002, msg), false},
		{"IPv4 with B's source", frame.UDP(toB, b.v4, b.v4, 7001, 7002, msg), true},
		{"IPv4 with the gateway's source", frame.UDP(toB, gw4, b.v4, 7001, 7002, msg), true},
		{"IPv4 own source, forged MAC", frame.UDP(forged, a.v4, b.v4, 7001, 7002, msg), true},
		{"IPv6 own source", frame.UDP(toB, a.v6, b.v6, 7001, 7002, msg), false},
		{"IPv6 with B's source", frame.UDP(toB, b.v6, b.v6, 7001, 7002, msg), true},
		{"IPv6 own source, forged MAC", frame.UDP(forged, a.v6, b.v6, 7001, 7002, msg), true},
		{"IPv6 link-local, own MAC", frame.UDP(toB, llA, llB, 7001, 7002, msg), false},
		{"IPv6 link-local, forged MAC", frame.UDP(forged, llA, llB, 7001, 7002, msg), true},
		{"IPv6 unspecified (DAD), own MAC", frame.ICMPv6(bcast, netip.IPv6Unspecified(), netip.MustParseAddr("ff02::1:ff00:99"), frame.NeighborSolicit, 0, append(make([]byte, 4), llA.AsSlice()...)), false},
		{"ARP reply, own", frame.ARP(toB, frame.ARPReply, a.port.MAC, a.v4, b.port.MAC, b.v4), false},
		{"ARP reply claiming the gateway", frame.ARP(toB, frame.ARPReply, a.port.MAC, gw4, b.port.MAC, b.v4), true},
		{"gratuitous ARP claiming B's address", frame.ARP(bcast, frame.ARPReply, a.port.MAC, b.v4, frame.Broadcast, b.v4), true},
		{"ARP with another sender MAC", frame.ARP(toB, frame.ARPReply, forgedMAC, a.v4, b.port.MAC, b.v4), true},
		{"NA for own address", frame.NA(toB, llA, llB, a.v6, a.port.MAC), false},
		{"NA for the gateway's address", frame.NA(toB, llA, llB, gw6, a.port.MAC), true},
		{"router advertisement", frame.RA(bcast, llA), true},
	}
}

// delivered sends f from A and then a barrier frame (A's own traffic, sent
// from the same CPU, so handled after f) and reports whether f reached B's
// interface before the barrier did.
func delivered(t *testing.T, from, to *netns.PacketSocket, f, barrier []byte) bool {
	t.Helper()
	if err := from.Send(f, barrier); err != nil {
		t.Fatal(err)
	}
	seen := false
	for {
		got, err := to.Recv(5 * time.Second)
		if err != nil {
			t.Fatalf("the barrier frame (A's own traffic) did not arrive: %v", err)
		}
		if bytes.HasPrefix(got, barrier) {
			return seen
		}
		seen = seen || bytes.HasPrefix(got, f)
	}
}

// TestCNIAntiSpoof runs the real conflist (wgmesh-guard, bridge,
// wgmesh-guard antiSpoof, portmap) for pods A and B on one node and has A
// forge frames (B's or the gateway's address, another MAC, ARP and NDP
// answers for others' addresses, router advertisements): none reaches B,
// each is counted by the chain's drop rules, A's own traffic does. The
// control runs the same frames on a node whose conflist lacks the
// antiSpoof entry: there every frame reaches B, so the protection is the
// entry's, not the harness's. Then CHECK sees a missing element, DEL
// removes the pod's elements, and a pod networked before anti-spoofing
// keeps its network.
func TestCNIAntiSpoof(t *testing.T) {
	for _, protected := range []bool{true, false} {
		name := map[bool]string{true: "protected", false: "control-without-antiSpoof"}[protected]
		t.Run(name, func(t *testing.T) { testAntiSpoof(t, protected) })
	}
}

func testAntiSpoof(t *testing.T, protected bool) {
	ctx := context.Background()
	tag := map[bool]string{true: "p", false: "c"}[protected]
	r := newRig(t, "wgm-as-node-"+tag)
	if err := r.mgr.Apply(ctx, State{PodCIDRs: asPodCIDRs, MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	installGuard(t, r.node)
	gw4, gw6 := netip.MustParseAddr("198.19.5.1"), netip.MustParseAddr("2001:db8:100:5::1")

	// Pod C: networked before anti-spoofing reached the node.
	r.withoutAntiSpoof(t)
	c := r.addPod(ctx, t, "wgm-as-c-"+tag, "as-c-"+tag)
	if protected {
		if err := r.mgr.Apply(ctx, State{PodCIDRs: asPodCIDRs, MTU: 1420}); err != nil {
			t.Fatal(err)
		}
	}
	a := r.addPod(ctx, t, "wgm-as-a-"+tag, "as-a-"+tag)
	b := r.addPod(ctx, t, "wgm-as-b-"+tag, "as-b-"+tag)

	fromA, err := netns.OpenPacketSocket(a.ns, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer fromA.Close()
	fromC, err := netns.OpenPacketSocket(c.ns, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer fromC.Close()
	atB, err := netns.OpenPacketSocket(b.ns, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer atB.Close()

	for i, tc := range spoofCases(a, b, gw4, gw6) {
		barrier := frame.UDP(frame.Ether{Dst: b.port.MAC, Src: a.port.MAC}, a.v4, b.v4, 7003, 7004, []byte(fmt.Sprintf("barrier %d", i)))
		before := dropCount(t, r.node)
		got := delivered(t, fromA, atB, tc.frame, barrier)
		dropped := dropCount(t, r.node) - before
		want := !protected || !tc.spoof
		if got != want {
			t.Errorf("%s: reached B = %v, want %v", tc.name, got, want)
		}
		if protected && tc.spoof && dropped == 0 {
			t.Errorf("%s: the chain's drop counters did not move", tc.name)
		}
	}
	// Pod C's own traffic, and (unchecked, as before) its forged frames.
	own := frame.UDP(frame.Ether{Dst: b.port.MAC, Src: c.port.MAC}, c.v4, b.v4, 7001, 7002, []byte("from C"))
	if !delivered(t, fromC, atB, own, frame.UDP(frame.Ether{Dst: b.port.MAC, Src: c.port.MAC}, c.v4, b.v4, 7003, 7004, []byte("barrier C"))) {
		t.Error("pod C, networked before anti-spoofing, lost its own traffic")
	}

	// Real sockets: ARP and NDP between the pods resolve through the
	// chain, and UDP from A's own addresses reaches B.
	for _, dst := range []netip.Addr{b.v4, b.v6} {
		if err := udpExchange(a.ns, b.ns, dst); err != nil {
			t.Errorf("UDP from A to B's %s over the pods' own stacks: %v", dst, err)
		}
	}
	if !protected {
		return
	}

	// CHECK: all in place, then one of A's elements deleted.
	list, err := r.load()
	if err != nil {
		t.Fatal(err)
	}
	rtA := &libcni.RuntimeConf{ContainerID: a.id, NetNS: a.ns.Path(), IfName: "eth0"}
	if err := r.node.Do(func() error { return r.cni.CheckNetworkList(ctx, list, rtA) }); err != nil {
		t.Fatalf("CHECK of pod A: %v", err)
	}
	els, _ := a.port.Elements()
	if err := r.node.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		for _, e := range els {
			if e.Set == antispoof.SetIPv4 {
				tb := &nftables.Table{Name: antispoof.Table, Family: nftables.TableFamilyBridge}
				if err := c.SetDeleteElements(&nftables.Set{Table: tb, Name: e.Set}, []nftables.SetElement{{Key: e.Key}}); err != nil {
					return err
				}
			}
		}
		return c.Flush()
	}); err != nil {
		t.Fatal(err)
	}
	err = r.node.Do(func() error { return r.cni.CheckNetworkList(ctx, list, rtA) })
	for _, want := range []string{"pod " + a.id, "interface eth0", "missing element pod-ipv4 " + a.port.HostIf, a.v4.String()} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CHECK after deleting A's IPv4 element: %v, want %q in it", err, want)
		}
	}

	// DEL: A's elements go, B's stay.
	if err := r.del(ctx, a.ns, a.id); err != nil {
		t.Fatalf("DEL of pod A: %v", err)
	}
	for _, p := range []struct {
		pod  asPod
		want bool
	}{{a, false}, {b, true}} {
		err := r.node.Do(func() error { return antispoof.Check(p.pod.port) })
		if (err == nil) != p.want {
			t.Errorf("after A's DEL, pod %s registered = %v, want %v (%v)", p.pod.id, err == nil, p.want, err)
		}
	}
	// A second DEL (runtimes retry) does not fail either.
	if err := r.del(ctx, a.ns, a.id); err != nil {
		t.Errorf("second DEL of pod A: %v", err)
	}
}

// udpExchange sends datagrams from ns `from` to dst:7100 in ns `to` until
// one arrives (the first ones may wait on neighbour resolution); it must
// come from the sender's own address.
func udpExchange(from, to *netns.NS, dst netip.Addr) error {
	var conn *net.UDPConn
	if err := to.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: dst.AsSlice(), Port: 7100})
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()
	type received struct {
		data string
		from netip.Addr
		err  error
	}
	got := make(chan received, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, addr, err := conn.ReadFromUDPAddrPort(buf)
		got <- received{string(buf[:n]), addr.Addr().Unmap(), err}
	}()
	var src netip.Addr
	var r received
	if err := from.Do(func() error {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: dst.AsSlice(), Port: 7100})
		if err != nil {
			return err
		}
		defer c.Close()
		src = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := c.Write([]byte("hello")); err != nil {
				return err
			}
			select {
			case r = <-got:
				return nil
			case <-tick.C:
			}
		}
	}); err != nil {
		return err
	}
	if r.err != nil {
		return r.err
	}
	if r.data != "hello" || r.from != src {
		return fmt.Errorf("got %q from %s, want hello from %s", r.data, r.from, src)
	}
	return nil
}
