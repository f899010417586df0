package paths

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// relaySites: two offices without any way to each other (office3 has no
// observed endpoint), two cloud nodes that both reach, one office node that
// reaches neither.
func relaySites() []Node {
	return []Node{
		{Name: "c", Peer: office1}, {Name: "d", Peer: office3},
		{Name: "r1", Peer: cloudA1}, {Name: "r2", Peer: cloudB},
		{Name: "o2", Peer: office2},
	}
}

func TestChooseRelay(t *testing.T) {
	if k := Choose(office1, office3).Kind; k != KindRelayNeeded {
		t.Fatalf("office1-office3: %s, want relay-needed", k)
	}
	with := func(ns []Node, name string, pref wgv1.RelayPreference) []Node {
		ns = slices.Clone(ns)
		for i := range ns {
			if ns[i].Name == name {
				ns[i].Relay = pref
			}
		}
		return ns
	}
	without := func(ns []Node, names ...string) []Node {
		return slices.DeleteFunc(slices.Clone(ns), func(n Node) bool { return slices.Contains(names, n.Name) })
	}
	base, _ := ChooseRelay("c", "d", relaySites())
	other := map[string]string{"r1": "r2", "r2": "r1"}[base]
	if other == "" {
		t.Fatalf("relay %q, want r1 or r2 (o2 reaches neither office directly)", base)
	}
	for _, tc := range []struct {
		name  string
		nodes []Node
		want  string
	}{
		{"the other one preferred", with(relaySites(), other, wgv1.RelayPrefer), other},
		{"the hash's choice forbidden", with(relaySites(), base, wgv1.RelayNever), other},
		{"both preferred: the hash decides", with(with(relaySites(), "r1", wgv1.RelayPrefer), "r2", wgv1.RelayPrefer), base},
		{"the hash's choice gone", without(relaySites(), base), other},
		{"both gone: no relay", without(relaySites(), "r1", "r2"), ""},
		{"both forbidden: no relay", with(with(relaySites(), "r1", wgv1.RelayNever), "r2", wgv1.RelayNever), ""},
		{"an end unknown", without(relaySites(), "d"), ""},
	} {
		got, ok := ChooseRelay("c", "d", tc.nodes)
		back, _ := ChooseRelay("d", "c", tc.nodes)
		if got != tc.want || ok != (tc.want != "") || back != got {
			t.Errorf("%s: %q (%v), from the other side %q, want %q", tc.name, got, ok, back, tc.want)
		}
	}
}

// TestChooseRelaySpreads: many pairs over many equal relays do not all
// land on one.
func TestChooseRelaySpreads(t *testing.T) {
	nodes := []Node{}
	for i := range 4 {
		nodes = append(nodes, Node{Name: fmt.Sprintf("cloud-%d", i), Peer: Peer{Location: "cloud-a",
			Candidates: []wgv1.Candidate{c("public", fmt.Sprintf("198.18.100.%d:51820", i+1))}}})
	}
	for i := range 20 {
		nodes = append(nodes, Node{Name: fmt.Sprintf("office-%d", i), Peer: Peer{Location: fmt.Sprintf("office-%d", i),
			Candidates: []wgv1.Candidate{c("private", fmt.Sprintf("198.18.%d.1:51820", 20+i))}}})
	}
	load := map[string]int{}
	for i := range 20 {
		for j := i + 1; j < 20; j++ {
			r, ok := ChooseRelay(fmt.Sprintf("office-%d", i), fmt.Sprintf("office-%d", j), nodes)
			if !ok {
				t.Fatalf("office-%d/office-%d: no relay", i, j)
			}
			load[r]++
		}
	}
	for i := range 4 {
		if n := load[fmt.Sprintf("cloud-%d", i)]; n < 190/4/2 {
			t.Errorf("relay load %v: cloud-%d carries %d of 190 pairs", load, i, n)
		}
	}
}

// FuzzChooseRelay checks ChooseRelay's invariants on random populations:
// both ends pick the same relay, whatever the order of the nodes; the relay
// is neither end, not forbidden, and has a direct path to both; a
// preferring relay is chosen when one qualifies; no relay only when no node
// qualifies.
func FuzzChooseRelay(f *testing.F) {
	f.Add([]byte{1, 0, 0, 1, 5}, []byte{2, 0, 3}, []byte{1, 1, 5, 0, 0}, uint8(3), uint8(0))
	f.Add([]byte{3, 0, 4}, []byte{2, 0, 3}, []byte{2, 1, 6}, uint8(9), uint8(1))
	f.Fuzz(func(t *testing.T, a, b, rs []byte, n, seed uint8) {
		nodes := []Node{{Name: "a", Peer: fuzzPeer(a)}, {Name: "b", Peer: fuzzPeer(b)}}
		r := rand.New(rand.NewPCG(uint64(seed), uint64(n)))
		for i := range int(n % 8) {
			p := slices.Clone(rs)
			if len(p) > 0 {
				p[0] += byte(i)
			}
			if len(p) > 2 {
				p[2] += byte(r.IntN(len(fuzzEndpoints)))
			}
			nodes = append(nodes, Node{Name: fmt.Sprintf("r%d", i), Peer: fuzzPeer(p),
				Relay: []wgv1.RelayPreference{"", wgv1.RelayPrefer, wgv1.RelayNever}[r.IntN(3)]})
		}
		checkRelay(t, nodes, r)
	})
}

func checkRelay(t *testing.T, nodes []Node, r *rand.Rand) {
	t.Helper()
	got, ok := ChooseRelay("a", "b", nodes)
	shuffled := slices.Clone(nodes)
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if back, _ := ChooseRelay("b", "a", shuffled); back != got {
		t.Fatalf("a chooses %q, b chooses %q among %+v", got, back, nodes)
	}
	qualifies := func(n Node) bool {
		return n.Name != "a" && n.Name != "b" && n.Relay != wgv1.RelayNever &&
			Direct(Choose(n.Peer, nodes[0].Peer).Kind) && Direct(Choose(n.Peer, nodes[1].Peer).Kind)
	}
	anyPrefer := slices.ContainsFunc(nodes, func(n Node) bool { return qualifies(n) && n.Relay == wgv1.RelayPrefer })
	if !ok {
		if got != "" || slices.ContainsFunc(nodes, qualifies) {
			t.Fatalf("no relay (%q) although one qualifies among %+v", got, nodes)
		}
		return
	}
	i := slices.IndexFunc(nodes, func(n Node) bool { return n.Name == got })
	if i < 0 || !qualifies(nodes[i]) {
		t.Fatalf("relay %q does not qualify among %+v", got, nodes)
	}
	if anyPrefer && nodes[i].Relay != wgv1.RelayPrefer {
		t.Fatalf("relay %q does not prefer relaying although one that does qualifies: %+v", got, nodes)
	}
	// Both directions of every path the relay uses agree (Choose's
	// symmetry): the relay sees the same direct paths the ends do.
	for _, end := range nodes[:2] {
		if k := Choose(end.Peer, nodes[i].Peer).Kind; !Direct(k) {
			t.Fatalf("end %+v reaches relay %q by %s", end, got, k)
		}
	}
}

// TestChooseRelayRandom runs a fixed random set of populations, a quick
// stand-in for the fuzzer in plain go test runs.
func TestChooseRelayRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	peer := func() Peer {
		b := make([]byte, 1+2*r.IntN(5))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return fuzzPeer(b)
	}
	found := 0
	for range 2000 {
		nodes := []Node{{Name: "a", Peer: peer()}, {Name: "b", Peer: peer()}}
		for i := range r.IntN(6) {
			nodes = append(nodes, Node{Name: fmt.Sprintf("r%d", i), Peer: peer(),
				Relay: []wgv1.RelayPreference{"", wgv1.RelayPrefer, wgv1.RelayNever}[r.IntN(3)]})
		}
		checkRelay(t, nodes, r)
		if _, ok := ChooseRelay("a", "b", nodes); ok {
			found++
		}
	}
	if found == 0 {
		t.Fatal("no population had a relay: the test covers nothing")
	}
	t.Logf("%d of 2000 populations had a relay", found)
}
