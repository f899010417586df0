package paths

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// fuzzEndpoints are what random candidates draw from: two clouds' and two
// offices' private addresses, public ones, NAT mappings, IPv6, a DNS name,
// and collisions between kinds.
var fuzzEndpoints = []string{
	"198.18.10.1:51820", "198.18.10.2:51820", "198.18.11.1:51820", "198.18.20.1:51820", "198.18.21.1:51820",
	"198.18.100.1:51820", "198.18.100.2:51820", "198.18.100.20:40001", "198.18.100.21:40002",
	"[2001:db8:10::1]:51820", "[2001:db8:100::1]:51820", "[2001:db8:100::20]:40001", "gw.example.org:51820", "bad",
}

var fuzzLocations = []string{"", "cloud-a", "cloud-b", "office-1"}

var fuzzKinds = []wgv1.CandidateKind{wgv1.CandidatePrivate, wgv1.CandidatePublic, wgv1.CandidateObserved}

// fuzzPeer decodes bytes into a Peer: a location, then candidates two bytes
// each (a kind and an endpoint).
func fuzzPeer(data []byte) Peer {
	var p Peer
	if len(data) == 0 {
		return p
	}
	p.Location = fuzzLocations[int(data[0])%len(fuzzLocations)]
	p.Endpoint = fuzzEndpoints[int(data[0])%5]
	for i := 1; i+2 <= len(data) && len(p.Candidates) < 16; i += 2 {
		p.Candidates = append(p.Candidates, wgv1.Candidate{Kind: fuzzKinds[int(data[i])%len(fuzzKinds)],
			Endpoint: wgv1.Endpoint(fuzzEndpoints[int(data[i+1])%len(fuzzEndpoints)])})
	}
	return p
}

// FuzzChoose checks Choose's invariants on random pairs: both sides agree
// on the kind; a private candidate is chosen only inside one location, and
// across locations no address of the remote's private candidates is used;
// the endpoint is one of the remote's candidates of the kind chosen (or
// spec.endpoint, or none); punched paths keep alive on both sides; the
// candidates' order does not matter.
func FuzzChoose(f *testing.F) {
	f.Add([]byte{1, 0, 0, 1, 5}, []byte{1, 0, 1, 1, 6})
	f.Add([]byte{2, 0, 3, 2, 7}, []byte{3, 0, 4, 2, 8})
	f.Add([]byte{0, 0, 0}, []byte{1, 1, 5})
	f.Add([]byte{1, 0, 9, 2, 11}, []byte{2, 1, 12, 2, 7})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		pa, pb := fuzzPeer(a), fuzzPeer(b)
		ab, ba := Choose(pa, pb), Choose(pb, pa)
		if ab.Kind != ba.Kind {
			t.Fatalf("asymmetric: %+v -> %+v is %s, back %s", pa, pb, ab.Kind, ba.Kind)
		}
		for _, x := range []struct {
			local, remote Peer
			p             Path
		}{{pa, pb, ab}, {pb, pa, ba}} {
			checkPath(t, x.local, x.remote, x.p)
			shuffled := x.remote
			shuffled.Candidates = slices.Clone(x.remote.Candidates)
			r := rand.New(rand.NewPCG(uint64(len(a)), uint64(len(b))))
			r.Shuffle(len(shuffled.Candidates), func(i, j int) {
				shuffled.Candidates[i], shuffled.Candidates[j] = shuffled.Candidates[j], shuffled.Candidates[i]
			})
			if got := Choose(x.local, shuffled); got != x.p {
				t.Fatalf("order matters: %+v with %v, %+v with %v", x.p, x.remote.Candidates, got, shuffled.Candidates)
			}
		}
	})
}

func checkPath(t *testing.T, local, remote Peer, p Path) {
	t.Helper()
	kindOf := map[string][]wgv1.CandidateKind{}
	var privateHosts []string
	for _, c := range remote.Candidates {
		hp, err := wgv1.ParseCandidate(c)
		if err != nil {
			continue
		}
		kindOf[hp.String()] = append(kindOf[hp.String()], c.Kind)
		if c.Kind == wgv1.CandidatePrivate {
			privateHosts = append(privateHosts, hp.Host)
		}
	}
	want := map[Kind]wgv1.CandidateKind{KindPrivate: wgv1.CandidatePrivate, KindPublic: wgv1.CandidatePublic, KindPunched: wgv1.CandidateObserved}
	switch p.Kind {
	case KindEndpoint:
		if p.Endpoint != remote.Endpoint {
			t.Fatalf("%+v: endpoint path to %q, not spec.endpoint %q", p, p.Endpoint, remote.Endpoint)
		}
		if local.Location != "" && remote.Location != "" && len(validCandidates(local)) > 0 && len(validCandidates(remote)) > 0 {
			t.Fatalf("%+v: spec.endpoint used although both have locations and candidates", p)
		}
		return
	case KindPrivate:
		if local.Location == "" || local.Location != remote.Location {
			t.Fatalf("private path across locations %q and %q: %+v", local.Location, remote.Location, p)
		}
	case KindRelayNeeded, KindPublic, KindPunched:
		if p.Endpoint != "" {
			hp, _ := wgv1.ParseEndpoint(p.Endpoint, true)
			if slices.Contains(privateHosts, hp.Host) {
				t.Fatalf("%+v uses %s, a private address of the peer (locations %q, %q)", p, p.Endpoint, local.Location, remote.Location)
			}
		}
	default:
		t.Fatalf("unknown kind %q", p.Kind)
	}
	if p.Kind == KindRelayNeeded {
		if p.Endpoint != "" || p.Reason == "" {
			t.Fatalf("relay-needed with an endpoint or no reason: %+v", p)
		}
		return
	}
	if p.Kind == KindPunched && (!p.Keepalive || p.Endpoint == "") {
		t.Fatalf("punched without an endpoint and keepalive: %+v", p)
	}
	if p.Endpoint == "" {
		if p.Kind != KindPublic || p.Keepalive {
			t.Fatalf("no endpoint on a %s path, or keepalive to no endpoint: %+v", p.Kind, p)
		}
		if Choose(remote, local).Endpoint == "" {
			t.Fatalf("neither side of a public path sends first: %+v / %+v", local, remote)
		}
		return
	}
	if !slices.Contains(kindOf[p.Endpoint], want[p.Kind]) {
		t.Fatalf("%+v: %s is not a %s candidate of the peer (%v)", p, p.Endpoint, want[p.Kind], remote.Candidates)
	}
}

func validCandidates(p Peer) []wgv1.Candidate {
	var out []wgv1.Candidate
	for _, c := range p.Candidates {
		if _, err := wgv1.ParseCandidate(c); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// TestChooseAllPairsAgree runs every pair of a fixed random population, a
// quick stand-in for the fuzzer in plain go test runs.
func TestChooseAllPairsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var peers []Peer
	for range 200 {
		b := make([]byte, 1+2*r.IntN(6))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		peers = append(peers, fuzzPeer(b))
	}
	counts := map[Kind]int{}
	for _, a := range peers {
		for _, b := range peers {
			ab, ba := Choose(a, b), Choose(b, a)
			if ab.Kind != ba.Kind {
				t.Fatalf("asymmetric: %+v / %+v: %s vs %s", a, b, ab.Kind, ba.Kind)
			}
			checkPath(t, a, b, ab)
			counts[ab.Kind]++
		}
	}
	for _, k := range Kinds {
		if counts[k] == 0 && k != KindRelayed {
			t.Errorf("no pair chose %s: the population does not cover the rule table (%v)", k, counts)
		}
	}
	t.Log(fmt.Sprint(counts))
}
