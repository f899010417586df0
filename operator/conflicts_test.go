package operator

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func nodePeer(name, key string, cidrs ...wgv1.CIDR) wgv1.MeshPeer {
	yes := true
	return wgv1.MeshPeer{
		ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: types.UID("u-" + name), Controller: &yes}}},
		Spec:       wgv1.MeshPeerSpec{NodeName: name, PublicKey: wgv1.PublicKey(key), AllowedIPs: cidrs},
	}
}

func extPeer(name, key string, cidrs ...wgv1.CIDR) wgv1.MeshPeer {
	return wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(key), AllowedIPs: cidrs}}
}

func node(name string, cidrs ...string) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("u-" + name)}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
}

func TestFindConflicts(t *testing.T) {
	peers := []wgv1.MeshPeer{
		nodePeer("n1", keyA, "198.19.1.0/24"),
		nodePeer("n2", keyA, "198.19.2.0/24"),
		nodePeer("n3", keyB, "198.19.3.0/24"),
		extPeer("laptop", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "198.19.3.128/25", "198.18.200.0/24"),
		extPeer("vm", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=", "198.18.201.0/24"),
		// Claims to be n3 without being controlled by it: treated as external.
		{ObjectMeta: metav1.ObjectMeta{Name: "fake-n3"}, Spec: wgv1.MeshPeerSpec{NodeName: "n3", PublicKey: "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA=", AllowedIPs: []wgv1.CIDR{"198.19.3.0/24"}}},
	}
	nodes := []corev1.Node{node("n1", "198.19.1.0/24"), node("n2", "198.19.2.0/24"), node("n3", "198.19.3.0/24", "2001:db8:100:3::/64")}
	got := FindConflicts(ConflictInput{Peers: peers, Nodes: nodes})
	if len(got) != 4 {
		t.Fatalf("FindConflicts = %+v, want problems for n1, n2, laptop, fake-n3", got)
	}
	if m := got["n1"].KeyConflict; !strings.Contains(m, keyA) || !strings.Contains(m, "MeshPeer n2") {
		t.Errorf("n1 KeyConflict = %q, want it to name the key and n2", m)
	}
	if m := got["n2"].KeyConflict; !strings.Contains(m, "MeshPeer n1") {
		t.Errorf("n2 KeyConflict = %q", m)
	}
	if m := got["laptop"].AllowedIPsConflict; !strings.Contains(m, "198.19.3.128/25 overlaps pod CIDR 198.19.3.0/24 of node n3") || strings.Contains(m, "198.18.200.0/24") {
		t.Errorf("laptop AllowedIPsConflict = %q", m)
	}
	if got["fake-n3"].AllowedIPsConflict == "" {
		t.Errorf("a MeshPeer not controlled by its node may not carry the node's pod CIDR")
	}
	if _, ok := got["vm"]; ok {
		t.Errorf("vm has no problem, got %+v", got["vm"])
	}
}

// TestCopiedKeyNeverEvictsTheNode: a node (or an external MeshPeer) that
// announces another node's key is left out; the node that published the key
// first keeps working.
func TestCopiedKeyNeverEvictsTheNode(t *testing.T) {
	genuine := nodePeer("n1", keyA, "198.19.1.0/24")
	genuine.Annotations = map[string]string{wgv1.AnnotationPublicKeySince: "2026-01-01T00:00:00Z"}
	copier := nodePeer("n2", keyA, "198.19.2.0/24")
	copier.Annotations = map[string]string{wgv1.AnnotationPublicKeySince: "2026-03-01T00:00:00Z"}
	ext := extPeer("laptop", keyA, "198.18.200.0/24")
	// Owner reference with the right name but another UID: not the node's.
	forged := nodePeer("n3", keyA, "198.19.3.0/24")
	forged.Annotations = map[string]string{wgv1.AnnotationPublicKeySince: "2025-01-01T00:00:00Z"}
	forged.OwnerReferences[0].UID = "u-old-n3"
	nodes := []corev1.Node{node("n1", "198.19.1.0/24"), node("n2", "198.19.2.0/24"), node("n3", "198.19.3.0/24")}
	got := FindConflicts(ConflictInput{Peers: []wgv1.MeshPeer{genuine, copier, ext, forged}, Nodes: nodes})
	if p, ok := got["n1"]; ok {
		t.Errorf("the genuine node n1 got %+v", p)
	}
	for _, n := range []string{"n2", "laptop", "n3"} {
		if m := got[n].KeyConflict; !strings.Contains(m, "belongs to node MeshPeer n1") {
			t.Errorf("%s KeyConflict = %q, want it to name n1 as the key's owner", n, m)
		}
	}
}

// TestPodCIDRConflicts: a Node arriving with pre-set podCIDRs overlapping a
// node already in the mesh (or outside the cluster's CIDRs) stays out, and
// the others keep theirs; one wide node never takes out several.
func TestPodCIDRConflicts(t *testing.T) {
	at := func(n corev1.Node, day int) corev1.Node {
		n.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, day, 0, 0, 0, 0, time.UTC))
		return n
	}
	nodes := []corev1.Node{
		at(node("n1", "198.19.1.0/24"), 5), at(node("n2", "198.19.2.0/24"), 5), at(node("n3", "198.19.3.0/24"), 5),
		at(node("dup", "198.19.1.0/24"), 1),   // older, but n1 already publishes
		at(node("wide", "198.19.0.0/17"), 2),  // over n1-n3
		at(node("away", "198.18.64.0/24"), 6), // outside --cluster-cidrs
		at(node("v6", "198.19.4.0/24", "2001:db8:100:4::/64"), 7),
	}
	peers := []wgv1.MeshPeer{nodePeer("n1", keyA, "198.19.1.0/24")}
	got := PodCIDRConflicts(nodes, peers, []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:db8:100::/56")})
	want := map[string]string{
		"dup":  "overlaps pod CIDR 198.19.1.0/24 of node n1",
		"wide": "pod CIDR 198.19.0.0/17 of node wide overlaps pod CIDR 198.19.1.0/24 of node n1",
		"away": "lies outside the cluster's pod CIDRs",
	}
	if len(got) != len(want) {
		t.Errorf("conflicts = %v, want %d (dup, wide, away)", got, len(want))
	}
	for n, w := range want {
		if !strings.Contains(got[n], w) {
			t.Errorf("%s: %q, want it to contain %q", n, got[n], w)
		}
	}
	cluster := []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:db8:100::/56")}
	for _, n := range nodes {
		if one := PodCIDRConflictOf(n.Name, nodes, peers, cluster); one != got[n.Name] {
			t.Errorf("PodCIDRConflictOf(%s) = %q, want %q", n.Name, one, got[n.Name])
		}
	}
	// Through a chain: a (published) overlaps b, b overlaps c but a does
	// not: b is out, so c keeps its range. Only the whole component tells.
	chain := []corev1.Node{at(node("a", "198.19.8.0/24"), 1), at(node("b", "198.19.8.0/23"), 2), at(node("c", "198.19.9.0/24"), 3)}
	chainPeers := []wgv1.MeshPeer{nodePeer("a", keyA, "198.19.8.0/24")}
	if b, c := PodCIDRConflictOf("b", chain, chainPeers, cluster), PodCIDRConflictOf("c", chain, chainPeers, cluster); b == "" || c != "" {
		t.Errorf("chain: b = %q (want a conflict), c = %q (want none)", b, c)
	}
	// Reported as AllowedIPsConflict on the node's MeshPeer.
	dup := nodePeer("dup", keyB) // the operator withheld its allowedIPs
	fc := FindConflicts(ConflictInput{Peers: append(peers, dup), Nodes: nodes})
	if !strings.Contains(fc["dup"].AllowedIPsConflict, "overlaps pod CIDR 198.19.1.0/24 of node n1") || fc["n1"].AllowedIPsConflict != "" {
		t.Errorf("conflicts = %+v, want dup out and n1 kept", fc)
	}
}

// TestExternalPeerMayNotCaptureTheUnderlay: an external peer whose
// allowedIPs contain a node address, a peer endpoint or the API server
// would loop WireGuard's own packets into the tunnel.
func TestExternalPeerMayNotCaptureTheUnderlay(t *testing.T) {
	n1 := node("n1", "198.19.1.0/24")
	n1.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}}
	p1 := nodePeer("n1", keyA, "198.19.1.0/24")
	p1.Spec.Endpoint = "198.18.0.11:51820"
	ext := func(name, cidr string) wgv1.MeshPeer {
		p := extPeer(name, "", wgv1.CIDR(cidr))
		p.Spec.PublicKey = wgv1.PublicKey(strings.Repeat(name[:1], 43) + "=")
		return p
	}
	peers := []wgv1.MeshPeer{p1, ext("underlay", "198.18.0.0/24"), ext("api", "198.18.1.1/32"), ext("fine", "198.18.200.0/24"), ext("pods", "198.19.200.0/24")}
	got := FindConflicts(ConflictInput{Peers: peers, Nodes: []corev1.Node{n1}, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
		Protected: []netip.Addr{netip.MustParseAddr("198.18.1.1")}})
	for name, want := range map[string]string{"underlay": "contains underlay address 198.18.0.11", "api": "contains underlay address 198.18.1.1", "pods": "overlaps the cluster's pod CIDR 198.19.0.0/16"} {
		if !strings.Contains(got[name].AllowedIPsConflict, want) {
			t.Errorf("%s: AllowedIPsConflict %q, want %q", name, got[name].AllowedIPsConflict, want)
		}
	}
	if _, ok := got["fine"]; ok {
		t.Errorf("fine: %+v", got["fine"])
	}
}

func TestFindConflictsCapsNames(t *testing.T) {
	var peers []wgv1.MeshPeer
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		peers = append(peers, extPeer(n, keyA))
	}
	m := FindConflicts(ConflictInput{Peers: peers})["a"].KeyConflict
	if !strings.Contains(m, "b, c, d, e, f and 2 more") {
		t.Fatalf("message = %q", m)
	}
}

func TestDesiredConditions(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Hour))
	want := func(msg string) []wantCondition {
		return []wantCondition{{Type: wgv1.ConditionKeyConflict, Reason: "Dup", Message: msg, OKReason: "Unique", OKMessage: "ok"}}
	}
	ready := metav1.Condition{Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Up", LastTransitionTime: t0}

	// Never had a problem: nothing to write.
	if got := desiredConditions([]metav1.Condition{ready}, 1, want(""), t1); len(got) != 0 {
		t.Fatalf("no problem, no condition: got %+v", got)
	}
	// A problem appears.
	got := desiredConditions([]metav1.Condition{ready}, 1, want("dup"), t0)
	if len(got) != 1 || got[0].Status != metav1.ConditionTrue || got[0].Message != "dup" || !conditionsChanged([]metav1.Condition{ready}, got) {
		t.Fatalf("got %+v", got)
	}
	cur := append([]metav1.Condition{ready}, got...)
	// Same problem later: transition time kept, nothing changed.
	again := desiredConditions(cur, 1, want("dup"), t1)
	if !again[0].LastTransitionTime.Equal(&t0) || conditionsChanged(cur, again) {
		t.Fatalf("unchanged problem rewritten: %+v", again)
	}
	// Resolved: False, new transition time.
	res := desiredConditions(cur, 1, want(""), t1)
	if len(res) != 1 || res[0].Status != metav1.ConditionFalse || res[0].Reason != "Unique" || !res[0].LastTransitionTime.Equal(&t1) {
		t.Fatalf("resolved = %+v", res)
	}
}

// natCluster is three nodes and an external peer: n3 is behind a NAT
// router whose public address, 198.18.100.1, is where the others reach its
// WireGuard (no spec names it); the external peer "evil" routes exactly
// that address into the tunnel.
func natCluster() ([]wgv1.MeshPeer, []corev1.Node) {
	var nodes []corev1.Node
	var peers []wgv1.MeshPeer
	for i, name := range []string{"n1", "n2", "n3"} {
		n := node(name, fmt.Sprintf("198.19.%d.0/24", i+1))
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("198.18.%d.1%d", i/2, i+1)}}
		nodes = append(nodes, n)
		peers = append(peers, nodePeer(name, strings.Repeat(string(rune('K'+i)), 43)+"=", wgv1.CIDR(fmt.Sprintf("198.19.%d.0/24", i+1))))
	}
	evil := extPeer("evil", strings.Repeat("E", 43)+"=", "198.18.100.1/32")
	return append(peers, evil), nodes
}

// report makes peers[reporter] report that it reaches peer at addr.
func report(peers []wgv1.MeshPeer, reporter, peer, addr string) {
	for i := range peers {
		if peers[i].Name == reporter {
			peers[i].Status.LearnedEndpoints = append(peers[i].Status.LearnedEndpoints, wgv1.LearnedEndpoint{Peer: peer, Address: addr})
		}
	}
}

// TestLearnedEndpointIsProtected: an external MeshPeer whose allowedIPs hold
// the NAT router's public address, where the other nodes reach the NAT node,
// is left out once two nodes report that address as learned from the NAT
// node's handshakes. The control (no reports, as before) accepts it: then
// every agent routed WireGuard's packets for the NAT node into the
// attacker's peer.
func TestLearnedEndpointIsProtected(t *testing.T) {
	peers, nodes := natCluster()
	if got := FindConflicts(ConflictInput{Peers: peers, Nodes: nodes}); got["evil"].AllowedIPsConflict != "" {
		t.Fatalf("control: with nothing reported the peer is accepted, got %q", got["evil"].AllowedIPsConflict)
	}
	report(peers, "n1", "n3", "198.18.100.1")
	report(peers, "n2", "n3", "198.18.100.1")
	got := FindConflicts(ConflictInput{Peers: peers, Nodes: nodes})
	want := "198.18.100.1/32 contains underlay address 198.18.100.1 (the WireGuard endpoint of node n3, learned from handshakes by nodes n1, n2)"
	if m := got["evil"].AllowedIPsConflict; !strings.Contains(m, want) {
		t.Fatalf("evil: AllowedIPsConflict %q, want it to contain %q", m, want)
	}
	if len(got) != 1 {
		t.Errorf("only evil has a problem, got %+v", got)
	}
}

// TestOneAgentsLearnedEndpointEvictsNoOne: each agent writes its own
// status, so one compromised agent could report any external peer's
// address as learned; alone it evicts no one. Nor do reports in an
// external MeshPeer's status (anyone who may write it), a node about
// itself, or about a peer that is not a node's.
func TestOneAgentsLearnedEndpointEvictsNoOne(t *testing.T) {
	peers, nodes := natCluster()
	report(peers, "n1", "n3", "198.18.100.1")
	report(peers, "evil", "n3", "198.18.100.1")
	report(peers, "n3", "n3", "198.18.100.1")
	report(peers, "n2", "evil", "198.18.100.1")
	report(peers, "n2", "gone", "198.18.100.1")
	if got := FindConflicts(ConflictInput{Peers: peers, Nodes: nodes}); got["evil"].AllowedIPsConflict != "" {
		t.Fatalf("one node's report evicted the peer: %q", got["evil"].AllowedIPsConflict)
	}
	reports := LearnedReports(peers, nodes)
	if len(reports) != 1 || !slices.Equal(reports[0].Reporters, []string{"n1"}) || !slices.Equal(reports[0].Peers, []string{"n3"}) {
		t.Fatalf("LearnedReports = %+v, want only n1's report about n3", reports)
	}
	// The control: a second node's word is enough.
	report(peers, "n2", "n3", "198.18.100.1")
	if got := FindConflicts(ConflictInput{Peers: peers, Nodes: nodes}); got["evil"].AllowedIPsConflict == "" {
		t.Fatal("control: two nodes' reports do not protect the address")
	}
}

// TestSelfAnnouncedEndpointEvictsNoOne: a node peer's spec endpoint that is
// not one of its Node's addresses (published from wgmesh.io/endpoint by an
// older operator, or the Node's addresses changed since) protects nothing,
// so an agent that announces an external peer's address never evicts it.
// The controls: the same address as the Node's ExternalIP, or as its
// wgmesh.io/force-endpoint (a user's), does protect.
func TestSelfAnnouncedEndpointEvictsNoOne(t *testing.T) {
	peers, nodes := natCluster()
	peers[3] = extPeer("vm", strings.Repeat("V", 43)+"=", "198.18.200.5/32")
	peers[1].Spec.Endpoint = "198.18.200.5:51820" // n2 announced the vm's address
	if got := FindConflicts(ConflictInput{Peers: peers, Nodes: nodes}); len(got) != 0 {
		t.Fatalf("a node's own word about its endpoint evicted: %+v", got)
	}
	for what, change := range map[string]func(*corev1.Node){
		"ExternalIP of Node n2": func(n *corev1.Node) {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "198.18.200.5"})
		},
		"the wgmesh.io/force-endpoint of Node n2": func(n *corev1.Node) {
			n.Annotations = map[string]string{wgv1.AnnotationForceEndpoint: "198.18.200.5:51820"}
		},
	} {
		ns := slices.Clone(nodes)
		ns[1] = *nodes[1].DeepCopy()
		change(&ns[1])
		got := FindConflicts(ConflictInput{Peers: peers, Nodes: ns})
		if want := "contains underlay address 198.18.200.5 (" + what + ")"; !strings.Contains(got["vm"].AllowedIPsConflict, want) {
			t.Errorf("control %s: vm AllowedIPsConflict %q, want %q", what, got["vm"].AllowedIPsConflict, want)
		}
	}
}
