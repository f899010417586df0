package operator

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// FuzzParseNodeAnnotations: never panics; every value it keeps passes the
// api validators, every value it drops is reported with the annotation and
// the value, and a MeshPeer spec built from it is one the CRD accepts
// (checked with the same validators).
func FuzzParseNodeAnnotations(f *testing.F) {
	f.Add(keyA, "198.18.0.11:51820", "gw.example.org:443", "25")
	f.Add("AAAA", "[2001:db8::1]:51820", "300.1.1.1:1", "-1")
	f.Add("", "node.example:1", "[fe80::1%eth0]:1", "65536")
	f.Fuzz(func(t *testing.T, k, ep, force, ka string) {
		ann := map[string]string{wgv1.AnnotationPublicKey: k, wgv1.AnnotationEndpoint: ep, wgv1.AnnotationForceEndpoint: force, wgv1.AnnotationPersistentKeepalive: ka}
		got := ParseNodeAnnotations(ann)
		invalid := map[string]bool{}
		for _, e := range got.Invalid {
			invalid[e.Annotation] = true
			if e.Value != ann[e.Annotation] || e.Want == "" {
				t.Fatalf("error %+v does not name the value and what is accepted", e)
			}
		}
		if (got.PublicKey != "") == invalid[wgv1.AnnotationPublicKey] {
			t.Fatalf("key %q: kept %q, invalid %v", k, got.PublicKey, invalid[wgv1.AnnotationPublicKey])
		}
		spec, ok := DesiredPeerSpec("n1", []string{"198.19.1.0/24"}, got, nil)
		if !ok {
			return
		}
		if err := wgv1.ParsePublicKey(string(spec.PublicKey)); err != nil {
			t.Fatalf("spec key: %v", err)
		}
		if spec.Endpoint != "" {
			if _, err := wgv1.ParseEndpoint(string(spec.Endpoint), true); err != nil {
				t.Fatalf("spec endpoint: %v", err)
			}
		}
		if spec.PersistentKeepalive != nil && (*spec.PersistentKeepalive < 0 || *spec.PersistentKeepalive > 65535) {
			t.Fatalf("keepalive %d", *spec.PersistentKeepalive)
		}
	})
}

var fuzzNodeCIDRs = []string{"198.19.1.0/24", "198.19.2.0/24", "198.19.1.0/25", "198.19.0.0/17", "198.18.64.0/24", "2001:db8:100:1::/64", "2001:db8:100::/56", "2001:db8:999::/64", "198.19.0.0/16"}

// FuzzPodCIDRConflicts: the nodes whose pod CIDRs may be published never
// overlap each other and lie inside the cluster's CIDRs; a node already
// publishing, with no overlap among those publishing, keeps its CIDRs.
func FuzzPodCIDRConflicts(f *testing.F) {
	f.Add([]byte{0, 1, 9, 1, 2, 9, 2, 0, 1, 3, 3, 0})
	f.Add([]byte{0, 5, 6, 1, 7, 9, 2, 4, 9, 3, 0, 0})
	cluster := []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:db8:100::/56")}
	f.Fuzz(func(t *testing.T, data []byte) {
		var nodes []corev1.Node
		var peers []wgv1.MeshPeer
		for i := 0; i+3 <= len(data) && len(nodes) < 20; i += 3 {
			b := data[i : i+3]
			n := node(fmt.Sprintf("n%d", i/3))
			n.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1+int(b[0])%28, 0, 0, 0, 0, time.UTC))
			for _, x := range b[1:] {
				if int(x) < len(fuzzNodeCIDRs) {
					n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, fuzzNodeCIDRs[x])
				}
			}
			nodes = append(nodes, n)
			if b[0]%2 == 0 {
				var cs []wgv1.CIDR
				for _, c := range n.Spec.PodCIDRs {
					cs = append(cs, wgv1.CIDR(c))
				}
				peers = append(peers, nodePeer(n.Name, keyA, cs...))
			}
		}
		out := PodCIDRConflicts(nodes, peers, cluster)
		// The per-node form (the operator's hot path) agrees everywhere.
		for _, n := range nodes {
			if got := PodCIDRConflictOf(n.Name, nodes, peers, cluster); got != out[n.Name] {
				t.Fatalf("PodCIDRConflictOf(%s) = %q, PodCIDRConflicts says %q", n.Name, got, out[n.Name])
			}
		}
		var kept []netip.Prefix
		owner := map[netip.Prefix]string{}
		for _, n := range nodes {
			if _, bad := out[n.Name]; bad {
				continue
			}
			for _, s := range n.Spec.PodCIDRs {
				p := netip.MustParsePrefix(s)
				inside := false
				for _, c := range cluster {
					inside = inside || (c.Bits() <= p.Bits() && c.Contains(p.Addr()))
				}
				if !inside {
					t.Fatalf("node %s publishes %s outside the cluster", n.Name, p)
				}
				for _, k := range kept {
					if k.Overlaps(p) && owner[k] != n.Name {
						t.Fatalf("published nodes overlap: %s %s and %s %s", n.Name, p, owner[k], k)
					}
				}
				kept = append(kept, p)
				owner[p] = n.Name
			}
		}
	})
}

// FuzzParseNode: the endpoint a node's MeshPeer gets from what its agent
// announced is always one of the Node's own addresses (never another
// machine's, whatever the annotations, the addresses and the last spec);
// a refused announcement is reported with the annotation and the value.
func FuzzParseNode(f *testing.F) {
	f.Add("198.18.0.11:51820", "", "198.18.0.11", "198.18.200.5:51820")
	f.Add("198.18.200.5:51820", "", "198.18.0.11", "198.18.200.5:51820")
	f.Add("[2001:db8::11]:51820", "x:0", "2001:db8:0::11", "")
	f.Add("198.18.200.5:51820", "gw.example.org:1", "198.18.0.11", "198.18.0.11:51820")
	f.Fuzz(func(t *testing.T, ep, force, addr, current string) {
		n := &corev1.Node{}
		n.Name = "n1"
		n.Annotations = map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: ep}
		if force != "" {
			n.Annotations[wgv1.AnnotationForceEndpoint] = force
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
		ann := ParseNode(n)
		for _, e := range ann.Invalid {
			if e.Value != n.Annotations[e.Annotation] || e.Want == "" {
				t.Fatalf("error %+v does not name the value and what is accepted", e)
			}
		}
		var cur *wgv1.MeshPeerSpec
		if current != "" {
			cur = &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA, Endpoint: wgv1.Endpoint(current)}
		}
		spec, ok := DesiredPeerSpec("n1", nil, ann, cur)
		if !ok || spec.Endpoint == "" || ann.ForceEndpoint != "" || slices.ContainsFunc(ann.Invalid, func(e AnnotationError) bool { return e.Annotation == wgv1.AnnotationForceEndpoint }) {
			return // no endpoint, or the user's
		}
		if err := wgv1.CheckOwnEndpoint(n, string(spec.Endpoint)); err != nil {
			t.Fatalf("published endpoint %q is not the Node's own: %v", spec.Endpoint, err)
		}
	})
}

// FuzzLearnedEndpointQuorum: an external peer is kept out by a learned
// endpoint only when at least LearnedQuorum distinct node peers report that
// address about another node peer (checked against a naive count of the
// raw statuses); a single reporter, an external MeshPeer's status or a
// node's report about itself never evicts.
func FuzzLearnedEndpointQuorum(f *testing.F) {
	f.Add([]byte{0, 2, 0, 1, 2, 0})
	f.Add([]byte{0, 2, 0, 3, 2, 0, 2, 2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		peers, nodes := natCluster()
		names := []string{"n1", "n2", "n3", "evil", "gone"}
		addrs := []string{"198.18.100.1", "198.18.100.2", "::ffff:198.18.100.1"}
		for i := 0; i+3 <= len(data) && i < 60; i += 3 {
			report(peers, names[int(data[i])%4], names[int(data[i+1])%5], addrs[int(data[i+2])%3])
		}
		// Naive: distinct node reporters of 198.18.100.1 about another node.
		reporters := map[string]bool{}
		for _, mp := range peers {
			if mp.Name == "evil" {
				continue
			}
			for _, l := range mp.Status.LearnedEndpoints {
				a, _ := netip.ParseAddr(l.Address)
				if a.Unmap() == netip.MustParseAddr("198.18.100.1") && l.Peer != mp.Name && slices.Contains([]string{"n1", "n2", "n3"}, l.Peer) {
					reporters[mp.Name] = true
				}
			}
		}
		got := FindConflicts(ConflictInput{Peers: peers, Nodes: nodes})["evil"].AllowedIPsConflict != ""
		if want := len(reporters) >= LearnedQuorum; got != want {
			t.Fatalf("evil excluded = %v, want %v (reporters %v, statuses %+v)", got, want, reporters, peers)
		}
	})
}
