package nft_test

import (
	"net/netip"
	"testing"

	"github.com/wgmesh/wgmesh/nft"
)

// policyPart is a NetworkPolicy-like writer (netpol-design.md §3.1): verdict
// maps keyed by a local pod's address lead to its combination chain, which
// jumps to per-policy chains of accept rules over peer, ipBlock and
// named-port sets, and drops the rest.
var policyPart = &nft.Part{
	Name:          "policy",
	BaseChains:    []nft.BaseChain{{Name: "policy-forward", Hook: nft.HookForward, Priority: nft.PriorityFilter - 2}},
	Maps:          map[string]nft.KeyKind{"policy-ingress-pods": nft.KeyDaddr, "policy-egress-pods": nft.KeySaddr},
	TypedSets:     map[string]nft.SetKind{"policy-local-pods": nft.SetAddr, "policy-self": nft.SetAddrAddr},
	ChainPrefixes: []string{"policy-in-", "policy-out-", "netpol-"},
	SetPrefixes:   []string{"peers-", "cidrs-", "named-port-"},
}

// policyAddrs are the addresses of the policy ruleset, per family: the
// node's pod CIDR, three local pods (a: ingress-isolated, b: not isolated,
// c: egress-isolated) and an address of the CIDR no pod has, a remote
// peer pod and another remote pod, an ipBlock and its except.
type policyAddrs struct {
	podCIDR                     netip.Prefix
	a, b, c, noPod, peer, other netip.Addr
	all, block, except          netip.Prefix
	inBlock, inExcept           netip.Addr
}

var policyPlan = map[nft.Family]policyAddrs{
	nft.IPv4: {podCIDR: netip.MustParsePrefix("198.19.1.0/24"),
		a: netip.MustParseAddr("198.19.1.5"), b: netip.MustParseAddr("198.19.1.6"), c: netip.MustParseAddr("198.19.1.7"),
		noPod: netip.MustParseAddr("198.19.1.33"), peer: netip.MustParseAddr("198.19.2.4"), other: netip.MustParseAddr("198.19.2.9"),
		all: netip.MustParsePrefix("0.0.0.0/0"), block: netip.MustParsePrefix("10.0.0.0/8"), except: netip.MustParsePrefix("10.1.0.0/16"),
		inBlock: netip.MustParseAddr("10.2.0.1"), inExcept: netip.MustParseAddr("10.1.0.1")},
	nft.IPv6: {podCIDR: netip.MustParsePrefix("fd00:19:1::/64"),
		a: netip.MustParseAddr("fd00:19:1::5"), b: netip.MustParseAddr("fd00:19:1::6"), c: netip.MustParseAddr("fd00:19:1::7"),
		noPod: netip.MustParseAddr("fd00:19:1::33"), peer: netip.MustParseAddr("fd00:19:2::4"), other: netip.MustParseAddr("fd00:19:2::9"),
		all: netip.MustParsePrefix("::/0"), block: netip.MustParsePrefix("fd10::/16"), except: netip.MustParsePrefix("fd10:1::/32"),
		inBlock: netip.MustParseAddr("fd10:2::1"), inExcept: netip.MustParseAddr("fd10:1::1")},
}

func desiredPolicy(f nft.Family) *nft.Ruleset {
	p := policyPlan[f]
	rs := policyPart.Skeleton()
	counterDrop := nft.Rule{Counter: true, Verdict: drop}
	rs.Chains["policy-forward"] = nft.Chain{
		{CtState: nft.CtEstablished | nft.CtRelated, Verdict: accept},
		{SaddrDaddrSet: "policy-self", Verdict: accept},
		{Saddr: p.podCIDR, NotSaddrSet: "policy-local-pods", Counter: true, Verdict: drop},
		{Daddr: p.podCIDR, NotDaddrSet: "policy-local-pods", Counter: true, Verdict: drop},
		{VMap: "policy-egress-pods", VMapKey: nft.KeySaddr},
		{VMap: "policy-ingress-pods", VMapKey: nft.KeyDaddr},
	}
	in := nft.Chain{{CtState: nft.CtInvalid, Counter: true, Verdict: drop}}
	if f == nft.IPv6 {
		in = append(in, nft.Rule{Proto: nft.ICMPv6, ICMPv6Type: 133, ICMPv6TypeEnd: 137, Verdict: accept})
	}
	rs.Chains["policy-in-a"] = append(in, nft.Rule{Verdict: nft.Jump("netpol-x-allow")}, counterDrop)
	rs.Chains["netpol-x-allow"] = nft.Chain{
		{SaddrSet: "peers-b", Proto: nft.TCP, DPort: 80, Verdict: accept},
		{SaddrSet: "cidrs-x", Proto: nft.TCP, DPort: 8000, DPortEnd: 8100, Verdict: accept},
		{SaddrSet: "peers-b", Proto: nft.TCP, DaddrProtoPortSet: "named-port-serve", Verdict: accept},
	}
	rs.Chains["policy-out-c"] = nft.Chain{{CtState: nft.CtInvalid, Counter: true, Verdict: drop},
		{DaddrSet: "cidrs-egress", Verdict: accept}, counterDrop}
	for _, pod := range []netip.Addr{p.a, p.b, p.c} {
		rs.AddTypedElements("policy-local-pods", nft.SetAddr, nft.SetElem{Addr: pod})
		rs.AddTypedElements("policy-self", nft.SetAddrAddr, nft.SetElem{Addr: pod, Addr2: pod})
	}
	rs.AddElement("policy-ingress-pods", nft.MapKey{Addr: p.a}, nft.Goto("policy-in-a"))
	rs.AddElement("policy-egress-pods", nft.MapKey{Addr: p.c}, nft.Goto("policy-out-c"))
	rs.AddTypedElements("peers-b", nft.SetAddr, nft.SetElem{Addr: p.peer})
	rs.AddTypedElements("cidrs-x", nft.SetInterval, nft.Ranges([]netip.Prefix{p.block}, []netip.Prefix{p.except})...)
	rs.AddTypedElements("cidrs-egress", nft.SetInterval, nft.Ranges([]netip.Prefix{p.all}, []netip.Prefix{p.block})...)
	rs.AddTypedElements("named-port-serve", nft.SetAddrProtoPort, nft.SetElem{Addr: p.a, Proto: nft.TCP, Port: 8443})
	return rs
}

// traceCase is a packet and its fate; inKernel: TestKernelPolicyTraffic
// sends it too (a new TCP or UDP connection, or an ICMPv6 message, between
// its namespaces).
type traceCase struct {
	name     string
	p        nft.Packet
	want     string
	inKernel bool
}

// policyCases are the packets of the policy ruleset of family f.
func policyCases(f nft.Family) []traceCase {
	p := policyPlan[f]
	pkt := func(src, dst netip.Addr, proto nft.Protocol, port uint16) nft.Packet {
		return nft.Packet{Src: src, Dst: dst, Proto: proto, DPort: port}
	}
	in := func(st nft.CtState, p nft.Packet) nft.Packet {
		p.CtState = st
		return p
	}
	cases := []traceCase{
		{"peer to port 80", pkt(p.peer, p.a, nft.TCP, 80), "accept", true},
		{"other pod to port 80", pkt(p.other, p.a, nft.TCP, 80), "drop", true},
		{"ipBlock to the port range", pkt(p.inBlock, p.a, nft.TCP, 8050), "accept", true},
		{"ipBlock to the range's last port", pkt(p.inBlock, p.a, nft.TCP, 8100), "accept", true},
		{"ipBlock past the port range", pkt(p.inBlock, p.a, nft.TCP, 8101), "drop", true},
		{"ipBlock except", pkt(p.inExcept, p.a, nft.TCP, 8050), "drop", true},
		{"peer to the named port", pkt(p.peer, p.a, nft.TCP, 8443), "accept", true},
		{"peer to the named port over udp", pkt(p.peer, p.a, nft.UDP, 8443), "drop", true},
		{"an address of the pod CIDR no pod has", pkt(p.other, p.noPod, nft.TCP, 80), "drop", true},
		{"to a pod no policy isolates", pkt(p.other, p.b, nft.UDP, 80), "accept", true},
		{"egress to the allowed block", pkt(p.c, p.other, nft.TCP, 443), "accept", true},
		{"egress to the excluded block", pkt(p.c, p.inBlock, nft.TCP, 443), "drop", true},
		// The kernel sees this connection's replies (c to the block) pass
		// as established.
		{"ipBlock to an egress-isolated pod", pkt(p.inBlock, p.c, nft.TCP, 80), "accept", true},
		{"a reply from an egress-isolated pod", in(nft.CtEstablished, pkt(p.c, p.inBlock, nft.TCP, 80)), "accept", false},
		{"established", in(nft.CtEstablished, pkt(p.other, p.a, nft.TCP, 80)), "accept", false},
		{"related", in(nft.CtRelated, pkt(p.other, p.a, nft.UDP, 53)), "accept", false},
		{"invalid", in(nft.CtInvalid, pkt(p.peer, p.a, nft.TCP, 80)), "drop", false},
		{"a pod to itself", pkt(p.a, p.a, nft.TCP, 9), "accept", false},
	}
	if f == nft.IPv6 {
		cases = append(cases,
			traceCase{"neighbor solicitation", nft.Packet{Src: p.other, Dst: p.a, Proto: nft.ICMPv6, ICMPv6Type: 135}, "accept", true},
			traceCase{"echo request", nft.Packet{Src: p.other, Dst: p.a, Proto: nft.ICMPv6, ICMPv6Type: 128}, "drop", true})
	}
	return cases
}

// TestTracePolicy traces packets through the policy part as the fake
// holds it: every new key kind, set kind and match decides some packet.
func TestTracePolicy(t *testing.T) {
	fake := nft.NewFake()
	prog := fake.For(policyPart)
	for _, f := range nft.Families {
		if _, err := nft.Sync(prog, f, desiredPolicy(f)); err != nil {
			t.Fatal(err)
		}
		tr := fake.Tracer(f, nil, func(netip.Addr) string { return "eth0" })
		for _, tc := range policyCases(f) {
			if got := nft.Outcomes(tr.Trace(tc.p)); got != tc.want {
				t.Errorf("%s %s (%s -> %s %s %d): %s, want %s", f, tc.name, tc.p.Src, tc.p.Dst, tc.p.Proto, tc.p.DPort, got, tc.want)
			}
		}
	}
}

// TestTraceEstablishedSkipsNAT: only a connection's first packet passes
// nat chains (conntrack maps the rest); filter chains see every packet.
func TestTraceEstablishedSkipsNAT(t *testing.T) {
	part := &nft.Part{Name: "nat", BaseChains: []nft.BaseChain{
		{Name: "pre", NAT: true, Hook: nft.HookPrerouting, Priority: nft.PriorityDNAT},
		{Name: "fwd", Hook: nft.HookForward, Priority: nft.PriorityFilter}}}
	rs := part.Skeleton()
	vip, ep := netip.MustParseAddr("198.18.128.10"), netip.MustParseAddrPort("198.19.1.5:8080")
	rs.Chains["pre"] = nft.Chain{{CtStateNew: true, Daddr: nft.Host(vip), Proto: nft.TCP, DNAT: ep}}
	rs.Chains["fwd"] = nft.Chain{{Daddr: nft.Host(vip), Verdict: nft.Verdict{Kind: nft.VerdictReject}}}
	tr := nft.NewTracer(rs, nil, func(netip.Addr) string { return "eth0" }, part)
	p := nft.Packet{Src: netip.MustParseAddr("198.19.2.4"), Dst: vip, Proto: nft.TCP, DPort: 80}
	if got := nft.Outcomes(tr.Trace(p)); got != "accept -> 198.19.1.5:8080" {
		t.Errorf("new: %s", got)
	}
	p.CtState = nft.CtEstablished
	if got := nft.Outcomes(tr.Trace(p)); got != "reject" {
		t.Errorf("established, to the service address itself: %s, want reject (no nat chain for it)", got)
	}
}
