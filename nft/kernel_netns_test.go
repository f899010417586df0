package nft_test

import (
	"net/netip"
	"os"
	"testing"

	"github.com/google/nftables"

	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
)

// Two parts of one table, as the agent's writers share it.
var (
	partA = &nft.Part{Name: "a", BaseChains: []nft.BaseChain{{Name: "a-forward", Hook: nft.HookForward, Priority: nft.PriorityFilter}},
		Maps: map[string]nft.KeyKind{"a-map": nft.KeyAddrProtoPort}, Sets: []string{"a-set"}, ChainPrefixes: []string{"a-"}}
	partB = &nft.Part{Name: "b", BaseChains: []nft.BaseChain{{Name: "b-post", NAT: true, Hook: nft.HookPostrouting, Priority: nft.PrioritySNAT}}}
)

func desiredA() *nft.Ruleset {
	rs := partA.Skeleton()
	rs.Chains["a-forward"] = nft.Chain{{DaddrSet: "a-set", Counter: true, Verdict: nft.Verdict{Kind: nft.VerdictDrop}},
		{VMap: "a-map", VMapKey: nft.KeyAddrProtoPort}}
	rs.Chains["a-svc"] = nft.Chain{{Saddr: netip.MustParsePrefix("198.19.1.0/24"), Verdict: nft.Verdict{Kind: nft.VerdictAccept}}}
	rs.AddSetElement("a-set", netip.MustParseAddr("198.19.9.9"))
	rs.AddElement("a-map", nft.MapKey{Addr: netip.MustParseAddr("198.18.128.10"), Proto: nft.TCP, Port: 80}, nft.Goto("a-svc"))
	return rs
}

func desiredB() *nft.Ruleset {
	rs := partB.Skeleton()
	rs.Chains["b-post"] = nft.Chain{{OIFName: "wgmesh0", Verdict: nft.Verdict{Kind: nft.VerdictReturn}},
		{Saddr: netip.MustParsePrefix("198.19.1.0/24"), Counter: true, Masquerade: true}}
	return rs
}

// TestKernelParts: two parts write one table without touching each other,
// read back what they wrote (no difference, so no write), repair a base
// chain hooked otherwise behind their back, and DeleteTable removes all.
func TestKernelParts(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-nft-parts")
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	a := &nft.Kernel{Part: partA, NetNSFd: fd}
	b := &nft.Kernel{Part: partB, NetNSFd: fd}
	sync := func(k *nft.Kernel, want *nft.Ruleset) bool {
		t.Helper()
		if err := k.EnsureSkeleton(nft.IPv4); err != nil {
			t.Fatal(err)
		}
		wrote, err := nft.Sync(k, nft.IPv4, want)
		if err != nil {
			t.Fatalf("part %s: %v", k.Part.Name, err)
		}
		return wrote
	}
	if !sync(a, desiredA()) || !sync(b, desiredB()) {
		t.Fatal("first sync wrote nothing")
	}
	if sync(a, desiredA()) || sync(b, desiredB()) {
		t.Error("a second sync of the same content wrote again: the read-back differs from the desired digest")
	}
	// Part a's content, read back, is exactly what it wrote; b's chain is
	// not in it.
	got, err := a.Read(nft.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if ch := nft.Diff(got, desiredA()); !ch.Empty() {
		t.Errorf("part a read back differs: %+v", ch)
	}
	if _, ok := got.Chains["b-post"]; ok {
		t.Error("part a reads part b's chain")
	}

	// Someone re-creates b's base chain at another priority.
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: nft.Table, Family: nftables.TableFamilyIPv4}
	ch := &nftables.Chain{Name: "b-post", Table: tbl}
	conn.FlushChain(ch)
	conn.DelChain(ch)
	prio := nftables.ChainPriority(50)
	conn.AddChain(&nftables.Chain{Name: "b-post", Table: tbl, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: &prio})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if !sync(b, desiredB()) {
		t.Fatal("a base chain hooked at another priority was not repaired")
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chains {
		if c.Name == "b-post" && (c.Priority == nil || *c.Priority != nftables.ChainPriority(nft.PrioritySNAT)) {
			t.Errorf("b-post priority %v after repair, want %d", c.Priority, nft.PrioritySNAT)
		}
	}
	if sync(a, desiredA()) {
		t.Error("b's repair touched part a")
	}

	// Delete of one part leaves the other.
	if err := b.Delete(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Read(nft.IPv4); nft.Diff(got, desiredA()).Empty() == false {
		t.Error("deleting part b changed part a")
	}
	if err := nft.DeleteTable(fd); err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == nft.Table {
			t.Errorf("table %s left after DeleteTable", nft.Table)
		}
	}
}

// TestFakeRefusesWhatTheKernelRefuses: a jump to a chain no one created is
// an error in the fake as in the kernel, and leaves the table unchanged.
func TestFakeRefusesWhatTheKernelRefuses(t *testing.T) {
	fake := nft.NewFake()
	p := fake.For(partB)
	want := desiredB()
	want.Chains["b-post"] = append(want.Chains["b-post"], nft.Rule{Verdict: nft.Jump("nowhere")})
	if _, err := nft.Sync(p, nft.IPv4, want); err == nil {
		t.Fatal("a jump to a missing chain was accepted")
	}
	if got := fake.Ruleset(nft.IPv4).Chains["b-post"]; got != nil {
		t.Errorf("a refused write changed the table: %v", got)
	}
}

// TestKernelStaleWantedAgain: a chain one write dropped (stale, deleted
// with the next write) that a full sync wants again, unchanged, is live
// again: the full sync writes its map element back and must not delete it.
func TestKernelStaleWantedAgain(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-nft-stale")
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k := &nft.Kernel{Part: partA, NetNSFd: int(f.Fd())}
	if err := k.EnsureSkeleton(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	full := desiredA()
	if _, err := nft.Sync(k, nft.IPv4, full); err != nil {
		t.Fatal(err)
	}
	// A partial write drops the service: its chain and map element.
	before, after := nft.NewRuleset(), nft.NewRuleset()
	before.Chains["a-svc"] = full.Chains["a-svc"]
	for key, v := range full.Maps["a-map"] {
		before.AddElement("a-map", key, v)
	}
	if _, err := k.Apply(nft.IPv4, nft.Diff(nft.DigestOf(before), after), after); err != nil {
		t.Fatal(err)
	}
	if !k.HasStale() {
		t.Fatal("the dropped chain is not stale")
	}
	// A full sync wants it back before the stale write.
	if _, err := nft.Sync(k, nft.IPv4, full); err != nil {
		t.Fatalf("full sync of a stale chain wanted again: %v", err)
	}
	if err := k.FlushStale(); err != nil {
		t.Fatal(err)
	}
	got, err := k.Read(nft.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if ch := nft.Diff(got, full); !ch.Empty() {
		t.Errorf("read back differs: %+v", ch)
	}
	if err := nft.DeleteTable(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
}
