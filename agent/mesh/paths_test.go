package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/agent/paths"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// TestTopologyChoosesPaths: each peer's endpoint and keepalive come from
// the path choice between this node's MeshPeer and the peer's: the private
// address inside this node's location, the public one across, the observed
// one between two NATs, none when relayed, spec.endpoint for a peer
// without a location.
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
		"o3":  {paths.KindRelayed, "", 0}, // by c1, the only node both reach directly
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

// TestTopologyRelays: two offices without a direct path are relayed by a
// cloud node both reach, the same one on both ends (never one labelled
// never, nor one whose Node is not Ready): the relay's entry carries the
// relayed peer's ranges, the relayed peer's entry keeps its key with none,
// and its ranges are still routed through the tunnel. The relay itself
// keeps each office's own ranges on its entry.
func TestTopologyRelays(t *testing.T) {
	withPaths := func(p wgv1.MeshPeer, loc string, relay wgv1.RelayPreference, cands ...string) wgv1.MeshPeer {
		p.Spec.Location, p.Spec.Relay = wgv1.Location(loc), relay
		for i := 0; i+1 < len(cands); i += 2 {
			p.Spec.Candidates = append(p.Spec.Candidates, wgv1.Candidate{Kind: wgv1.CandidateKind(cands[i]), Endpoint: wgv1.Endpoint(cands[i+1])})
		}
		return p
	}
	cloud := func(name string, n byte, relay wgv1.RelayPreference) wgv1.MeshPeer {
		return withPaths(mp(name, name, key(n), "", fmt.Sprintf("198.19.%d.0/24", n)), "cloud", relay,
			"private", fmt.Sprintf("198.18.10.%d:51820", n), "public", fmt.Sprintf("198.18.100.%d:51820", n))
	}
	office := func(name string, n byte) wgv1.MeshPeer {
		return withPaths(mp(name, name, key(n), "", fmt.Sprintf("198.19.%d.0/24", n)), name, "",
			"private", fmt.Sprintf("198.18.%d.1:51820", 20+n))
	}
	pods := func(n int) []netip.Prefix {
		return []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", n))}
	}
	topo := func(self string, n int, peers []wgv1.MeshPeer) Topology {
		t.Helper()
		got := New(Input{NodeName: self, PublicKey: key(byte(n)), PodCIDRs: pods(n), Peers: peers})
		if len(got.Problems) != 0 {
			t.Fatalf("%s: problems %+v", self, got.Problems)
		}
		return got
	}
	peerOf := func(topo Topology, name string) Peer {
		for _, p := range topo.Peers {
			if p.Name == name {
				return p
			}
		}
		t.Fatalf("no peer %s in %+v", name, topo.Peers)
		return Peer{}
	}
	notReady := cloud("r3", 3, wgv1.RelayPrefer)
	notReady.Status.Conditions = []metav1.Condition{{Type: wgv1.ConditionNodeNotReady, Status: metav1.ConditionTrue}}
	peers := []wgv1.MeshPeer{office("c", 5), office("d", 6), cloud("r1", 1, ""), cloud("r2", 2, ""), notReady,
		cloud("r4", 4, wgv1.RelayNever)}

	onC, onD := topo("c", 5, peers), topo("d", 6, peers)
	cd, dc := peerOf(onC, "d"), peerOf(onD, "c")
	if cd.Path != paths.KindRelayed || dc.Path != paths.KindRelayed || cd.Relay != dc.Relay || (cd.Relay != "r1" && cd.Relay != "r2") {
		t.Fatalf("c-d: %+v / %+v, want relayed by r1 or r2 on both ends", cd, dc)
	}
	r := cd.Relay
	if len(cd.WireGuardAllowedIPs()) != 0 || cd.Endpoint != "" || cd.Keepalive != 0 || !slices.Equal(cd.AllowedIPs, pods(6)) {
		t.Errorf("c's entry for d: %+v, want its key only (no AllowedIPs, endpoint or keepalive), its ranges kept for routes", cd)
	}
	rel := peerOf(onC, r)
	if want := append(pods(int(r[1]-'0')), pods(6)...); !slices.Equal(rel.WireGuardAllowedIPs(), want) || !slices.Equal(rel.RelayFor, []string{"d"}) {
		t.Errorf("c's entry for relay %s: allowed %v for %v, want %v for d", r, rel.WireGuardAllowedIPs(), rel.RelayFor, want)
	}
	if !slices.ContainsFunc(onC.Routes, func(rt Route) bool { return rt.Dst == pods(6)[0] }) {
		t.Errorf("c has no route to d's pods: %+v", onC.Routes)
	}
	onR := topo(r, int(r[1]-'0'), peers)
	for _, n := range []string{"c", "d"} {
		if p := peerOf(onR, n); p.Path != paths.KindPublic || len(p.RelayFor) != 0 || !slices.Equal(p.WireGuardAllowedIPs(), p.AllowedIPs) {
			t.Errorf("relay %s's entry for %s: %+v, want its own ranges on the public path", r, n, p)
		}
	}

	// The relay goes: the pair moves to the other cloud node.
	var rest []wgv1.MeshPeer
	for _, p := range peers {
		if p.Name != r {
			rest = append(rest, p)
		}
	}
	if cd, dc := peerOf(topo("c", 5, rest), "d"), peerOf(topo("d", 6, rest), "c"); cd.Relay == r || cd.Relay == "" || cd.Relay != dc.Relay {
		t.Errorf("without %s: c-d relayed by %q / %q, want the other cloud node on both ends", r, cd.Relay, dc.Relay)
	}
	// None left: relay-needed, saying so.
	var none []wgv1.MeshPeer
	for _, p := range peers {
		if p.Name != "r1" && p.Name != "r2" {
			none = append(none, p)
		}
	}
	if cd := peerOf(topo("c", 5, none), "d"); cd.Path != paths.KindRelayNeeded || !strings.Contains(cd.PathReason, "no node can relay") {
		t.Errorf("no relay left: %+v, want relay-needed saying no node can relay", cd)
	}
}

// TestTopologyPunchedWaitsOnRelay: two offices with observed endpoints
// (punched) stay on their relay, punching in the background (observed
// endpoint and keepalive on the peer's entry, its ranges on the relay's),
// until WireGuard has a session with the peer; then they go direct. Without
// a relay they punch as before.
func TestTopologyPunchedWaitsOnRelay(t *testing.T) {
	withPaths := func(p wgv1.MeshPeer, loc string, cands ...string) wgv1.MeshPeer {
		p.Spec.Location = wgv1.Location(loc)
		for i := 0; i+1 < len(cands); i += 2 {
			p.Spec.Candidates = append(p.Spec.Candidates, wgv1.Candidate{Kind: wgv1.CandidateKind(cands[i]), Endpoint: wgv1.Endpoint(cands[i+1])})
		}
		return p
	}
	peers := []wgv1.MeshPeer{
		withPaths(mp("c", "c", key(5), "", "198.19.5.0/24"), "office-1", "private", "198.18.21.1:51820", "observed", "198.18.100.21:40001"),
		withPaths(mp("d", "d", key(6), "", "198.19.6.0/24"), "office-2", "private", "198.18.22.1:51820", "observed", "198.18.100.22:40002"),
		withPaths(mp("r", "r", key(1), "", "198.19.1.0/24"), "cloud", "public", "198.18.100.1:51820"),
	}
	connected := map[string]bool{"r": true}
	in := Input{NodeName: "c", PublicKey: key(5), PodCIDRs: pfx("198.19.5.0/24"), Peers: peers,
		Connected: func(name string) bool { return connected[name] }}
	peer := func(topo Topology, name string) Peer {
		for _, p := range topo.Peers {
			if p.Name == name {
				return p
			}
		}
		t.Fatalf("no peer %s", name)
		return Peer{}
	}
	topo := New(in)
	d, r := peer(topo, "d"), peer(topo, "r")
	if d.Path != paths.KindRelayed || d.Relay != "r" || d.Endpoint != "198.18.100.22:40002" || d.Keepalive != paths.PunchKeepalive ||
		len(d.WireGuardAllowedIPs()) != 0 || !slices.Equal(r.WireGuardAllowedIPs(), pfx("198.19.1.0/24", "198.19.6.0/24")) {
		t.Errorf("before a handshake: d %+v, r allowed %v; want d relayed by r, punching at its observed endpoint", d, r.WireGuardAllowedIPs())
	}
	connected["d"] = true
	topo = New(in)
	if d, r := peer(topo, "d"), peer(topo, "r"); d.Path != paths.KindPunched || d.Relay != "" || !slices.Equal(d.WireGuardAllowedIPs(), pfx("198.19.6.0/24")) ||
		!slices.Equal(r.WireGuardAllowedIPs(), pfx("198.19.1.0/24")) {
		t.Errorf("after the handshake: d %+v, r allowed %v; want d punched and direct", d, r.WireGuardAllowedIPs())
	}
	connected["d"] = false
	in.Peers = peers[:2]
	if d := peer(New(in), "d"); d.Path != paths.KindPunched || d.Endpoint != "198.18.100.22:40002" {
		t.Errorf("no relay: d %+v, want punched", d)
	}
}
