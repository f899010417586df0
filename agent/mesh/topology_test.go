package mesh

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// key returns a deterministic valid key for test peer n.
func key(n byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = n
	}
	return k
}

func mp(name, node string, k wgtypes.Key, ep string, allowed ...string) wgv1.MeshPeer {
	p := wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: wgv1.MeshPeerSpec{
		NodeName: node, PublicKey: wgv1.PublicKey(k.String()), Endpoint: wgv1.Endpoint(ep)}}
	for _, a := range allowed {
		p.Spec.AllowedIPs = append(p.Spec.AllowedIPs, wgv1.CIDR(a))
	}
	return p
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func names(ps []Peer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func problems(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s %s %s %s", p.Peer, p.Field, p.Value, p.Reason))
	}
	return out
}

func routes(rs []Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s src %s", r.Dst, r.Src))
	}
	return out
}

func TestNew(t *testing.T) {
	excluded := mp("n5", "n5", key(5), "198.18.0.15:51820", "198.19.5.0/24")
	excluded.Status.Conditions = []metav1.Condition{{Type: wgv1.ConditionKeyConflict, Status: metav1.ConditionTrue}}
	keepalive := int32(25)
	withKA := mp("n3", "n3", key(3), "", "198.19.3.0/24", "2001:db8:100:3::/64")
	withKA.Spec.PersistentKeepalive = &keepalive

	self := Input{NodeName: "n1", PublicKey: key(1), PodCIDRs: pfx("198.19.1.0/24", "2001:db8:100:1::/64")}
	tests := []struct {
		name         string
		peers        []wgv1.MeshPeer
		wantPeers    []string
		wantRoutes   []string
		wantProblems []string
	}{
		{
			name:      "own peer skipped, dual-stack routes with family-matched src, sorted",
			peers:     []wgv1.MeshPeer{withKA, mp("n1", "n1", key(1), "198.18.0.11:51820", "198.19.1.0/24"), mp("n2", "n2", key(2), "198.18.0.12:51820", "198.19.2.0/24")},
			wantPeers: []string{"n2", "n3"},
			wantRoutes: []string{
				"198.19.2.0/24 src 198.19.1.1",
				"198.19.3.0/24 src 198.19.1.1",
				"2001:db8:100:3::/64 src 2001:db8:100:1::1",
			},
		},
		{
			name:      "excluded by operator condition is skipped silently",
			peers:     []wgv1.MeshPeer{excluded, mp("n2", "n2", key(2), "198.18.0.12:51820", "198.19.2.0/24")},
			wantPeers: []string{"n2"}, wantRoutes: []string{"198.19.2.0/24 src 198.19.1.1"},
		},
		{
			name:         "bad endpoint reported, others kept",
			peers:        []wgv1.MeshPeer{mp("ext", "", key(9), "nohostport", "198.18.200.0/24"), mp("n2", "n2", key(2), "198.18.0.12:51820", "198.19.2.0/24")},
			wantPeers:    []string{"n2"},
			wantRoutes:   []string{"198.19.2.0/24 src 198.19.1.1"},
			wantProblems: []string{"ext spec.endpoint nohostport InvalidEndpoint"},
		},
		{
			name:         "external overlapping own pod CIDR",
			peers:        []wgv1.MeshPeer{mp("ext", "", key(9), "", "198.19.1.128/25")},
			wantProblems: []string{"ext spec.allowedIPs 198.19.1.128/25 OverlappingAllowedIPs"},
		},
		{
			name:         "external overlapping a node peer: node wins",
			peers:        []wgv1.MeshPeer{mp("ext", "", key(9), "", "198.19.0.0/16"), mp("n2", "n2", key(2), "198.18.0.12:51820", "198.19.2.0/24")},
			wantPeers:    []string{"n2"},
			wantRoutes:   []string{"198.19.2.0/24 src 198.19.1.1"},
			wantProblems: []string{"ext spec.allowedIPs 198.19.0.0/16 OverlappingAllowedIPs"},
		},
		{
			name:         "two externals overlapping: both out",
			peers:        []wgv1.MeshPeer{mp("a", "", key(7), "", "198.18.200.0/24"), mp("b", "", key(8), "", "198.18.200.128/25"), mp("n2", "n2", key(2), "", "198.19.2.0/24")},
			wantPeers:    []string{"n2"},
			wantRoutes:   []string{"198.19.2.0/24 src 198.19.1.1"},
			wantProblems: []string{"a spec.allowedIPs 198.18.200.0/24 OverlappingAllowedIPs", "b spec.allowedIPs 198.18.200.128/25 OverlappingAllowedIPs"},
		},
		{
			name:         "duplicate public key: both out",
			peers:        []wgv1.MeshPeer{mp("n2", "n2", key(2), "", "198.19.2.0/24"), mp("n3", "n3", key(2), "", "198.19.3.0/24"), mp("n4", "n4", key(4), "", "198.19.4.0/24")},
			wantPeers:    []string{"n4"},
			wantRoutes:   []string{"198.19.4.0/24 src 198.19.1.1"},
			wantProblems: []string{"n2 spec.publicKey " + key(2).String() + " DuplicatePublicKey", "n3 spec.publicKey " + key(2).String() + " DuplicatePublicKey"},
		},
		{
			name:         "invalid key and non-canonical CIDR",
			peers:        []wgv1.MeshPeer{{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: wgv1.MeshPeerSpec{PublicKey: "short"}}, mp("y", "", key(6), "", "198.18.200.1/24")},
			wantProblems: []string{"x spec.publicKey short InvalidPublicKey", "y spec.allowedIPs 198.18.200.1/24 InvalidAllowedIPs"},
		},
		{
			name:      "peer with our own key under another name is not a peer",
			peers:     []wgv1.MeshPeer{mp("stale", "", key(1), "", "198.18.201.0/24")},
			wantPeers: nil,
		},
		{
			name:       "peer without AllowedIPs is a peer without routes",
			peers:      []wgv1.MeshPeer{mp("n2", "n2", key(2), "198.18.0.12:51820")},
			wantPeers:  []string{"n2"},
			wantRoutes: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := self
			in.Peers = tt.peers
			got := New(in)
			if g := names(got.Peers); !reflect.DeepEqual(g, tt.wantPeers) {
				t.Errorf("peers = %v, want %v", g, tt.wantPeers)
			}
			if g := routes(got.Routes); !reflect.DeepEqual(g, tt.wantRoutes) {
				t.Errorf("routes = %v, want %v", g, tt.wantRoutes)
			}
			if g := problems(got.Problems); !reflect.DeepEqual(g, tt.wantProblems) {
				t.Errorf("problems = %v, want %v", g, tt.wantProblems)
			}
			// Deterministic whatever the input order.
			rev := slices.Clone(tt.peers)
			slices.Reverse(rev)
			in.Peers = rev
			if again := New(in); !reflect.DeepEqual(again, got) {
				t.Errorf("result depends on input order:\n%+v\n%+v", got, again)
			}
		})
	}
}

func TestNewCarriesKeepaliveAndGateways(t *testing.T) {
	ka := int32(25)
	p := mp("n2", "n2", key(2), "", "198.19.2.0/24")
	p.Spec.PersistentKeepalive = &ka
	got := New(Input{NodeName: "n1", PodCIDRs: pfx("2001:db8:100:1::/64", "198.19.1.0/24"), Peers: []wgv1.MeshPeer{p}})
	if got.Peers[0].Keepalive != 25 {
		t.Errorf("keepalive = %d, want 25", got.Peers[0].Keepalive)
	}
	want := pfx("198.19.1.1/24", "2001:db8:100:1::1/64")
	if !reflect.DeepEqual(got.Gateways, want) {
		t.Errorf("gateways = %v, want %v", got.Gateways, want)
	}
}

func TestOwnKeepaliveAppliesToPeersWithout(t *testing.T) {
	ka, other := int32(25), int32(10)
	self := mp("n1", "n1", key(1), "", "198.19.1.0/24")
	self.Spec.PersistentKeepalive = &ka
	withOwn := mp("n3", "n3", key(3), "", "198.19.3.0/24")
	withOwn.Spec.PersistentKeepalive = &other
	got := New(Input{NodeName: "n1", Peers: []wgv1.MeshPeer{self, mp("n2", "n2", key(2), "", "198.19.2.0/24"), withOwn}})
	if got.Peers[0].Keepalive != 25 || got.Peers[1].Keepalive != 10 {
		t.Fatalf("keepalives = %d, %d; want 25 (own), 10 (peer's)", got.Peers[0].Keepalive, got.Peers[1].Keepalive)
	}
}

func TestProblemString(t *testing.T) {
	p := Problem{Peer: "ext", Field: "spec.endpoint", Value: "x.invalid:1", Detail: "cannot resolve"}
	if got, want := p.String(), `MeshPeer ext spec.endpoint "x.invalid:1": cannot resolve`; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}
