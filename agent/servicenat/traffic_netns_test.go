package servicenat

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
)

// trafficLab is a node namespace routing between a client on its underlay
// (198.18.0.50) and two backend pods on its pod bridge (198.19.1.5, .6).
type trafficLab struct {
	node, client *netns.NS
	backends     map[string]*netns.NS // by address
	k            *nft.Kernel
	table        *Table
}

func newTrafficLab(t *testing.T) *trafficLab {
	t.Helper()
	netns.SkipUnlessRoot(t)
	l := &trafficLab{node: netns.NewForTest(t, "wgmsn-node"), client: netns.NewForTest(t, "wgmsn-client"), backends: map[string]*netns.NS{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netns.Veth(l.node, "eth0", l.client, "eth0", 0))
	must(netns.AddAddr(l.node, "eth0", "198.18.0.11/24"))
	must(netns.AddAddr(l.client, "eth0", "198.18.0.50/24"))
	must(netns.AddRoute(l.client, "default", "198.18.0.11", "eth0"))
	// As on any node, the service range is routed somewhere (the default
	// route, here through an uplink router): the refusals happen in the
	// forward path after routing.
	up := netns.NewForTest(t, "wgmsn-up")
	must(netns.Veth(l.node, "eth1", up, "eth0", 0))
	must(netns.AddAddr(l.node, "eth1", "198.18.2.11/24"))
	must(netns.AddAddr(up, "eth0", "198.18.2.254/24"))
	must(netns.AddRoute(l.node, "default", "198.18.2.254", "eth1"))
	must(netns.Bridge(l.node, "wgmesh-br0", 0))
	must(netns.AddAddr(l.node, "wgmesh-br0", "198.19.1.1/24"))
	must(l.node.Sysctl("net.ipv4.ip_forward", "1"))
	for i, addr := range []string{"198.19.1.5", "198.19.1.6"} {
		b := netns.NewForTest(t, fmt.Sprintf("wgmsn-be%d", i))
		port := fmt.Sprintf("vbe%d", i)
		must(netns.Veth(l.node, port, b, "eth0", 0))
		must(netns.SetMaster(l.node, port, "wgmesh-br0"))
		must(netns.AddAddr(b, "eth0", addr+"/24"))
		must(netns.AddRoute(b, "default", "198.19.1.1", "eth0"))
		l.backends[addr] = b
		serveIdentity(t, b, addr)
	}
	l.k = kernelIn(t, l.node)
	in := Input{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.128.0/20")},
		NodePortIPs:  mustAddrs("198.18.0.11"), SNATAddrs: mustAddrs("198.19.1.1"), TunnelIf: "wgmesh0",
	}
	l.table = NewTable(in)
	return l
}

// serveIdentity answers every TCP connection and UDP datagram on 8080 with
// "<own address> <client address>".
func serveIdentity(t *testing.T, ns *netns.NS, self string) {
	var tl net.Listener
	var ul net.PacketConn
	if err := ns.Do(func() (err error) {
		if tl, err = net.Listen("tcp", ":8080"); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close(); ul.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", self, c.RemoteAddr())
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = ul.WriteTo([]byte(self+" "+from.String()+"\n"), from)
		}
	}()
}

func (l *trafficLab) apply(t *testing.T) {
	t.Helper()
	if err := l.k.EnsureSkeleton(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	cur, err := l.k.Read(nft.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	want := l.table.Full(nft.IPv4)
	if _, err := l.k.Apply(nft.IPv4, nft.Diff(cur, want), want); err != nil {
		t.Fatal(err)
	}
	l.table.Commit()
}

// tcp connects from the client and returns "<backend> <client as seen>".
func (l *trafficLab) tcp(addr string) (string, error) {
	var c net.Conn
	if err := l.client.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), err
}

func TestTrafficThroughServiceNAT(t *testing.T) {
	l := newTrafficLab(t)
	both := []Endpoint{ep("198.19.1.5", 8080, true), ep("198.19.1.6", 8080, true)}
	web := Service{ServiceKey: ServiceKey{"ns", "web"}, ClusterIPs: mustAddrs("198.18.128.10"),
		Ports: []Port{{Name: "tcp", Protocol: nft.TCP, Port: 80, NodePort: 30080, Endpoints: both}, {Name: "udp", Protocol: nft.UDP, Port: 53, Endpoints: both}}}
	sticky := Service{ServiceKey: ServiceKey{"ns", "sticky"}, ClusterIPs: mustAddrs("198.18.128.11"), AffinityTimeout: time.Minute,
		Ports: []Port{{Name: "tcp", Protocol: nft.TCP, Port: 80, Endpoints: both}}}
	empty := Service{ServiceKey: ServiceKey{"ns", "empty"}, ClusterIPs: mustAddrs("198.18.128.12"),
		Ports: []Port{{Name: "tcp", Protocol: nft.TCP, Port: 80}, {Name: "udp", Protocol: nft.UDP, Port: 53}}}
	for _, s := range []Service{web, sticky, empty} {
		l.table.Update(s)
	}
	l.apply(t)

	t.Run("ClusterIP and NodePort reach both endpoints, masqueraded", func(t *testing.T) {
		for _, addr := range []string{"198.18.128.10:80", "198.18.0.11:30080"} {
			seen := map[string]bool{}
			for range 40 {
				got, err := l.tcp(addr)
				if err != nil {
					t.Fatalf("%s: %v", addr, err)
				}
				f := strings.Fields(got)
				seen[f[0]] = true
				if !strings.HasPrefix(f[1], "198.19.1.1:") {
					t.Errorf("%s: backend saw %s, want the off-cluster client masqueraded to the bridge address", addr, f[1])
				}
			}
			if len(seen) != 2 {
				t.Errorf("%s: answered by %v, want both endpoints", addr, seen)
			}
		}
	})

	t.Run("session affinity keeps one endpoint", func(t *testing.T) {
		seen := map[string]bool{}
		for range 20 {
			got, err := l.tcp("198.18.128.11:80")
			if err != nil {
				t.Fatal(err)
			}
			seen[strings.Fields(got)[0]] = true
		}
		if len(seen) != 1 {
			t.Errorf("answered by %v, want one endpoint", seen)
		}
	})

	t.Run("refused without endpoints and on unused ports", func(t *testing.T) {
		for _, addr := range []string{"198.18.128.12:80", "198.18.128.10:81"} {
			start := time.Now()
			_, err := l.tcp(addr)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("TCP %s: %v, want connection refused", addr, err)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("TCP %s refused after %s", addr, d)
			}
		}
		var c net.Conn
		if err := l.client.Do(func() (err error) { c, err = net.Dial("udp", "198.18.128.12:53"); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("x"))
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("UDP without endpoints: %v, want connection refused (ICMP port unreachable)", err)
		}
		if _, err := l.tcp("198.18.129.1:80"); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("unallocated service address: %v, want a silent drop (timeout)", err)
		}
	})

	t.Run("stale UDP flows removed when an endpoint goes", func(t *testing.T) {
		var c *net.UDPConn
		if err := l.client.Do(func() (err error) {
			c, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: net.ParseIP("198.18.128.10"), Port: 53})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ask := func() string {
			buf := make([]byte, 128)
			for range 10 {
				_, _ = c.Write([]byte("x"))
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if n, err := c.Read(buf); err == nil {
					return strings.Fields(string(buf[:n]))[0]
				}
			}
			return ""
		}
		first := ask()
		var other string
		for a := range l.backends {
			if a != first {
				other = a
			}
		}
		old := web
		cur := web
		cur.Ports = []Port{web.Ports[0], {Name: "udp", Protocol: nft.UDP, Port: 53, Endpoints: []Endpoint{ep(other, 8080, true)}}}
		l.table.Update(cur)
		l.apply(t)
		// The flow is pinned to the gone endpoint (still alive here, so it
		// still answers) until its conntrack entry goes.
		if got := ask(); got != first {
			t.Fatalf("before the cleanup the flow went to %q, want still %s (conntrack pins it)", got, first)
		}
		n, err := (&Conntrack{NetNSFd: l.k.NetNSFd}).CleanStale(old, cur, mustAddrs("198.18.0.11"))
		if err != nil || n == 0 {
			t.Fatalf("CleanStale removed %d entries: %v", n, err)
		}
		if got := ask(); got != other {
			t.Errorf("after the cleanup the same socket reached %q, want %s", got, other)
		}
	})
}

// applyChanges writes what changed since the last write, as the proxy's
// partial sync does (old fragments to new ones, elements only for fast
// Services), and deletes what the write before left unreferenced.
func (l *trafficLab) applyChanges(t *testing.T) {
	t.Helper()
	before, after := l.table.Changes(nft.IPv4)
	if _, err := l.k.Apply(nft.IPv4, nft.Diff(nft.DigestOf(before), after), after); err != nil {
		t.Fatal(err)
	}
	l.table.Commit()
	if err := l.k.FlushStale(); err != nil {
		t.Fatal(err)
	}
}

// TestTrafficFastPathChanges: a Service's endpoints change 2 -> 1 -> 0 ->
// 2 through partial writes; after each, new connections reach exactly the
// current endpoints (both of two, with the DNAT rule mod 2), or are refused.
func TestTrafficFastPathChanges(t *testing.T) {
	l := newTrafficLab(t)
	l.apply(t)
	svc := func(eps ...string) Service {
		s := Service{ServiceKey: ServiceKey{"ns", "web"}, ClusterIPs: mustAddrs("198.18.128.10"),
			Ports: []Port{{Name: "tcp", Protocol: nft.TCP, Port: 80}}}
		for _, e := range eps {
			s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, ep(e, 8080, true))
		}
		return s
	}
	for _, step := range [][]string{{"198.19.1.5", "198.19.1.6"}, {"198.19.1.6"}, nil, {"198.19.1.5", "198.19.1.6"}} {
		l.table.Update(svc(step...))
		l.applyChanges(t)
		seen := map[string]bool{}
		for range 40 {
			got, err := l.tcp("198.18.128.10:80")
			if len(step) == 0 {
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("no endpoints: %v, want connection refused", err)
				}
				break
			}
			if err != nil {
				t.Fatalf("endpoints %v: %v", step, err)
			}
			seen[strings.Fields(got)[0]] = true
		}
		if len(step) > 0 && len(seen) != len(step) {
			t.Errorf("endpoints %v: answered by %v", step, seen)
		}
		for a := range seen {
			if !strings.Contains(strings.Join(step, " "), a) {
				t.Errorf("endpoints %v: answered by %s, no endpoint any more", step, a)
			}
		}
	}
}
