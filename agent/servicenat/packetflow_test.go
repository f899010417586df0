package servicenat

import (
	"github.com/wgmesh/wgmesh/nft"
	"net/netip"
	"testing"
	"time"
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
}
