package nft_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/nft"
)

func mustSync(t *testing.T, p nft.Programmer, f nft.Family, want *nft.Ruleset) bool {
	t.Helper()
	wrote, err := nft.Sync(p, f, want)
	if err != nil {
		t.Fatal(err)
	}
	return wrote
}

// TestFakeEmptyMapsExist: a map or set with no elements exists, as in the
// kernel: a rule may look it up, in the first write and in every later one.
func TestFakeEmptyMapsExist(t *testing.T) {
	part := &nft.Part{Name: "p", BaseChains: []nft.BaseChain{{Name: "p-forward", Hook: nft.HookForward}},
		Maps: map[string]nft.KeyKind{"p-map": nft.KeyAddrProtoPort}, Sets: []string{"p-set"}}
	fake := nft.NewFake()
	prog := fake.For(part)
	if err := prog.EnsureSkeleton(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	want := part.Skeleton()
	want.Chains["p-forward"] = nft.Chain{{VMap: "p-map", VMapKey: nft.KeyAddrProtoPort}}
	for i := 0; i < 2; i++ {
		if _, err := nft.Sync(prog, nft.IPv4, want); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		want.Chains["p-forward"] = append(want.Chains["p-forward"], nft.Rule{DaddrSet: "p-set", Verdict: nft.Verdict{Kind: nft.VerdictDrop}})
	}
}

// TestFakeTypedSets: typed sets are written, read back equal (a second
// sync writes nothing), and dropped as their kind says: a dynamic set goes
// with the last rule using it, a static one stays, empty.
func TestFakeTypedSets(t *testing.T) {
	fake := nft.NewFake()
	prog := fake.For(policyPart)
	for _, f := range nft.Families {
		if !mustSync(t, prog, f, desiredPolicy(f)) {
			t.Fatalf("%s: the first sync wrote nothing", f)
		}
		if mustSync(t, prog, f, desiredPolicy(f)) {
			t.Errorf("%s: a second sync of the same content wrote again", f)
		}
	}

	// Policy x goes: its chain and the sets only it used; pod a is no
	// longer isolated, and the node has no pods.
	want := desiredPolicy(nft.IPv4)
	delete(want.Chains, "netpol-x-allow")
	delete(want.Chains, "policy-in-a")
	for _, s := range []string{"peers-b", "cidrs-x", "named-port-serve", "policy-self"} {
		delete(want.TypedSets, s)
	}
	want.Maps["policy-ingress-pods"] = map[nft.MapKey]nft.Verdict{}
	mustSync(t, prog, nft.IPv4, want)
	got := fake.Ruleset(nft.IPv4)
	for _, s := range []string{"peers-b", "cidrs-x", "named-port-serve"} {
		if _, ok := got.TypedSets[s]; ok {
			t.Errorf("dynamic set %s left after the last rule using it went", s)
		}
	}
	if self, ok := got.TypedSets["policy-self"]; !ok || len(self.Elems) != 0 {
		t.Errorf("static set policy-self: %v (present: %v), want present and empty", self.Elems, ok)
	}
	if mustSync(t, prog, nft.IPv4, want) {
		t.Error("a second sync after the deletion wrote again")
	}

	// Delete removes the static sets too.
	if err := prog.Delete(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	if got := fake.Ruleset(nft.IPv4); len(got.TypedSets)+len(got.Chains) != 0 {
		t.Errorf("left after Delete:\n%s", got)
	}
}

// TestFakeRefusesTypedSets: what the kernel refuses, the fake refuses, and
// a refused write changes nothing.
func TestFakeRefusesTypedSets(t *testing.T) {
	a := netip.MustParseAddr
	rng := func(from, to string) nft.SetElem { return nft.SetElem{Addr: a(from), End: a(to)} }
	for _, tc := range []struct {
		name   string
		change func(rs *nft.Ruleset)
		err    string
	}{
		{"a lookup in a set no one declared", func(rs *nft.Ruleset) { delete(rs.TypedSets, "peers-b") }, "no set peers-b"},
		{"a lookup of a pair in an address set", func(rs *nft.Ruleset) {
			rs.Chains["netpol-x-allow"] = append(rs.Chains["netpol-x-allow"], nft.Rule{SaddrDaddrSet: "peers-b", Verdict: accept})
		}, "set peers-b holds addr"},
		{"a set of another part", func(rs *nft.Ruleset) { rs.DeclareSet("other-set", nft.SetAddr) }, "not part policy's"},
		{"an element of another family", func(rs *nft.Ruleset) {
			rs.AddTypedElements("peers-b", nft.SetAddr, nft.SetElem{Addr: a("fd00::1")})
		}, "element fd00::1 does not fit a set of addr in family ip"},
		{"an element of another kind", func(rs *nft.Ruleset) {
			rs.AddTypedElements("named-port-serve", nft.SetAddrProtoPort, nft.SetElem{Addr: a("198.19.1.5")})
		}, "does not fit a set of addr . proto . port"},
		{"an unknown protocol", func(rs *nft.Ruleset) {
			rs.AddTypedElements("named-port-serve", nft.SetAddrProtoPort, nft.SetElem{Addr: a("198.19.1.5"), Proto: "dccp", Port: 80})
		}, "does not fit a set of addr . proto . port"},
		{"an empty range", func(rs *nft.Ruleset) { rs.AddTypedElements("cidrs-x", nft.SetInterval, rng("10.9.0.9", "10.9.0.1")) }, "does not fit a set of interval"},
		{"an icmpv6 match in family ip", func(rs *nft.Ruleset) {
			rs.Chains["policy-in-a"] = append(nft.Chain{{Proto: nft.ICMPv6, ICMPv6Type: 135, Verdict: accept}}, rs.Chains["policy-in-a"]...)
		}, "icmpv6 type match needs"},
		{"a port range ending before it starts", func(rs *nft.Ruleset) {
			rs.Chains["netpol-x-allow"][1].DPortEnd = 7999
		}, "port range 8000-7999"},
		{"a map looked up by another key", func(rs *nft.Ruleset) {
			rs.Chains["policy-forward"][5].VMapKey = nft.KeySaddr
		}, "map policy-ingress-pods is keyed by daddr, not saddr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := nft.NewFake()
			prog := fake.For(policyPart)
			want := desiredPolicy(nft.IPv4)
			tc.change(want)
			_, err := nft.Sync(prog, nft.IPv4, want)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
			if got := fake.Ruleset(nft.IPv4); len(got.Chains)+len(got.TypedSets) != 0 {
				t.Errorf("a refused write changed the table:\n%s", got)
			}
		})
	}
}

// TestFakeRefusesOverlappingRanges: two writes whose ranges overlap in one
// interval set (as two fragments might) are refused, as the kernel
// refuses them; the same range again is no change; a range split in one
// write (deleted, then its parts added) is fine.
func TestFakeRefusesOverlappingRanges(t *testing.T) {
	fake := nft.NewFake()
	prog := fake.For(policyPart)
	a := netip.MustParseAddr
	write := func(before, after []nft.SetElem) error {
		b, w := nft.NewRuleset(), nft.NewRuleset()
		if before != nil {
			b.AddTypedElements("cidrs-x", nft.SetInterval, before...)
		}
		w.AddTypedElements("cidrs-x", nft.SetInterval, after...)
		_, err := prog.Apply(nft.IPv4, nft.Diff(nft.DigestOf(b), w), w)
		return err
	}
	first := []nft.SetElem{{Addr: a("10.0.0.0"), End: a("10.0.0.255")}}
	if err := write(nil, first); err != nil {
		t.Fatal(err)
	}
	if err := write(nil, first); err != nil {
		t.Errorf("the same range again: %v", err)
	}
	err := write(nil, []nft.SetElem{{Addr: a("10.0.0.128"), End: a("10.0.1.255")}})
	if err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("an overlapping range: %v", err)
	}
	if err := write(first, []nft.SetElem{{Addr: a("10.0.0.0"), End: a("10.0.0.127")}, {Addr: a("10.0.0.200"), End: a("10.0.0.255")}}); err != nil {
		t.Errorf("a range split: %v", err)
	}
	// Deleting an element that is gone is refused, as by the kernel.
	err = write(first, nil)
	if err == nil || !strings.Contains(err.Error(), "no such element") {
		t.Errorf("deleting a range that is not there: %v", err)
	}
}

// TestFakeCounters: Counters lists the counting rules of a chain with
// their fingerprints; rewriting the chain starts them at zero.
func TestFakeCounters(t *testing.T) {
	fake := nft.NewFake()
	prog := fake.For(policyPart)
	want := desiredPolicy(nft.IPv4)
	mustSync(t, prog, nft.IPv4, want)
	fake.Count(nft.IPv4, "policy-in-a", 2, 3, 180)
	got, err := prog.Counters(nft.IPv4, "policy-in-a")
	if err != nil {
		t.Fatal(err)
	}
	dropFP := nft.Fingerprint(nft.Rule{Counter: true, Verdict: drop}.String())
	invalidFP := nft.Fingerprint(want.Chains["policy-in-a"][0].String())
	if len(got) != 2 || got[0] != (nft.RuleCounter{Index: 0, Fingerprint: invalidFP}) ||
		got[1] != (nft.RuleCounter{Index: 2, Fingerprint: dropFP, Packets: 3, Bytes: 180}) {
		t.Errorf("counters %+v", got)
	}
	want.Chains["policy-in-a"] = append(nft.Chain{{Proto: nft.UDP, Verdict: accept}}, want.Chains["policy-in-a"]...)
	mustSync(t, prog, nft.IPv4, want)
	if got, _ := prog.Counters(nft.IPv4, "policy-in-a"); len(got) != 2 || got[1].Packets != 0 || got[1].Index != 3 {
		t.Errorf("counters after a rewrite %+v", got)
	}
	if _, err := prog.Counters(nft.IPv4, "someone-elses"); err == nil {
		t.Error("counters of another part's chain")
	}
}
