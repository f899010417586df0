package operator

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// LocationOptions say where a node's location comes from (README,
// "Multi-cloud and offices").
type LocationOptions struct {
	// FromRegion (--location-from-region): a Node without the
	// wgmesh.io/location label is in the location named by its
	// topology.kubernetes.io/region label.
	FromRegion bool
	// RegionsNotOneNetwork (--regions-not-one-network): regions whose nodes
	// do not share one private network (several VPCs in one region); their
	// nodes have a location only by the wgmesh.io/location label.
	RegionsNotOneNetwork []string
}

// NodeLocation is the location of a Node: its wgmesh.io/location label
// (an empty value says "no location", also against --location-from-region),
// else with FromRegion its region unless that region is not one network,
// else none. A label value is a valid location (the API server checks label
// values the way wgv1.ParseLocation does, but for the empty one).
func NodeLocation(n *corev1.Node, o LocationOptions) string {
	if l, ok := n.Labels[wgv1.LabelLocation]; ok {
		if wgv1.ParseLocation(l) != nil {
			return ""
		}
		return l
	}
	r := n.Labels[wgv1.LabelRegion]
	if !o.FromRegion || r == "" || slices.Contains(o.RegionsNotOneNetwork, r) || wgv1.ParseLocation(r) != nil {
		return ""
	}
	return r
}

// NodeRelay is a Node's relay preference: its wgmesh.io/relay label "true"
// (prefer) or "false" (never); absent or any other value: none (it may
// relay).
func NodeRelay(n *corev1.Node) wgv1.RelayPreference {
	switch n.Labels[wgv1.LabelRelay] {
	case "true":
		return wgv1.RelayPrefer
	case "false":
		return wgv1.RelayNever
	}
	return ""
}

// MaxObservedPerFamily bounds the observed candidates published for one
// node and address family.
const MaxObservedPerFamily = 2

// ObservedCandidates are the endpoints other nodes see node name's
// handshakes come from, as they report them in their own MeshPeer's
// status.learnedEndpoints (each agent writes only its own status: the
// admission policy). Per address family only the address:port reported by
// the most nodes is taken (ties: all of them, at most
// MaxObservedPerFamily), so that one lying agent never outvotes two honest
// ones. Reports from MeshPeers that are no node's (nodes tells a Node's
// UID), or that are left out of the mesh, do not count, nor an address
// that is one of the node's private candidates or lies in an external
// MeshPeer's allowedIPs. Sorted as
// wgv1.SortCandidates does.
func ObservedCandidates(name string, peers []wgv1.MeshPeer, nodes func(string) (types.UID, bool), own []wgv1.Candidate) []wgv1.Candidate {
	private := map[netip.Addr]bool{}
	for _, c := range own {
		if hp, err := wgv1.ParseCandidate(c); err == nil && c.Kind == wgv1.CandidatePrivate {
			private[hp.Addr.Unmap()] = true
		}
	}
	// An address an external peer routes is no endpoint (WireGuard's own
	// packets would loop into the tunnel); observed addresses protect
	// nothing, so it is left out here instead.
	var external []netip.Prefix
	for i := range peers {
		if wgv1.IsNodePeer(&peers[i], nodes) {
			continue
		}
		for _, c := range peers[i].Spec.AllowedIPs {
			if p, err := wgv1.ParseCIDR(string(c)); err == nil {
				external = append(external, p)
			}
		}
	}
	inExternal := func(a netip.Addr) bool {
		return slices.ContainsFunc(external, func(p netip.Prefix) bool { return p.Contains(a) })
	}
	votes := map[netip.AddrPort]int{}
	for i := range peers {
		mp := &peers[i]
		if mp.Name == name || !wgv1.IsNodePeer(mp, nodes) {
			continue
		}
		if excluded, _ := mp.Excluded(); excluded {
			continue
		}
		// One vote per reporter and family: WireGuard has one endpoint per
		// peer, so an honest reporter has one; a lying one listing many
		// addresses must not win ties against an honest one with them.
		voted := map[bool]bool{}
		for _, l := range mp.Status.LearnedEndpoints {
			a, err := netip.ParseAddr(l.Address)
			if l.Peer != name || err != nil || l.Port < 1 || l.Port > 65535 || private[a.Unmap()] || inExternal(a.Unmap()) {
				continue
			}
			ap := netip.AddrPortFrom(a.Unmap(), uint16(l.Port))
			if v4 := ap.Addr().Is4(); !voted[v4] {
				voted[v4] = true
				votes[ap]++
			}
		}
	}
	var out []wgv1.Candidate
	for _, v4 := range []bool{true, false} {
		var best []netip.AddrPort
		most := 0
		for ap, n := range votes {
			if ap.Addr().Is4() != v4 {
				continue
			}
			switch {
			case n > most:
				best, most = []netip.AddrPort{ap}, n
			case n == most:
				best = append(best, ap)
			}
		}
		slices.SortFunc(best, func(a, b netip.AddrPort) int { return cmp.Compare(a.String(), b.String()) })
		for _, ap := range best[:min(len(best), MaxObservedPerFamily)] {
			out = append(out, wgv1.Candidate{Kind: wgv1.CandidateObserved, Endpoint: wgv1.Endpoint(ap.String())})
		}
	}
	wgv1.SortCandidates(out)
	return out
}

// observedPeersOf are the MeshPeers a MeshPeer's learned endpoints name.
func observedPeersOf(mp *wgv1.MeshPeer) []string {
	var out []string
	for _, l := range mp.Status.LearnedEndpoints {
		if l.Port > 0 && !slices.Contains(out, l.Peer) {
			out = append(out, l.Peer)
		}
	}
	return out
}

// joinCandidates is candidates for messages: kind=endpoint,...
func joinCandidates(cs []wgv1.Candidate) string {
	if len(cs) == 0 {
		return "none"
	}
	return strings.ReplaceAll(wgv1.FormatCandidatesAnnotation(cs), ",", ", ")
}
