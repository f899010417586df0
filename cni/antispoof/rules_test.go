package antispoof

import (
	"net"
	"net/netip"
	"testing"

	"github.com/wgmesh/wgmesh/test/frame"
)

// Two pods on one node's bridge, and the gateway (the bridge's addresses).
var (
	macA  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}
	macB  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x0b}
	macGW = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	macX  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x99} // nobody's

	ip4A, ip4B, ip4GW = netip.MustParseAddr("198.19.1.10"), netip.MustParseAddr("198.19.1.11"), netip.MustParseAddr("198.19.1.1")
	ip6A, ip6B, ip6GW = netip.MustParseAddr("2001:db8:100:1::10"), netip.MustParseAddr("2001:db8:100:1::11"), netip.MustParseAddr("2001:db8:100:1::1")
	llA, llB          = netip.MustParseAddr("fe80::a"), netip.MustParseAddr("fe80::b")
	unspecified       = netip.IPv6Unspecified()

	portA = Port{HostIf: "vethaaaa0001", MAC: macA, IPs: []netip.Addr{ip4A, ip6A}}
	portB = Port{HostIf: "vethbbbb0002", MAC: macB, IPs: []netip.Addr{ip4B, ip6B}}
)

func registered(t *testing.T, ports ...Port) *vm {
	t.Helper()
	var els []Element
	for _, p := range ports {
		e, err := p.Elements()
		if err != nil {
			t.Fatal(err)
		}
		els = append(els, e...)
	}
	return newVM(els)
}

// TestRulesTraceFrames sends frames from pod A's port (and others) through
// the rendered chain with A and B registered.
func TestRulesTraceFrames(t *testing.T) {
	toB := frame.Ether{Dst: macB, Src: macA}
	bcast := frame.Ether{Dst: frame.Broadcast, Src: macA}
	forged := frame.Ether{Dst: macB, Src: macX}
	payload := []byte("hello")
	vlan := frame.UDP(toB, ip4A, ip4B, 1, 2, payload)
	vlan = append(append(append([]byte{}, vlan[:12]...), 0x81, 0x00, 0x00, 0x01), vlan[12:]...)
	lldp := frame.UDP(toB, ip4A, ip4B, 1, 2, payload)
	lldp[12], lldp[13] = 0x88, 0xcc

	cases := []struct {
		name  string
		iif   string
		frame []byte
		want  string
	}{
		{"IPv4 own source", portA.HostIf, frame.UDP(toB, ip4A, ip4B, 1, 2, payload), "accept"},
		{"IPv4 broadcast own source", portA.HostIf, frame.UDP(bcast, ip4A, netip.MustParseAddr("198.19.1.255"), 1, 2, payload), "accept"},
		{"IPv4 with B's source", portA.HostIf, frame.UDP(toB, ip4B, ip4GW, 1, 2, payload), "drop"},
		{"IPv4 with the gateway's source", portA.HostIf, frame.UDP(toB, ip4GW, ip4B, 1, 2, payload), "drop"},
		{"IPv4 with an outside source", portA.HostIf, frame.UDP(toB, netip.MustParseAddr("198.18.0.5"), ip4B, 1, 2, payload), "drop"},
		{"IPv4 own source, forged MAC", portA.HostIf, frame.UDP(forged, ip4A, ip4B, 1, 2, payload), "drop"},
		{"IPv4 own source, B's MAC", portA.HostIf, frame.UDP(frame.Ether{Dst: macGW, Src: macB}, ip4A, ip4B, 1, 2, payload), "drop"},
		{"IPv4 0.0.0.0 source (DHCP)", portA.HostIf, frame.UDP(bcast, netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 68, 67, payload), "drop"},
		{"B's identity on A's port", portA.HostIf, frame.UDP(frame.Ether{Dst: macA, Src: macB}, ip4B, ip4A, 1, 2, payload), "drop"},
		{"A's identity on B's port", portB.HostIf, frame.UDP(toB, ip4A, ip4B, 1, 2, payload), "drop"},
		{"truncated IPv4 header", portA.HostIf, frame.UDP(toB, ip4A, ip4B, 1, 2, payload)[:20], "drop"},

		{"IPv6 own source", portA.HostIf, frame.UDP(toB, ip6A, ip6B, 1, 2, payload), "accept"},
		{"IPv6 with B's source", portA.HostIf, frame.UDP(toB, ip6B, ip6GW, 1, 2, payload), "drop"},
		{"IPv6 own source, forged MAC", portA.HostIf, frame.UDP(forged, ip6A, ip6B, 1, 2, payload), "drop"},
		{"IPv6 link-local, own MAC", portA.HostIf, frame.UDP(toB, llA, llB, 1, 2, payload), "accept"},
		{"IPv6 link-local, forged MAC", portA.HostIf, frame.UDP(forged, llA, llB, 1, 2, payload), "drop"},
		{"IPv6 unspecified (DAD), own MAC", portA.HostIf, frame.ICMPv6(bcast, unspecified, netip.MustParseAddr("ff02::1:ff00:10"), frame.NeighborSolicit, 0, make([]byte, 20)), "accept"},
		{"IPv6 unspecified, forged MAC", portA.HostIf, frame.ICMPv6(forged, unspecified, netip.MustParseAddr("ff02::1:ff00:10"), frame.NeighborSolicit, 0, make([]byte, 20)), "drop"},
		{"IPv6 site-local-looking fec0:: source", portA.HostIf, frame.UDP(toB, netip.MustParseAddr("fec0::a"), llB, 1, 2, payload), "drop"},

		{"ARP request own", portA.HostIf, frame.ARP(bcast, frame.ARPRequest, macA, ip4A, make(net.HardwareAddr, 6), ip4B), "accept"},
		{"ARP reply own", portA.HostIf, frame.ARP(toB, frame.ARPReply, macA, ip4A, macB, ip4B), "accept"},
		{"ARP reply claiming B's IPv4", portA.HostIf, frame.ARP(toB, frame.ARPReply, macA, ip4B, macB, ip4B), "drop"},
		{"gratuitous ARP claiming the gateway", portA.HostIf, frame.ARP(bcast, frame.ARPReply, macA, ip4GW, frame.Broadcast, ip4GW), "drop"},
		{"ARP with another sender MAC", portA.HostIf, frame.ARP(toB, frame.ARPReply, macX, ip4A, macB, ip4B), "drop"},
		{"ARP with a forged Ethernet source", portA.HostIf, frame.ARP(forged, frame.ARPReply, macA, ip4A, macB, ip4B), "drop"},
		{"ARP probe (sender 0.0.0.0)", portA.HostIf, frame.ARP(bcast, frame.ARPRequest, macA, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), ip4A), "drop"},

		{"NA for own address", portA.HostIf, frame.NA(toB, llA, llB, ip6A, macA), "accept"},
		{"NA for own address from global source", portA.HostIf, frame.NA(toB, ip6A, ip6B, ip6A, macA), "accept"},
		{"NA for a link-local target", portA.HostIf, frame.NA(toB, llA, llB, llA, macA), "accept"},
		{"NA for the gateway's address", portA.HostIf, frame.NA(bcast, llA, netip.MustParseAddr("ff02::1"), ip6GW, macA), "drop"},
		{"NA for B's address", portA.HostIf, frame.NA(toB, llA, llB, ip6B, macA), "drop"},
		{"router advertisement", portA.HostIf, frame.RA(bcast, llA), "drop"},
		{"redirect", portA.HostIf, frame.ICMPv6(toB, llA, llB, frame.Redirect, 0, make([]byte, 36)), "drop"},
		{"router solicitation", portA.HostIf, frame.ICMPv6(bcast, llA, netip.MustParseAddr("ff02::2"), frame.RouterSolicit, 0, make([]byte, 4)), "accept"},

		{"VLAN-tagged frame", portA.HostIf, vlan, "drop"},
		{"other EtherType", portA.HostIf, lldp, "drop"},
		{"runt frame", portA.HostIf, []byte{1, 2, 3}, "drop"},

		{"B's own traffic", portB.HostIf, frame.UDP(frame.Ether{Dst: macA, Src: macB}, ip4B, ip4A, 1, 2, payload), "accept"},
		// Not registered: a port of another bridge, or a pod networked
		// before anti-spoofing reached the node.
		{"unregistered port, anything", "vethcccc0003", frame.UDP(forged, ip4B, ip4GW, 1, 2, payload), "accept"},
	}
	m := registered(t, portA, portB)
	rules := Rules()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.run(rules, tc.iif, tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if got.verdict != tc.want {
				by := "the chain's policy"
				if got.rule >= 0 {
					by = "rule " + rules[got.rule].Comment
				}
				t.Errorf("%s from %s: %s by %s, want %s", tc.name, tc.iif, got.verdict, by, tc.want)
			}
		})
	}
}

// TestRulesDependOnlyOnRegistrations: a port is checked once registered,
// and against its current registration only.
func TestRulesDependOnlyOnRegistrations(t *testing.T) {
	own := frame.UDP(frame.Ether{Dst: macB, Src: macA}, ip4A, ip4B, 1, 2, nil)
	if got, _ := registered(t, portB).run(Rules(), portA.HostIf, frame.UDP(frame.Ether{Dst: macB, Src: macX}, ip4B, ip4B, 1, 2, nil)); got.verdict != "accept" {
		t.Errorf("port A not registered: %s, want accept (unregistered ports are not checked)", got.verdict)
	}
	moved := portA
	moved.IPs = []netip.Addr{netip.MustParseAddr("198.19.1.20")}
	if got, _ := registered(t, moved, portB).run(Rules(), portA.HostIf, own); got.verdict != "drop" {
		t.Errorf("A re-registered with another address still sends from the old one: %s", got.verdict)
	}
}
