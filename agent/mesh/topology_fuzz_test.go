package mesh

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/agent/paths"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// fuzzPrefixes are the ranges random MeshPeers draw from: node-sized pod
// CIDRs, wide ones, ranges outside the cluster, the underlay, services and
// the default route, so that every overlap rule is exercised.
var fuzzPrefixes = []string{
	"198.19.1.0/24", "198.19.2.0/24", "198.19.3.0/24", "198.19.2.0/25", "198.19.0.0/17", "198.19.0.0/16",
	"198.18.200.0/24", "198.18.200.128/25", "198.18.201.0/24", "198.18.0.0/24", "198.18.0.12/32", "198.18.128.0/24",
	"0.0.0.0/0", "2001:db8:100:2::/64", "2001:db8:100::/56", "2001:db8:200::/64", "198.19.1.128/25", "::/0",
}

// fuzzPeers decodes bytes into MeshPeers: each 6 bytes choose a name, a kind
// (node peer, external, external claiming a node, node with a forged UID),
// a key (few, so keys repeat), two ranges, an endpoint and a key age.
func fuzzPeers(data []byte) []wgv1.MeshPeer {
	var out []wgv1.MeshPeer
	for i := 0; i+6 <= len(data) && len(out) < 24; i += 6 {
		b := data[i : i+6]
		name := fmt.Sprintf("n%d", 1+int(b[0])%9)
		kind := b[1] % 4
		if kind == 1 || kind == 2 {
			name = fmt.Sprintf("ext%d", b[0]%16)
		}
		if slices.ContainsFunc(out, func(p wgv1.MeshPeer) bool { return p.Name == name }) {
			continue
		}
		node := ""
		if kind != 1 {
			node = "n" + name[len(name)-1:]
			if kind == 2 {
				node = fmt.Sprintf("n%d", 1+int(b[5])%9)
			}
		}
		var allowed []string
		for _, x := range []byte{b[3], b[4]} {
			if int(x) < 2*len(fuzzPrefixes) {
				allowed = append(allowed, fuzzPrefixes[int(x)%len(fuzzPrefixes)])
			}
		}
		ep := ""
		if b[5]%3 == 0 {
			ep = fmt.Sprintf("198.18.0.%d:51820", 10+b[5]%8)
		}
		p := mp(name, node, key(1+b[2]%6), ep, allowed...)
		if kind == 2 {
			p.OwnerReferences = nil
		}
		if kind == 3 && b[5]%2 == 1 {
			p.OwnerReferences[0].UID = "uid-forged"
		}
		p.Annotations = map[string]string{wgv1.AnnotationPublicKeySince: fmt.Sprintf("2026-01-%02dT00:00:00Z", 1+b[5]%28)}
		// Some node peers sit in offices behind NAT (a private candidate
		// only) or in a cloud (a public one too): pairs of offices need a
		// relay.
		if b[5]&0x40 != 0 {
			n := int(b[0]) % 9
			p.Spec.Location = wgv1.Location(fmt.Sprintf("office-%d", n%3))
			p.Spec.Candidates = []wgv1.Candidate{{Kind: wgv1.CandidatePrivate, Endpoint: wgv1.Endpoint(fmt.Sprintf("198.18.20.%d:51820", n+1))}}
			if b[5]&0x20 != 0 {
				p.Spec.Location = "cloud"
				p.Spec.Candidates = append(p.Spec.Candidates, wgv1.Candidate{Kind: wgv1.CandidatePublic, Endpoint: wgv1.Endpoint(fmt.Sprintf("198.18.100.%d:51820", n+1))})
			}
			if b[4]&0x80 != 0 {
				p.Spec.Relay = wgv1.RelayNever
			}
		}
		if b[2]&0x80 != 0 {
			p.Status.Conditions = []metav1.Condition{{Type: wgv1.ConditionKeyConflict, Status: metav1.ConditionTrue}}
		}
		out = append(out, p)
	}
	return out
}

// FuzzTopology checks New's invariants on random MeshPeer sets: no panic;
// no two chosen peers overlap; a node peer carries exactly its MeshPeer's
// ranges, inside the cluster; nothing chosen claims this node's pod CIDRs,
// the services or (external peers) the cluster or the underlay; keys are
// unique; every MeshPeer is chosen or reported; the input order does not
// matter.
func FuzzTopology(f *testing.F) {
	f.Add([]byte{1, 0, 1, 1, 99, 0, 2, 0, 2, 2, 99, 0, 3, 0, 3, 4, 99, 0})
	f.Add([]byte{1, 0, 1, 1, 99, 0, 2, 0, 1, 2, 99, 3, 5, 1, 4, 12, 9, 0, 6, 2, 5, 1, 99, 1})
	f.Add([]byte{9, 3, 1, 5, 99, 1, 2, 0, 2, 2, 13, 0, 7, 1, 3, 6, 7, 0, 8, 1, 4, 7, 8, 0})
	// This node and n2 in two offices, n3 in a cloud: n3 relays n2.
	f.Add([]byte{0, 0, 0, 0, 99, 0x41, 1, 0, 1, 1, 99, 0x41, 2, 0, 2, 2, 99, 0x61})
	self := Input{NodeName: "n1", PublicKey: key(1), PodCIDRs: pfx("198.19.1.0/24"), NodeUIDs: nodeUIDs,
		ClusterCIDRs: pfx("198.19.0.0/16", "2001:db8:100::/56"), ServiceCIDRs: pfx("198.18.128.0/20"),
		Protected: []netip.Addr{netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.1")}}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := self
		in.Peers = fuzzPeers(data)
		got := New(in)

		byName := map[string]*wgv1.MeshPeer{}
		for i := range in.Peers {
			byName[in.Peers[i].Name] = &in.Peers[i]
		}
		reported := map[string]bool{}
		for _, p := range got.Problems {
			reported[p.Peer] = true
		}
		keys := map[string]string{}
		for i, p := range got.Peers {
			mp := byName[p.Name]
			if reported[p.Name] {
				t.Errorf("%s is both a peer and a problem", p.Name)
			}
			if o, dup := keys[p.PublicKey.String()]; dup || p.PublicKey == in.PublicKey {
				t.Errorf("%s: key shared with %q or with this node", p.Name, o)
			}
			keys[p.PublicKey.String()] = p.Name
			for _, q := range got.Peers[i+1:] {
				if a, b, ok := overlapping(p.AllowedIPs, q.AllowedIPs); ok {
					t.Errorf("chosen peers overlap: %s %s and %s %s", p.Name, a, q.Name, b)
				}
				if a, b, ok := overlapping(p.WireGuardAllowedIPs(), q.WireGuardAllowedIPs()); ok {
					t.Errorf("WireGuard entries overlap: %s %s and %s %s", p.Name, a, q.Name, b)
				}
			}
			checkRelayed(t, got.Peers, p)
			for _, a := range p.AllowedIPs {
				if _, ok := overlapsAny(a, in.PodCIDRs); ok {
					t.Errorf("%s claims this node's pod CIDR with %s", p.Name, a)
				}
				if _, ok := overlapsAny(a, in.ServiceCIDRs); ok {
					t.Errorf("%s claims the services with %s", p.Name, a)
				}
			}
			if wgv1.IsNodePeer(mp, in.NodeUIDs) {
				want := CanonicalSet(mp.Spec.AllowedIPs)
				if !reflect.DeepEqual(p.AllowedIPs, want) {
					t.Errorf("node peer %s carries %v, its MeshPeer says %v", p.Name, p.AllowedIPs, want)
				}
				for _, a := range p.AllowedIPs {
					if !insideAny(a, in.ClusterCIDRs) {
						t.Errorf("node peer %s carries %s outside the cluster", p.Name, a)
					}
				}
				continue
			}
			if p.NodeName != "" {
				t.Errorf("external %s kept nodeName %q", p.Name, p.NodeName)
			}
			for _, a := range p.AllowedIPs {
				if _, ok := overlapsAny(a, in.ClusterCIDRs); ok {
					t.Errorf("external %s claims the cluster's pods with %s", p.Name, a)
				}
				for _, x := range in.Protected {
					if a.Contains(x) {
						t.Errorf("external %s captures underlay %s with %s", p.Name, x, a)
					}
				}
			}
		}
		for _, mp := range in.Peers {
			ex, _ := mp.Excluded()
			if mp.Name == in.NodeName || ex || string(mp.Spec.PublicKey) == in.PublicKey.String() {
				continue
			}
			if in.NodeUIDs != nil && wgv1.IsNodePeer(&mp, nil) && !wgv1.IsNodePeer(&mp, in.NodeUIDs) {
				if _, chosen := keys[string(mp.Spec.PublicKey)]; chosen && keys[string(mp.Spec.PublicKey)] == mp.Name {
					t.Errorf("MeshPeer %s of a Node that is gone is a peer", mp.Name)
				}
				continue // orphaned node MeshPeer: skipped silently
			}
			if _, chosen := keys[string(mp.Spec.PublicKey)]; !reported[mp.Name] && !(chosen && keys[string(mp.Spec.PublicKey)] == mp.Name) {
				t.Errorf("MeshPeer %s is neither a peer nor a reported problem", mp.Name)
			}
		}
		rev := slices.Clone(in.Peers)
		slices.Reverse(rev)
		in.Peers = rev
		if again := New(in); !reflect.DeepEqual(again, got) {
			t.Errorf("result depends on input order")
		}
	})
}

// CanonicalSet is a MeshPeer's allowedIPs as New keeps them: parsed,
// sorted, without duplicates.
func CanonicalSet(cs []wgv1.CIDR) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cs {
		out = append(out, netip.MustParsePrefix(string(c)))
	}
	sortPrefixes(out)
	return slices.Compact(out)
}

// checkRelayed: a relayed peer is a node peer whose relay is a peer here
// with a direct path, carrying exactly the ranges of the peers it relays;
// a relayed peer's entry has no AllowedIPs, and no endpoint or keepalive
// unless it punches.
func checkRelayed(t *testing.T, peers []Peer, p Peer) {
	t.Helper()
	if p.Path != paths.KindRelayed {
		if p.Relay != "" {
			t.Errorf("%s: path %s with relay %s", p.Name, p.Path, p.Relay)
		}
	} else {
		i := slices.IndexFunc(peers, func(q Peer) bool { return q.Name == p.Relay })
		if p.NodeName == "" || i < 0 || !paths.Direct(peers[i].Path) || !slices.Contains(peers[i].RelayFor, p.Name) {
			t.Errorf("%s relayed by %q, which is no peer here with a direct path carrying it", p.Name, p.Relay)
		}
		// (A punched path waiting for its handshake keeps its endpoint and
		// keepalive, to punch.)
		if len(p.WireGuardAllowedIPs()) != 0 || (p.Endpoint == "") != (p.Keepalive == 0) || (p.Endpoint != "" && p.Keepalive < paths.PunchKeepalive) {
			t.Errorf("relayed %s: WireGuard entry %v endpoint %q keepalive %d", p.Name, p.WireGuardAllowedIPs(), p.Endpoint, p.Keepalive)
		}
	}
	var want []netip.Prefix
	for _, n := range p.RelayFor {
		i := slices.IndexFunc(peers, func(q Peer) bool { return q.Name == n })
		if i < 0 || peers[i].Relay != p.Name {
			t.Errorf("%s relays %s, which is not relayed by it", p.Name, n)
			continue
		}
		want = append(want, peers[i].AllowedIPs...)
	}
	sortPrefixes(want)
	if !slices.Equal(want, p.RelayedIPs) {
		t.Errorf("%s relays %v with ranges %v, want %v", p.Name, p.RelayFor, p.RelayedIPs, want)
	}
}
