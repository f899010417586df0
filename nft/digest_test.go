package nft

import (
	"net/netip"
	"slices"
	"testing"
)

func elems(es ...SetElem) map[SetElem]bool {
	out := map[SetElem]bool{}
	for _, e := range es {
		out[e] = true
	}
	return out
}

func rng(from, to string) SetElem {
	return SetElem{Addr: netip.MustParseAddr(from), End: netip.MustParseAddr(to)}
}

// TestDigestOfNormalizesRanges: an interval set is compared as disjoint
// ranges, however the ruleset listed them, and addresses unmapped.
func TestDigestOfNormalizesRanges(t *testing.T) {
	rs := NewRuleset()
	rs.AddTypedElements("cidrs", SetInterval, rng("10.0.0.0", "10.0.0.255"), rng("10.0.0.128", "10.0.1.255"), rng("10.0.2.0", "10.0.2.0"))
	rs.AddTypedElements("peers", SetAddr, SetElem{Addr: netip.MustParseAddr("::ffff:198.19.1.5")})
	d := DigestOf(rs)
	if got, want := d.TypedSets["cidrs"].Elems, elems(rng("10.0.0.0", "10.0.2.0")); !maps(got, want) {
		t.Errorf("cidrs digested to %v, want %v", got, want)
	}
	if got := d.TypedSets["peers"].Elems; !got[SetElem{Addr: netip.MustParseAddr("198.19.1.5")}] {
		t.Errorf("peers digested to %v, want the address unmapped", got)
	}
}

func maps(a, b map[SetElem]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// TestDiffTypedSets: what each change of a typed set writes.
func TestDiffTypedSets(t *testing.T) {
	a := netip.MustParseAddr
	cur := NewDigest()
	cur.Chains["policy"] = []string{Fingerprint(Rule{SaddrSet: "peers", Verdict: Verdict{Kind: VerdictAccept}}.String())}
	cur.TypedSets["peers"] = TypedSet{Kind: SetAddr, Elems: elems(SetElem{Addr: a("198.19.1.5")}, SetElem{Addr: a("198.19.1.6")})}
	cur.TypedSets["cidrs"] = TypedSet{Kind: SetInterval, Elems: elems(rng("10.0.0.0", "10.0.0.255"))}
	cur.TypedSets["gone"] = TypedSet{Kind: SetAddrAddr, Elems: elems(SetElem{Addr: a("198.19.1.5"), Addr2: a("198.19.1.5")})}
	cur.TypedSets["broken"] = TypedSet{Kind: SetInterval, Elems: elems(rng("10.9.0.0", "10.9.0.255"))}
	cur.reflush["broken"] = true

	want := NewRuleset()
	want.Chains["policy"] = Chain{{SaddrSet: "peers", Verdict: Verdict{Kind: VerdictAccept}}}
	want.AddTypedElements("peers", SetInterval, rng("198.19.1.0", "198.19.1.255")) // another kind
	want.AddTypedElements("cidrs", SetInterval, rng("10.0.0.0", "10.0.0.127"), rng("10.0.0.200", "10.0.0.255"))
	want.AddTypedElements("new", SetAddrProtoPort, SetElem{Addr: a("198.19.1.5"), Proto: TCP, Port: 80})
	want.AddTypedElements("broken", SetInterval, rng("10.9.0.0", "10.9.0.255"))

	c := Diff(cur, want)
	if !slices.Equal(c.addTyped, []string{"new", "peers"}) || !slices.Equal(c.delTyped, []string{"gone", "peers"}) {
		t.Errorf("add %v, delete %v; want add [new peers] (peers recreated), delete [gone peers]", c.addTyped, c.delTyped)
	}
	if !c.recreated("peers") || c.recreated("gone") {
		t.Error("peers (another kind) is not recreated, or gone is")
	}
	if !slices.Equal(c.writeChains, []string{"policy"}) {
		t.Errorf("chains written %v: a recreated set's user must be rewritten", c.writeChains)
	}
	if !slices.Equal(c.flushTyped, []string{"broken"}) || !slices.Equal(c.addTypedElems["broken"], []SetElem{rng("10.9.0.0", "10.9.0.255")}) {
		t.Errorf("flush %v, broken gets %v: a set read back malformed is emptied and refilled", c.flushTyped, c.addTypedElems["broken"])
	}
	if got := c.delTypedElems["cidrs"]; !slices.Equal(got, []SetElem{rng("10.0.0.0", "10.0.0.255")}) {
		t.Errorf("cidrs deletes %v", got)
	}
	if got := c.addTypedElems["cidrs"]; !slices.Equal(got, []SetElem{rng("10.0.0.0", "10.0.0.127"), rng("10.0.0.200", "10.0.0.255")}) {
		t.Errorf("cidrs adds %v", got)
	}
	if _, ok := c.delTypedElems["peers"]; ok {
		t.Error("a recreated set's old elements are deleted one by one")
	}
	if c.typedKinds["gone"] != SetAddrAddr || c.typedKinds["peers"] != SetInterval {
		t.Errorf("kinds %v", c.typedKinds)
	}
	if n := c.Size(want); n != 14 {
		t.Errorf("size %d, want 14 (5 set operations, 1 chain of 1 rule, 7 elements)", n)
	}

	// The same content again: nothing.
	if c := Diff(DigestOf(want), want); !c.Empty() {
		t.Errorf("a digest differs from its own ruleset: %+v", c)
	}
}

// TestKernelElems: a range is a start element and an end element one past
// it, none at the family's last address; reading back pairs them, and
// anything else is malformed.
func TestKernelElems(t *testing.T) {
	es := []SetElem{rng("10.0.0.0", "10.0.0.255"), rng("198.19.1.8", "255.255.255.255")}
	els := kernelElems(SetInterval, es)
	if len(els) != 3 || !els[1].IntervalEnd || netip.AddrFrom4([4]byte(els[1].Key)) != netip.MustParseAddr("10.0.1.0") || els[2].IntervalEnd {
		t.Fatalf("elements %+v", els)
	}
	// The kernel dumps in its own order.
	slices.Reverse(els)
	got, ok := decodeElems(IPv4, SetInterval, els)
	if !ok || !maps(got, elems(es...)) {
		t.Errorf("read back %v (well formed: %v), want %v", got, ok, es)
	}
	// Two starts in a row, or an end without a start: malformed.
	bad := kernelElems(SetInterval, []SetElem{rng("10.0.0.0", "10.0.0.255")})
	bad[1].IntervalEnd = false
	if _, ok := decodeElems(IPv4, SetInterval, bad); ok {
		t.Error("two starts read back as well formed")
	}
	if _, ok := decodeElems(IPv4, SetInterval, bad[1:2]); !ok {
		t.Error("one start (up to the last address) read back as malformed")
	}
	end := kernelElems(SetInterval, []SetElem{rng("10.0.0.0", "10.0.0.255")})[1:]
	if _, ok := decodeElems(IPv4, SetInterval, end); ok {
		t.Error("an end without a start read back as well formed")
	}

	a := netip.MustParseAddr
	for _, tc := range []struct {
		k SetKind
		f Family
		e SetElem
	}{
		{SetAddr, IPv6, SetElem{Addr: a("fd00::5")}},
		{SetAddrProtoPort, IPv4, SetElem{Addr: a("198.19.1.5"), Proto: SCTP, Port: 9}},
		{SetAddrProtoPort, IPv6, SetElem{Addr: a("fd00::5"), Proto: UDP, Port: 53}},
		{SetAddrAddr, IPv4, SetElem{Addr: a("198.19.1.5"), Addr2: a("198.19.1.6")}},
		{SetAddrAddr, IPv6, SetElem{Addr: a("fd00::5"), Addr2: a("fd00::6")}},
	} {
		got, ok := decodeElems(tc.f, tc.k, kernelElems(tc.k, []SetElem{tc.e}))
		if !ok || !got[tc.e] || len(got) != 1 {
			t.Errorf("%s %s: %s read back as %v", tc.f, tc.k, tc.e, got)
		}
	}
}
