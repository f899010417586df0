package nft_test

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/wgmesh/wgmesh/nft"
)

var (
	accept = nft.Verdict{Kind: nft.VerdictAccept}
	drop   = nft.Verdict{Kind: nft.VerdictDrop}
)

// TestRuleSize: a Rule stays small enough that an endpoint chain's two
// rules and the allocator's 8-byte header fit in a 768-byte allocation
// (see Rule: 100,000 endpoint chains at 10,000 Services of 10 endpoints).
func TestRuleSize(t *testing.T) {
	if got := unsafe.Sizeof(nft.Rule{}); 2*got+8 > 768 {
		t.Errorf("nft.Rule is %d bytes: an endpoint chain's two rules no longer fit in 768 bytes but take 896 (+12.8 MB at 10,000 Services); "+
			"put the new field among the small ones at the end, or keep it out of line", got)
	}
}

// TestRuleString: each new match renders as nft writes it, in the order
// Exprs compiles it.
func TestRuleString(t *testing.T) {
	for _, tc := range []struct {
		r    nft.Rule
		want string
	}{
		{nft.Rule{CtState: nft.CtEstablished | nft.CtRelated, Verdict: accept}, "ct state established,related accept"},
		{nft.Rule{CtState: nft.CtInvalid, Counter: true, Verdict: drop}, "ct state invalid counter drop"},
		{nft.Rule{CtState: nft.CtNew | nft.CtInvalid}, "ct state invalid,new"},
		{nft.Rule{NotSaddrSet: "local", Counter: true, Verdict: drop}, "saddr != @local counter drop"},
		{nft.Rule{Daddr: netip.MustParsePrefix("198.19.1.0/24"), NotDaddrSet: "local", Verdict: drop},
			"ip daddr 198.19.1.0/24 daddr != @local drop"},
		{nft.Rule{SaddrDaddrSet: "self", Verdict: accept}, "saddr . daddr @self accept"},
		{nft.Rule{SaddrSet: "cidrs", Proto: nft.TCP, DPort: 8000, DPortEnd: 8100, Verdict: accept},
			"saddr @cidrs meta l4proto tcp th dport 8000-8100 accept"},
		{nft.Rule{Proto: nft.ICMPv6, ICMPv6Type: 133, ICMPv6TypeEnd: 137, Verdict: accept},
			"meta l4proto ipv6-icmp icmpv6 type 133-137 accept"},
		{nft.Rule{Proto: nft.ICMPv6, ICMPv6Type: 128, Verdict: accept}, "meta l4proto ipv6-icmp icmpv6 type 128 accept"},
		{nft.Rule{SaddrSet: "peers", Proto: nft.TCP, DaddrProtoPortSet: "serve", Verdict: accept},
			"saddr @peers meta l4proto tcp daddr . meta l4proto . th dport @serve accept"},
		{nft.Rule{VMap: "in", VMapKey: nft.KeyDaddr}, "daddr vmap @in"},
		{nft.Rule{VMap: "out", VMapKey: nft.KeySaddr}, "saddr vmap @out"},
		{nft.Rule{VMap: "endpoints-mod-3", VMapKey: nft.KeyAddrProtoPortSlot, NumgenMod: 3},
			"dnat to daddr . meta l4proto . th dport . numgen random mod 3 map @endpoints-mod-3"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

// TestExistingRuleStrings pins the text, and so the fingerprint stored in
// the kernel, of rules as the writers wrote them before the model grew:
// an upgrade must find them unchanged and rewrite nothing.
func TestExistingRuleStrings(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		r    nft.Rule
		want string
	}{
		{nft.Rule{CtStateNew: true, Verdict: nft.Jump("services")}, "ct state new jump services"},
		{nft.Rule{VMap: "service-ips", VMapKey: nft.KeyAddrProtoPort}, "daddr . meta l4proto . th dport vmap @service-ips"},
		{nft.Rule{DaddrSet: "nodeport-ips", VMap: "service-nodeports", VMapKey: nft.KeyProtoPort},
			"daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"},
		{nft.Rule{Daddr: nft.Host(netip.MustParseAddr("198.18.128.10")), Proto: nft.TCP, DPort: 80, SaddrNotIn: []netip.Prefix{p("198.19.0.0/16")},
			Verdict: nft.Jump("mark-for-masquerade")},
			"ip saddr != { 198.19.0.0/16 } ip daddr 198.18.128.10 meta l4proto tcp th dport 80 jump mark-for-masquerade"},
		{nft.Rule{SaddrSet: "affinity-x", Verdict: nft.Goto("endpoint-x")}, "saddr @affinity-x goto endpoint-x"},
		{nft.Rule{Update: "affinity-x"}, "update @affinity-x { saddr }"},
		{nft.Rule{Proto: nft.UDP, DNAT: netip.MustParseAddrPort("198.19.1.5:53")}, "meta l4proto udp dnat to 198.19.1.5:53"},
		{nft.Rule{NumgenMod: 3, Verdict: nft.Goto("endpoint-y")}, "numgen random mod 3 < 1 goto endpoint-y"},
		{nft.Rule{MarkUnset: true, Verdict: nft.Verdict{Kind: nft.VerdictReturn}}, "meta mark & 0x4000 == 0 return"},
		{nft.Rule{ClearMark: true, Masquerade: true, FullyRandom: true}, "meta mark set meta mark ^ 0x4000 masquerade fully-random"},
		{nft.Rule{OIFName: "wgmesh0", SNAT: netip.MustParseAddr("198.19.1.1"), FullyRandom: true}, `oifname "wgmesh0" snat to 198.19.1.1 fully-random`},
		{nft.Rule{NotOIFNames: []string{"wgmesh0", "wgmesh-br0"}, Daddr: p("fd00:10::/48"), Counter: true, Verdict: nft.Verdict{Kind: nft.VerdictReject}},
			`ip6 daddr fd00:10::/48 oifname != "wgmesh0" oifname != "wgmesh-br0" counter reject`},
		{nft.Rule{FibSaddrLocal: true, Verdict: nft.Jump("mark-for-masquerade")}, "fib saddr type local jump mark-for-masquerade"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

func TestMapKeyString(t *testing.T) {
	for _, tc := range []struct {
		k    nft.MapKey
		want string
	}{
		{nft.MapKey{Addr: netip.MustParseAddr("198.19.1.5")}, "198.19.1.5"},
		{nft.MapKey{Addr: netip.MustParseAddr("198.18.128.10"), Proto: nft.TCP, Port: 80}, "198.18.128.10 . tcp . 80"},
		{nft.MapKey{Proto: nft.UDP, Port: 30053}, "udp . 30053"},
	} {
		if got := tc.k.String(); got != tc.want {
			t.Errorf("got %s, want %s", got, tc.want)
		}
	}
}

// TestRulesetString lists typed sets with their kind and sorted elements.
func TestRulesetString(t *testing.T) {
	rs := nft.NewRuleset()
	a := netip.MustParseAddr
	rs.AddTypedElements("self", nft.SetAddrAddr, nft.SetElem{Addr: a("198.19.1.5"), Addr2: a("198.19.1.5")})
	rs.AddTypedElements("serve", nft.SetAddrProtoPort, nft.SetElem{Addr: a("198.19.1.7"), Proto: nft.TCP, Port: 80},
		nft.SetElem{Addr: a("198.19.1.5"), Proto: nft.TCP, Port: 80})
	rs.AddTypedElements("cidrs", nft.SetInterval, nft.Ranges([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, []netip.Prefix{netip.MustParsePrefix("198.19.1.7/32")})...)
	rs.DeclareSet("empty", nft.SetAddr)
	want := "set cidrs { interval: 0.0.0.0-198.19.1.6, 198.19.1.8-255.255.255.255 }\n" +
		"set empty { addr }\n" +
		"set self { addr . addr: 198.19.1.5 . 198.19.1.5 }\n" +
		"set serve { addr . proto . port: 198.19.1.5 . tcp . 80, 198.19.1.7 . tcp . 80 }\n"
	if got := rs.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
