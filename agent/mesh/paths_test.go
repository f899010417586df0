package mesh

import (
	"net/netip"
	"testing"

	"github.com/wgmesh/wgmesh/agent/paths"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// TestTopologyChoosesPaths: each peer's endpoint and keepalive come from
// the path choice between this node's MeshPeer and the peer's: the private
// address inside this node's location, the public one across, the observed
// one between two NATs, none when a relay is needed, spec.endpoint for a
// peer without a location.
func TestTopologyChoosesPaths(t *testing.T) {
	withPaths := func(p wgv1.MeshPeer, loc string, cands ...string) wgv1.MeshPeer {
		p.Spec.Location = wgv1.Location(loc)
		for i := 0; i+1 < len(cands); i += 2 {
			p.Spec.Candidates = append(p.Spec.Candidates, wgv1.Candidate{Kind: wgv1.CandidateKind(cands[i]), Endpoint: wgv1.Endpoint(cands[i+1])})
		}
		return p
	}
	self := withPaths(mp("o1", "o1", key(1), "198.18.20.1:51820", "198.19.1.0/24"), "office-1",
		"private", "198.18.20.1:51820", "observed", "198.18.100.20:40001")
	peers := []wgv1.MeshPeer{self,
		withPaths(mp("o1b", "o1b", key(2), "198.18.20.2:51820", "198.19.2.0/24"), "office-1", "private", "198.18.20.2:51820"),
		withPaths(mp("c1", "c1", key(3), "198.18.10.1:51820", "198.19.3.0/24"), "cloud-a", "private", "198.18.10.1:51820", "public", "198.18.100.1:51820"),
		withPaths(mp("o2", "o2", key(4), "198.18.21.1:51820", "198.19.4.0/24"), "office-2", "private", "198.18.21.1:51820", "observed", "198.18.100.21:40002"),
		withPaths(mp("o3", "o3", key(5), "198.18.22.1:51820", "198.19.5.0/24"), "office-3", "private", "198.18.22.1:51820"),
		mp("old", "old", key(6), "198.18.0.6:51820", "198.19.6.0/24"),
	}
	topo := New(Input{NodeName: "o1", PublicKey: key(1), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}, Peers: peers})
	want := map[string]struct {
		path      paths.Kind
		endpoint  string
		keepalive int32
	}{
		"o1b": {paths.KindPrivate, "198.18.20.2:51820", 0},
		"c1":  {paths.KindPublic, "198.18.100.1:51820", paths.PunchKeepalive},
		"o2":  {paths.KindPunched, "198.18.100.21:40002", paths.PunchKeepalive},
		"o3":  {paths.KindRelayNeeded, "", 0},
		"old": {paths.KindEndpoint, "198.18.0.6:51820", 0},
	}
	if len(topo.Peers) != len(want) || len(topo.Problems) != 0 {
		t.Fatalf("peers %+v, problems %+v", topo.Peers, topo.Problems)
	}
	for _, p := range topo.Peers {
		w := want[p.Name]
		if p.Path != w.path || p.Endpoint != w.endpoint || p.Keepalive != w.keepalive {
			t.Errorf("peer %s: path %s endpoint %q keepalive %d, want %s %q %d", p.Name, p.Path, p.Endpoint, p.Keepalive, w.path, w.endpoint, w.keepalive)
		}
	}
}

// TestObservedEndpointsProtectNothing: an observed candidate is other
// nodes' word, so it keeps no external peer out (one lying agent would
// evict it); a punched path to an address that an external peer routes is
// given up (relay-needed) instead of looping WireGuard into the tunnel.
func TestObservedEndpointsProtectNothing(t *testing.T) {
	withPaths := func(p wgv1.MeshPeer, loc string, cands ...string) wgv1.MeshPeer {
		p.Spec.Location = wgv1.Location(loc)
		for i := 0; i+1 < len(cands); i += 2 {
			p.Spec.Candidates = append(p.Spec.Candidates, wgv1.Candidate{Kind: wgv1.CandidateKind(cands[i]), Endpoint: wgv1.Endpoint(cands[i+1])})
		}
		return p
	}
	peers := []wgv1.MeshPeer{
		withPaths(mp("o1", "o1", key(1), "", "198.19.1.0/24"), "office-1", "private", "198.18.20.1:51820", "observed", "198.18.100.20:40001"),
		withPaths(mp("o2", "o2", key(2), "", "198.19.2.0/24"), "office-2", "private", "198.18.21.1:51820", "observed", "198.18.200.7:40002"),
		mp("laptop", "", key(3), "", "198.18.200.7/32"),
	}
	topo := New(Input{NodeName: "o1", PublicKey: key(1), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}, Peers: peers})
	if len(topo.Peers) != 2 || len(topo.Problems) != 0 {
		t.Fatalf("the external peer must stay: peers %+v, problems %+v", topo.Peers, topo.Problems)
	}
	for _, p := range topo.Peers {
		if p.Name == "o2" && (p.Path != paths.KindRelayNeeded || p.Endpoint != "" || p.PathReason == "") {
			t.Errorf("o2 punched at an address the laptop routes: %+v", p)
		}
	}
}
