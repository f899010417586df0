package nft_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
)

// natPart is a part with a static DNAT map and dynamic ones (natmap-*).
var natPart = &nft.Part{Name: "nat",
	BaseChains:  []nft.BaseChain{{Name: "nat-pre", NAT: true, Hook: nft.HookPrerouting, Priority: nft.PriorityDNAT}},
	TypedSets:   map[string]nft.SetKind{"nat-static": nft.SetNATMap},
	SetPrefixes: []string{"natmap-"}}

// desiredNAT maps each service address of family f, port 80, to the
// endpoints eps[i] by slot, in map natmap-<len(eps)>.
func desiredNAT(f nft.Family, eps ...string) *nft.Ruleset {
	rs := natPart.Skeleton()
	svc := map[nft.Family]string{nft.IPv4: "198.18.128.10", nft.IPv6: "2001:db8:18::10"}[f]
	var c nft.Chain
	if len(eps) > 0 {
		m := "natmap-" + string(rune('0'+len(eps)))
		for i, e := range eps {
			rs.AddTypedElements(m, nft.SetNATMap, nft.NATElem(nft.NATKey{Addr: netip.MustParseAddr(svc), Proto: nft.TCP, Port: 80, Slot: uint16(i)},
				netip.AddrPortFrom(netip.MustParseAddr(e), 8080)))
		}
		c = append(c, nft.Rule{VMap: m, VMapKey: nft.KeyAddrProtoPortSlot, NumgenMod: int32(len(eps))})
	}
	rs.Chains["nat-pre"] = append(c, nft.Rule{VMap: "nat-static", VMapKey: nft.KeyAddrProtoPortSlot, NumgenMod: 1})
	return rs
}

// TestKernelNATMaps: a DNAT map keyed by address . protocol . port . slot
// holding address . port is written, read back equal, listed by nft as
// the numgen lookup it is; its elements change without a rule write; a
// map whose rule goes is emptied, then deleted with the next write; an
// element changed behind its back is repaired.
func TestKernelNATMaps(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-nft-natmap")
	k := kernelIn(t, ns, natPart)
	eps := map[nft.Family][]string{
		nft.IPv4: {"198.19.1.5", "198.19.2.5"},
		nft.IPv6: {"2001:db8:19:1::5", "2001:db8:19:2::5"},
	}
	for _, f := range nft.Families {
		want := desiredNAT(f, eps[f]...)
		if !syncKernel(t, k, f, want) || syncKernel(t, k, f, want) {
			t.Fatalf("%s: the first sync wrote nothing, or the second wrote again", f)
		}
		// The same count, another endpoint: elements only.
		other := desiredNAT(f, eps[f][0], strings.Replace(eps[f][1], "5", "6", 1))
		cur, err := k.Read(f)
		if err != nil {
			t.Fatal(err)
		}
		if ch := nft.Diff(cur, other); ch.Size(other) != 2 {
			t.Errorf("%s: changing one endpoint is %d objects, want 2 elements (one deleted, one added)", f, ch.Size(other))
		}
		if !syncKernel(t, k, f, other) {
			t.Errorf("%s: changing an endpoint wrote nothing", f)
		}
	}
	out, err := ns.Exec(context.Background(), "nft", "list", "table", "ip", nft.Table)
	if err != nil {
		t.Fatalf("nft list table ip %s (the nft binary is in hack/deps.sh): %v: %s", nft.Table, err, out)
	}
	t.Logf("nft list table ip %s:\n%s", nft.Table, out)
	for _, s := range []string{
		"type ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service",
		"198.18.128.10 . tcp . 80 . 0x00000001 : 198.19.2.6 . 8080",
		"dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @natmap-2",
	} {
		if !strings.Contains(string(out), s) {
			t.Errorf("nft list lacks %q", s)
		}
	}

	// Drift: an element's endpoint changed by hand is rewritten.
	f := nft.IPv4
	conn, err := nftables.New(nftables.WithNetNSFd(k.NetNSFd))
	if err != nil {
		t.Fatal(err)
	}
	m := &nftables.Set{Table: &nftables.Table{Name: nft.Table, Family: nftables.TableFamilyIPv4}, Name: "natmap-2"}
	key := append(netip.MustParseAddr("198.18.128.10").AsSlice(), 6, 0, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0)
	if err := conn.SetDeleteElements(m, []nftables.SetElement{{Key: key}}); err != nil {
		t.Fatal(err)
	}
	m.IsMap = true
	if err := conn.SetAddElements(m, []nftables.SetElement{{Key: key, Val: append(netip.MustParseAddr("198.19.9.9").AsSlice(), 0x1f, 0x90, 0, 0)}}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	want := desiredNAT(f, eps[f][0], "198.19.2.6")
	if !syncKernel(t, k, f, want) {
		t.Error("an element changed by hand was not repaired")
	}

	// One endpoint: map natmap-1 and its rule come, natmap-2 is emptied
	// with its rule gone and deleted with the next write.
	want = desiredNAT(f, eps[f][0])
	syncKernel(t, k, f, want)
	if !k.HasStale() {
		t.Error("natmap-2, no longer used, is not waiting for deletion")
	}
	if err := k.FlushStale(); err != nil {
		t.Fatal(err)
	}
	if names := setNames(t, k, f); !names["natmap-1"] || names["natmap-2"] || !names["nat-static"] {
		t.Errorf("sets after the change: %v; want natmap-1 and nat-static", names)
	}
	if syncKernel(t, k, f, want) {
		t.Error("a sync after the change wrote again")
	}
	for _, f := range nft.Families {
		if err := k.Delete(f); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNATMapRefusals: the Fake refuses what the kernel refuses of DNAT
// maps: a DNAT rule on a missing map or on a set of another kind, and a
// key mapped to two endpoints.
func TestNATMapRefusals(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-nft-natref")
	k := kernelIn(t, ns, natPart)
	key := nft.NATKey{Addr: netip.MustParseAddr("198.18.128.10"), Proto: nft.TCP, Port: 80}
	for _, tc := range []struct {
		name string
		edit func(rs *nft.Ruleset)
	}{
		{"a DNAT rule on a missing map", func(rs *nft.Ruleset) {
			rs.Chains["nat-pre"] = nft.Chain{{VMap: "natmap-9", VMapKey: nft.KeyAddrProtoPortSlot, NumgenMod: 9}}
		}},
		{"a DNAT rule on a set of another kind", func(rs *nft.Ruleset) {
			rs.DeclareSet("natmap-x", nft.SetAddrProtoPort)
			rs.Chains["nat-pre"] = nft.Chain{{VMap: "natmap-x", VMapKey: nft.KeyAddrProtoPortSlot, NumgenMod: 1}}
		}},
		{"a key mapped to two endpoints", func(rs *nft.Ruleset) {
			rs.AddTypedElements("nat-static", nft.SetNATMap,
				nft.NATElem(key, netip.MustParseAddrPort("198.19.1.5:8080")), nft.NATElem(key, netip.MustParseAddrPort("198.19.1.6:8080")))
		}},
	} {
		want := desiredNAT(nft.IPv4)
		tc.edit(want)
		fake := nft.NewFake()
		if _, err := nft.Sync(fake.For(natPart), nft.IPv4, want); err == nil {
			t.Errorf("%s: the Fake accepted it", tc.name)
		}
		if err := k.EnsureSkeleton(nft.IPv4); err != nil {
			t.Fatal(err)
		}
		if _, err := nft.Sync(k, nft.IPv4, want); err == nil {
			t.Errorf("%s: the kernel accepted it (the Fake's refusal is wrong)", tc.name)
		}
	}
}
