package mesh

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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
	if node != "" {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node, UID: types.UID("uid-" + node), Controller: &yes}}
	}
	return p
}

// nodeUIDs are the Nodes of the tests: n1 to n9, each with UID uid-<name>.
func nodeUIDs(name string) (types.UID, bool) {
	if len(name) == 2 && name[0] == 'n' && name[1] >= '1' && name[1] <= '9' {
		return types.UID("uid-" + name), true
	}
	return "", false
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

	self := Input{NodeName: "n1", PublicKey: key(1), PodCIDRs: pfx("198.19.1.0/24", "2001:db8:100:1::/64"), NodeUIDs: nodeUIDs,
		ClusterCIDRs: pfx("198.19.0.0/16", "2001:db8:100::/56"), ServiceCIDRs: pfx("198.18.128.0/20"),
		Protected: []netip.Addr{netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.1")}}
	since := func(p wgv1.MeshPeer, t string) wgv1.MeshPeer {
		p.Annotations = map[string]string{wgv1.AnnotationPublicKeySince: t}
		return p
	}
	forgedUID := mp("n4", "n4", key(4), "", "198.19.4.0/24")
	forgedUID.OwnerReferences[0].UID = "uid-of-a-deleted-node"
	wideExcluded := mp("n9", "n9", key(9), "", "198.19.0.0/17")
	wideExcluded.Status.Conditions = []metav1.Condition{{Type: wgv1.ConditionAllowedIPsConflict, Status: metav1.ConditionTrue}}
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
			peers:        []wgv1.MeshPeer{mp("ext", "", key(9), "", "198.18.64.0/24", "198.19.0.0/16"), mp("n2", "n2", key(2), "198.18.0.12:51820", "198.19.2.0/24")},
			wantPeers:    []string{"n2"},
			wantRoutes:   []string{"198.19.2.0/24 src 198.19.1.1"},
			wantProblems: []string{"ext spec.allowedIPs 198.19.0.0/16 OverlappingAllowedIPs"},
		},
		{
			name: "one wide node peer (/17 over three /24s) is left out, the three keep working",
			peers: []wgv1.MeshPeer{mp("n2", "n2", key(2), "", "198.19.2.0/24"), mp("n3", "n3", key(3), "", "198.19.3.0/24"),
				mp("n4", "n4", key(4), "", "198.19.4.0/24"), mp("n5", "n5", key(5), "", "198.19.0.0/17")},
			wantPeers:    []string{"n2", "n3", "n4"},
			wantRoutes:   []string{"198.19.2.0/24 src 198.19.1.1", "198.19.3.0/24 src 198.19.1.1", "198.19.4.0/24 src 198.19.1.1"},
			wantProblems: []string{"n5 spec.allowedIPs 198.19.0.0/17 OverlappingAllowedIPs"},
		},
		{
			name:       "an already-excluded wide peer removes nobody",
			peers:      []wgv1.MeshPeer{wideExcluded, mp("n2", "n2", key(2), "", "198.19.2.0/24")},
			wantPeers:  []string{"n2"},
			wantRoutes: []string{"198.19.2.0/24 src 198.19.1.1"},
		},
		{
			name:         "two node peers with one pod CIDR: both out, the rest kept",
			peers:        []wgv1.MeshPeer{mp("n2", "n2", key(2), "", "198.19.2.0/24"), mp("n3", "n3", key(3), "", "198.19.2.0/24"), mp("n4", "n4", key(4), "", "198.19.4.0/24")},
			wantPeers:    []string{"n4"},
			wantRoutes:   []string{"198.19.4.0/24 src 198.19.1.1"},
			wantProblems: []string{"n2 spec.allowedIPs 198.19.2.0/24 OverlappingAllowedIPs", "n3 spec.allowedIPs 198.19.2.0/24 OverlappingAllowedIPs"},
		},
		{
			// A MeshPeer owned by a Node UID that does not exist (forged,
			// or left by a deleted Node) is never a peer; the agents do not
			// report it (a leaving node must not make every node write its
			// status), the operator's conflict controller does.
			name:         "a MeshPeer claiming a node without being the node's is external, or skipped",
			peers:        []wgv1.MeshPeer{mp("evil", "", key(8), "", "198.19.2.0/24"), forgedUID, func() wgv1.MeshPeer { p := mp("n2", "n2", key(2), "", "198.19.2.0/24"); p.Name = "n2-copy"; return p }()},
			wantProblems: []string{"evil spec.allowedIPs 198.19.2.0/24 OverlappingAllowedIPs", "n2-copy spec.allowedIPs 198.19.2.0/24 OverlappingAllowedIPs"},
		},
		{
			name:         "node peer outside the cluster's pod CIDRs",
			peers:        []wgv1.MeshPeer{mp("n2", "n2", key(2), "", "198.18.64.0/24"), mp("n3", "n3", key(3), "", "198.19.3.0/24")},
			wantPeers:    []string{"n3"},
			wantRoutes:   []string{"198.19.3.0/24 src 198.19.1.1"},
			wantProblems: []string{"n2 spec.allowedIPs 198.18.64.0/24 AllowedIPsOutsideClusterCIDRs"},
		},
		{
			name: "externals capturing the underlay, a peer endpoint, the API server or services are refused",
			peers: []wgv1.MeshPeer{mp("n2", "n2", key(2), "198.18.0.12:51820", "198.19.2.0/24"),
				mp("own-underlay", "", key(5), "", "198.18.0.11/32"), mp("peer-endpoint", "", key(6), "", "198.18.0.0/28"),
				mp("api", "", key(7), "", "198.18.0.1/32"), mp("svc", "", key(8), "", "198.18.128.0/24"),
				mp("default", "", key(9), "", "0.0.0.0/0")},
			wantPeers:  []string{"n2"},
			wantRoutes: []string{"198.19.2.0/24 src 198.19.1.1"},
			wantProblems: []string{"api spec.allowedIPs 198.18.0.1/32 AllowedIPsCaptureUnderlay", "default spec.allowedIPs 0.0.0.0/0 OverlappingAllowedIPs",
				"own-underlay spec.allowedIPs 198.18.0.11/32 AllowedIPsCaptureUnderlay", "peer-endpoint spec.allowedIPs 198.18.0.0/28 AllowedIPsCaptureUnderlay",
				"svc spec.allowedIPs 198.18.128.0/24 AllowedIPsCaptureUnderlay"},
		},
		{
			name: "a copied key never evicts the node that had it first",
			peers: []wgv1.MeshPeer{since(mp("n2", "n2", key(2), "", "198.19.2.0/24"), "2026-01-01T00:00:00Z"),
				since(mp("n3", "n3", key(2), "", "198.19.3.0/24"), "2026-02-01T00:00:00Z"), mp("ext", "", key(2), "", "198.18.64.0/24")},
			wantPeers:    []string{"n2"},
			wantRoutes:   []string{"198.19.2.0/24 src 198.19.1.1"},
			wantProblems: []string{"ext spec.publicKey " + key(2).String() + " DuplicatePublicKey", "n3 spec.publicKey " + key(2).String() + " DuplicatePublicKey"},
		},
		{
			name:         "two externals overlapping: both out",
			peers:        []wgv1.MeshPeer{mp("a", "", key(7), "", "198.18.200.0/24"), mp("b", "", key(8), "", "198.18.200.128/25"), mp("c", "", key(6), "", "198.18.201.0/24"), mp("n2", "n2", key(2), "", "198.19.2.0/24")},
			wantPeers:    []string{"c", "n2"},
			wantRoutes:   []string{"198.18.201.0/24 src 198.19.1.1", "198.19.2.0/24 src 198.19.1.1"},
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

// A leaving node's MeshPeer outlives its Node for a moment (until the
// garbage collector deletes it): it is neither a peer nor a problem, so
// that a node leaving changes no other node's status.
func TestOrphanedNodePeerIsSilentlySkipped(t *testing.T) {
	gone := mp("gone", "gone", key(7), "198.18.0.17:51820", "198.19.7.0/24") // its Node no longer exists
	stale := mp("n3", "n3", key(8), "198.18.0.13:51820", "198.19.3.0/24")    // owner is an older Node n3
	stale.OwnerReferences[0].UID = "uid-old-n3"
	live := mp("n2", "n2", key(2), "198.18.0.12:51820", "198.19.2.0/24")
	in := Input{NodeName: "n1", PublicKey: key(1), PodCIDRs: pfx("198.19.1.0/24"), NodeUIDs: nodeUIDs,
		ClusterCIDRs: pfx("198.19.0.0/16"), Peers: []wgv1.MeshPeer{gone, stale, live}}
	topo := New(in)
	if got := names(topo.Peers); len(got) != 1 || got[0] != "n2" {
		t.Fatalf("peers = %v, want only n2", got)
	}
	if len(topo.Problems) != 0 {
		t.Fatalf("problems = %v, want none for orphaned node MeshPeers", problems(topo.Problems))
	}
	// A MeshPeer that merely names a node without its owner reference is
	// external, and judged as such (here: it overlaps the cluster range).
	fake := mp("n4", "", key(9), "198.18.0.99:51820", "198.19.4.0/24")
	fake.Spec.NodeName = "n4"
	in.Peers = []wgv1.MeshPeer{fake, live}
	if topo := New(in); len(topo.Problems) == 0 {
		t.Fatal("an external MeshPeer with a node's name and no owner was skipped silently")
	}
}
