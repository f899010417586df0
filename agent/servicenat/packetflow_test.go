package servicenat

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/nft"
)

// flowInput is the cluster of the packet-flow cases. This node is
// 198.18.0.11 with pods in 198.19.1.0/24 (gateway 198.19.1.1); another
// node's pods are in 198.19.2.0/24; 198.18.0.50 is a host outside the
// cluster on the underlay, 198.18.1.50 one outside the LB source ranges.
func flowInput() Input {
	in := Input{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:db8:19::/56")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.128.0/20"), netip.MustParsePrefix("2001:db8:18::/112")},
		NodePortIPs:  mustAddrs("198.18.0.11", "2001:db8::11"),
		SNATAddrs:    mustAddrs("198.19.1.1", "2001:db8:19:1::1"),
		TunnelIf:     "wgmesh0",
	}
	term := func(e Endpoint) Endpoint { e.Ready, e.Terminating = false, true; return e }
	in.Services = []Service{
		{ServiceKey: ServiceKey{"ns", "web"}, ClusterIPs: mustAddrs("198.18.128.10", "2001:db8:18::10"), ExternalIPs: mustAddrs("198.18.0.200"),
			Ports: []Port{
				{Name: "http", Protocol: nft.TCP, Port: 80, NodePort: 30080, Endpoints: []Endpoint{
					ep("198.19.1.5", 8080, true), ep("198.19.2.5", 8080, false), ep("2001:db8:19:2::5", 8080, false)}},
				{Name: "dns", Protocol: nft.UDP, Port: 53, Endpoints: []Endpoint{ep("198.19.2.6", 5353, false)}},
				{Name: "sctp", Protocol: nft.SCTP, Port: 53, Endpoints: []Endpoint{ep("198.19.2.6", 5354, false)}},
			}},
		{ServiceKey: ServiceKey{"ns", "sticky"}, ClusterIPs: mustAddrs("198.18.128.11"), AffinityTimeout: 10 * time.Second,
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: []Endpoint{ep("198.19.1.7", 80, true), ep("198.19.2.7", 80, false)}}}},
		{ServiceKey: ServiceKey{"ns", "elocal"}, ClusterIPs: mustAddrs("198.18.128.12"), LoadBalancerIPs: mustAddrs("198.18.0.201"),
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}, ExternalLocal: true, HealthCheckNodePort: 32000,
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 443, NodePort: 30443, Endpoints: []Endpoint{ep("198.19.1.8", 443, true), ep("198.19.2.8", 443, false)}}}},
		{ServiceKey: ServiceKey{"ns", "elocal-remote"}, ClusterIPs: mustAddrs("198.18.128.13"), ExternalLocal: true,
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 443, NodePort: 30444, Endpoints: []Endpoint{ep("198.19.2.9", 443, false)}}}},
		{ServiceKey: ServiceKey{"ns", "ilocal"}, ClusterIPs: mustAddrs("198.18.128.14"), InternalLocal: true,
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: []Endpoint{ep("198.19.1.10", 80, true), ep("198.19.2.10", 80, false)}}}},
		{ServiceKey: ServiceKey{"ns", "ilocal-remote"}, ClusterIPs: mustAddrs("198.18.128.15"), InternalLocal: true,
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, NodePort: 30445, Endpoints: []Endpoint{ep("198.19.2.11", 80, false)}}}},
		{ServiceKey: ServiceKey{"ns", "empty"}, ClusterIPs: mustAddrs("198.18.128.16"),
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, NodePort: 30446}, {Name: "u", Protocol: nft.UDP, Port: 53}}},
		{ServiceKey: ServiceKey{"ns", "terminating"}, ClusterIPs: mustAddrs("198.18.128.17"),
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: []Endpoint{term(ep("198.19.2.12", 80, false))}}}},
		{ServiceKey: ServiceKey{"ns", "rolling"}, ClusterIPs: mustAddrs("198.18.128.18"),
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: []Endpoint{term(ep("198.19.2.13", 80, false)), ep("198.19.2.14", 80, false)}}}},
	}
	return in
}

func newTracer(in Input, f nft.Family) *nft.Tracer {
	local := map[netip.Addr]bool{}
	for _, a := range append(append([]netip.Addr{}, in.NodePortIPs...), in.SNATAddrs...) {
		local[a] = true
	}
	return nft.NewTracer(Render(in, f), local, func(a netip.Addr) string {
		for _, p := range []string{"198.19.1.0/24", "2001:db8:19:1::/64"} {
			if netip.MustParsePrefix(p).Contains(a) {
				return "wgmesh-br0"
			}
		}
		for _, p := range in.ClusterCIDRs {
			if p.Contains(a) {
				return "wgmesh0"
			}
		}
		return "eth0"
	}, Part)
}

// reaches traces a new connection from a pod on this node to key through
// rs and lists where it may go.
func reaches(rs *nft.Ruleset, key nft.MapKey) string {
	tr := nft.NewTracer(rs, map[netip.Addr]bool{}, func(netip.Addr) string { return "wgmesh0" }, Part)
	return nft.Outcomes(tr.Trace(nft.Packet{Src: netip.MustParseAddr("198.19.1.20"), Dst: key.Addr, Proto: key.Proto, DPort: key.Port}))
}

func TestPacketFlows(t *testing.T) {
	const (
		pod      = "198.19.1.20"
		remote   = "198.19.2.20"
		node     = "198.18.0.11"
		outside  = "198.18.0.50"
		denied   = "198.18.1.50"
		pod6     = "2001:db8:19:1::20"
		nodeSNAT = "198.19.1.1"
	)
	type c struct {
		name     string
		src, dst string
		proto    nft.Protocol
		port     uint16
		fromNode bool
		want     string
	}
	cases := []c{
		{"pod to ClusterIP: every endpoint, source kept", pod, "198.18.128.10", nft.TCP, 80, false, "accept -> 198.19.1.5:8080; accept -> 198.19.2.5:8080"},
		{"pod on another node (via tunnel) to ClusterIP", remote, "198.18.128.10", nft.TCP, 80, false, "accept -> 198.19.1.5:8080; accept -> 198.19.2.5:8080"},
		{"node to ClusterIP: masqueraded, to the tunnel from the bridge gateway", node, "198.18.128.10", nft.TCP, 80, true,
			"accept -> 198.19.1.5:8080 masq; accept -> 198.19.2.5:8080 masq(" + nodeSNAT + ")"},
		{"off-cluster host to ClusterIP: masqueraded", outside, "198.18.128.10", nft.TCP, 80, false,
			"accept -> 198.19.1.5:8080 masq; accept -> 198.19.2.5:8080 masq(" + nodeSNAT + ")"},
		// kubectl wgmesh add-peer routes the service CIDRs of a laptop
		// through one node: without masquerade a remote backend would answer
		// the laptop directly (its own route to it), bypassing the DNAT.
		{"external WireGuard peer to ClusterIP: masqueraded, replies return through this node", "198.18.200.1", "198.18.128.10", nft.TCP, 80, false,
			"accept -> 198.19.1.5:8080 masq; accept -> 198.19.2.5:8080 masq(" + nodeSNAT + ")"},
		{"UDP port with targetPort resolved", pod, "198.18.128.10", nft.UDP, 53, false, "accept -> 198.19.2.6:5353"},
		{"SCTP on the same port number as UDP", pod, "198.18.128.10", nft.SCTP, 53, false, "accept -> 198.19.2.6:5354"},
		{"unused port on a ClusterIP: rejected", pod, "198.18.128.10", nft.TCP, 81, false, "reject"},
		{"unused port on a ClusterIP from the node: rejected", node, "198.18.128.10", nft.UDP, 9, true, "reject"},
		{"unallocated service address: dropped", pod, "198.18.128.99", nft.TCP, 80, false, "drop"},
		{"no endpoints: rejected", pod, "198.18.128.16", nft.TCP, 80, false, "reject"},
		{"no endpoints, UDP: rejected", pod, "198.18.128.16", nft.UDP, 53, false, "reject"},
		{"no endpoints from the node: rejected", node, "198.18.128.16", nft.TCP, 80, true, "reject"},
		{"NodePort from outside: masqueraded", outside, node, nft.TCP, 30080, false,
			"accept -> 198.19.1.5:8080 masq; accept -> 198.19.2.5:8080 masq(" + nodeSNAT + ")"},
		{"NodePort without endpoints from outside: rejected", outside, node, nft.TCP, 30446, false, "reject"},
		{"port that is no NodePort: left alone", outside, node, nft.TCP, 31999, false, "accept"},
		{"NodePort on loopback: not served", "127.0.0.1", "127.0.0.1", nft.TCP, 30080, true, "accept"},
		{"externalIP from outside: masqueraded", outside, "198.18.0.200", nft.TCP, 80, false,
			"accept -> 198.19.1.5:8080 masq; accept -> 198.19.2.5:8080 masq(" + nodeSNAT + ")"},
		{"hairpin: a pod reaching itself is masqueraded", "198.19.1.5", "198.18.128.10", nft.TCP, 80, false,
			"accept -> 198.19.1.5:8080 masq; accept -> 198.19.2.5:8080"},
		{"eTP Local NodePort from outside: local endpoint only, source kept", outside, node, nft.TCP, 30443, false, "accept -> 198.19.1.8:443"},
		{"eTP Local NodePort from a pod: every endpoint", pod, node, nft.TCP, 30443, false, "accept -> 198.19.1.8:443; accept -> 198.19.2.8:443"},
		{"eTP Local NodePort from the node: every endpoint, masqueraded", node, node, nft.TCP, 30443, true,
			"accept -> 198.19.1.8:443 masq; accept -> 198.19.2.8:443 masq(" + nodeSNAT + ")"},
		{"eTP Local LB IP from an allowed source: local endpoint", outside, "198.18.0.201", nft.TCP, 443, false, "accept -> 198.19.1.8:443"},
		{"LB source ranges: other sources dropped", denied, "198.18.0.201", nft.TCP, 443, false, "drop"},
		{"eTP Local without local endpoint, from outside: dropped", outside, node, nft.TCP, 30444, false, "drop"},
		{"eTP Local without local endpoint, from a pod: reaches the remote one", pod, node, nft.TCP, 30444, false, "accept -> 198.19.2.9:443"},
		{"eTP Local ClusterIP: every endpoint", pod, "198.18.128.12", nft.TCP, 443, false, "accept -> 198.19.1.8:443; accept -> 198.19.2.8:443"},
		{"iTP Local: local endpoint only", pod, "198.18.128.14", nft.TCP, 80, false, "accept -> 198.19.1.10:80"},
		{"iTP Local without local endpoint: dropped", pod, "198.18.128.15", nft.TCP, 80, false, "drop"},
		{"iTP Local without local endpoint, NodePort from outside: cluster endpoints", outside, node, nft.TCP, 30445, false,
			"accept -> 198.19.2.11:80 masq(" + nodeSNAT + ")"},
		{"only terminating endpoints: used", pod, "198.18.128.17", nft.TCP, 80, false, "accept -> 198.19.2.12:80"},
		{"ready and terminating endpoints: only ready used", pod, "198.18.128.18", nft.TCP, 80, false, "accept -> 198.19.2.14:80"},
		{"IPv6 ClusterIP: IPv6 endpoints only", pod6, "2001:db8:18::10", nft.TCP, 80, false, "accept -> [2001:db8:19:2::5]:8080"},
		{"IPv6 unallocated service address: dropped", pod6, "2001:db8:18::99", nft.TCP, 80, false, "drop"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst)
			tr := newTracer(flowInput(), nft.FamilyOf(dst))
			got := nft.Outcomes(tr.Trace(nft.Packet{Src: src, Dst: dst, Proto: tc.proto, DPort: tc.port, FromNode: tc.fromNode}))
			if got != tc.want {
				t.Errorf("%s -> %s %s/%d\n got: %s\nwant: %s", tc.src, tc.dst, tc.proto, tc.port, got, tc.want)
			}
		})
	}
}

func TestPacketFlowSessionAffinity(t *testing.T) {
	tr := newTracer(flowInput(), nft.IPv4)
	pkt := nft.Packet{Src: netip.MustParseAddr("198.19.1.20"), Dst: netip.MustParseAddr("198.18.128.11"), Proto: nft.TCP, DPort: 80}
	if got := nft.Outcomes(tr.Trace(pkt)); got != "accept -> 198.19.1.7:80; accept -> 198.19.2.7:80" {
		t.Fatalf("first connection: %s", got)
	}
	// The tracer explored both branches and recorded the client in both
	// affinity sets; a real connection takes one. Keep only the second.
	for name := range tr.Affinity {
		if name != affinityName("ns/sticky/tcp/p", ep("198.19.2.7", 80, false), 10*time.Second) {
			delete(tr.Affinity, name)
		}
	}
	if got := nft.Outcomes(tr.Trace(pkt)); got != "accept -> 198.19.2.7:80" {
		t.Fatalf("with affinity: %s, want only the remembered endpoint", got)
	}
	other := pkt
	other.Src = netip.MustParseAddr("198.19.1.21")
	if got := nft.Outcomes(tr.Trace(other)); got != "accept -> 198.19.1.7:80; accept -> 198.19.2.7:80" {
		t.Fatalf("another client: %s", got)
	}
}

func TestRenderIsDeterministicAndFamilySeparated(t *testing.T) {
	in := flowInput()
	a, b := Render(in, nft.IPv4).String(), Render(in, nft.IPv4).String()
	if a != b {
		t.Fatal("two renders of the same input differ")
	}
	v6 := Render(in, nft.IPv6)
	for m, els := range v6.Maps {
		for k := range els {
			if k.Addr.IsValid() && k.Addr.Is4() {
				t.Errorf("ip6 map %s holds IPv4 key %s", m, k)
			}
		}
	}
	for s, ts := range v6.TypedSets {
		for e := range ts.Elems {
			if e.Addr.Is4() || e.Addr2.Is4() {
				t.Errorf("ip6 set %s holds IPv4 element %s", s, e)
			}
		}
	}
}

// TestPacketFlowsFastPath: the element-only layout behaves as the chains
// did, for the cases that are its own: an endpoint count shared by two
// Services, an endpoint serving a fast and a chained Service (hairpin for
// both), externalIPs and NodePorts without endpoints, and IPv6.
func TestPacketFlowsFastPath(t *testing.T) {
	in := flowInput()
	in.Services = []Service{
		{ServiceKey: ServiceKey{"ns", "three"}, ClusterIPs: mustAddrs("198.18.128.30", "2001:db8:18::30"), ExternalIPs: mustAddrs("198.18.0.202"),
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, NodePort: 30030, Endpoints: []Endpoint{
				ep("198.19.1.31", 80, true), ep("198.19.2.32", 80, false), ep("198.19.2.33", 80, false),
				ep("2001:db8:19:1::31", 80, true)}}}},
		{ServiceKey: ServiceKey{"ns", "also-three"}, ClusterIPs: mustAddrs("198.18.128.31"),
			Ports: []Port{{Name: "p", Protocol: nft.UDP, Port: 53, Endpoints: []Endpoint{
				ep("198.19.1.31", 5353, true), ep("198.19.2.34", 5353, false), ep("198.19.2.35", 5353, false)}}}},
		{ServiceKey: ServiceKey{"ns", "sticky"}, ClusterIPs: mustAddrs("198.18.128.32"), AffinityTimeout: time.Minute,
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: []Endpoint{ep("198.19.1.31", 80, true)}}}},
		{ServiceKey: ServiceKey{"ns", "none"}, ClusterIPs: mustAddrs("198.18.128.33"), ExternalIPs: mustAddrs("198.18.0.203"),
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, NodePort: 30033}}},
	}
	const (
		pod, outside, node = "198.19.1.20", "198.18.0.50", "198.18.0.11"
		nodeSNAT           = "198.19.1.1"
		three              = "accept -> 198.19.1.31:80; accept -> 198.19.2.32:80; accept -> 198.19.2.33:80"
		threeMasq          = "accept -> 198.19.1.31:80 masq; accept -> 198.19.2.32:80 masq(" + nodeSNAT + "); accept -> 198.19.2.33:80 masq(" + nodeSNAT + ")"
	)
	for _, tc := range []struct {
		name, src, dst string
		proto          nft.Protocol
		port           uint16
		fromNode       bool
		want           string
	}{
		{"pod to ClusterIP: each of three endpoints, source kept", pod, "198.18.128.30", nft.TCP, 80, false, three},
		{"another Service of three endpoints, another protocol", pod, "198.18.128.31", nft.UDP, 53, false,
			"accept -> 198.19.1.31:5353; accept -> 198.19.2.34:5353; accept -> 198.19.2.35:5353"},
		{"off-cluster client to ClusterIP: masqueraded", outside, "198.18.128.30", nft.TCP, 80, false, threeMasq},
		{"node to ClusterIP: masqueraded", node, "198.18.128.30", nft.TCP, 80, true, threeMasq},
		{"externalIP from outside: masqueraded", outside, "198.18.0.202", nft.TCP, 80, false, threeMasq},
		{"externalIP from a pod: masqueraded too", pod, "198.18.0.202", nft.TCP, 80, false, threeMasq},
		{"NodePort from outside: masqueraded", outside, node, nft.TCP, 30030, false, threeMasq},
		{"NodePort from the node: masqueraded", node, node, nft.TCP, 30030, true, threeMasq},
		{"hairpin through the fast Service", "198.19.1.31", "198.18.128.30", nft.TCP, 80, false,
			"accept -> 198.19.1.31:80 masq; accept -> 198.19.2.32:80; accept -> 198.19.2.33:80"},
		{"hairpin through the chained Service sharing the endpoint", "198.19.1.31", "198.18.128.32", nft.TCP, 80, false, "accept -> 198.19.1.31:80 masq"},
		{"another protocol on a fast ClusterIP: rejected", pod, "198.18.128.30", nft.UDP, 80, false, "reject"},
		{"no endpoints, ClusterIP: rejected", pod, "198.18.128.33", nft.TCP, 80, false, "reject"},
		{"no endpoints, externalIP from outside: rejected", outside, "198.18.0.203", nft.TCP, 80, false, "reject"},
		{"no endpoints, NodePort from outside: rejected", outside, node, nft.TCP, 30033, false, "reject"},
		{"no endpoints, NodePort from the node: rejected", node, node, nft.TCP, 30033, true, "reject"},
		{"IPv6 ClusterIP: the IPv6 endpoint", "2001:db8:19:1::20", "2001:db8:18::30", nft.TCP, 80, false, "accept -> [2001:db8:19:1::31]:80"},
		{"IPv6 hairpin", "2001:db8:19:1::31", "2001:db8:18::30", nft.TCP, 80, false, "accept -> [2001:db8:19:1::31]:80 masq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst)
			tr := newTracer(in, nft.FamilyOf(dst))
			got := nft.Outcomes(tr.Trace(nft.Packet{Src: src, Dst: dst, Proto: tc.proto, DPort: tc.port, FromNode: tc.fromNode}))
			if got != tc.want {
				t.Errorf("%s -> %s %s/%d\n got: %s\nwant: %s", tc.src, tc.dst, tc.proto, tc.port, got, tc.want)
			}
		})
	}
	// Only the chained Service has chains of its own.
	for name := range Render(in, nft.IPv4).Chains {
		if _, static := RenderStatic(in, nft.IPv4).Chains[name]; !static && !strings.Contains(name, "ns/sticky/") {
			t.Errorf("chain %s: a fast Service rendered a chain", name)
		}
	}
}

// TestFastPathSpreadIsExact: a port with N endpoints is looked up by the
// rule "numgen random mod N" in map endpoints-mod-N, whose N slots for
// each destination hold each endpoint exactly once: every endpoint gets
// exactly 1/N of new connections (no rounding, for any N), and two
// Services with the same N share one rule.
func TestFastPathSpreadIsExact(t *testing.T) {
	in := flowInput()
	in.Services = nil
	for n := 1; n <= 40; n++ {
		s := Service{ServiceKey: ServiceKey{"ns", fmt.Sprintf("n%d", n)}, ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 129, byte(n)})},
			Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: nil}}}
		for i := 0; i < n; i++ {
			s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, ep(fmt.Sprintf("198.19.%d.%d", 2+i/200, 1+i%200), 80, false))
		}
		in.Services = append(in.Services, s, Service{ServiceKey: ServiceKey{"ns2", s.Name}, ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 130, byte(n)})}, Ports: s.Ports})
	}
	rs := Render(in, nft.IPv4)
	rules := map[int]int{}
	for _, r := range rs.Chains[ChainEndpointsDNAT] {
		if m := r.DNATMap(); m != "" {
			if modOf(m) != int(r.NumgenMod) {
				t.Errorf("rule %q: the modulus is not its map's endpoint count", r)
			}
			rules[int(r.NumgenMod)]++
		}
	}
	for _, s := range in.Services {
		n := len(s.Ports[0].Endpoints)
		if rules[n] != 1 {
			t.Fatalf("%d rules for %d endpoints, want 1", rules[n], n)
		}
		slots := map[uint16]string{}
		for e := range rs.TypedSets[endpointsMap(n)].Elems {
			if e.Addr == s.ClusterIPs[0] {
				slots[e.Slot] = e.NATTo().String()
			}
		}
		got := map[string]int{}
		for slot := uint16(0); slot < uint16(n); slot++ {
			got[slots[slot]]++
		}
		for _, e := range s.Ports[0].Endpoints {
			if got[e.AddrPort().String()] != 1 {
				t.Errorf("%s with %d endpoints: %s holds %d of %d slots, want exactly 1", s.ServiceKey, n, e.AddrPort(), got[e.AddrPort().String()], n)
			}
		}
		if len(slots) != n {
			t.Errorf("%s: %d slots, want %d", s.ServiceKey, len(slots), n)
		}
	}
	if len(rules) != 40 {
		t.Errorf("%d DNAT rules, want one per endpoint count (40)", len(rules))
	}
}
