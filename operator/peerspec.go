package operator

import (
	"net/netip"
	"slices"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// DesiredPeerSpec computes a node's MeshPeer spec from its annotations and
// podCIDRs. current is the MeshPeer's spec today (nil if there is none): a
// field whose annotation is invalid keeps its current value (the last good
// one). ok is false when the node has no usable public key and no last good
// one, in which case the node gets no MeshPeer.
func DesiredPeerSpec(nodeName string, podCIDRs []string, ann NodeAnnotations, current *wgv1.MeshPeerSpec) (spec wgv1.MeshPeerSpec, ok bool) {
	invalid := map[string]bool{}
	for _, e := range ann.Invalid {
		invalid[e.Annotation] = true
	}
	spec.NodeName = nodeName

	switch {
	case ann.PublicKey != "":
		spec.PublicKey = wgv1.PublicKey(ann.PublicKey)
	case invalid[wgv1.AnnotationPublicKey] && current != nil:
		spec.PublicKey = current.PublicKey
	default:
		return wgv1.MeshPeerSpec{}, false
	}

	switch {
	case ann.ForceEndpoint != "":
		spec.Endpoint = wgv1.Endpoint(ann.ForceEndpoint)
	case invalid[wgv1.AnnotationForceEndpoint] && current != nil:
		spec.Endpoint = current.Endpoint
	case ann.Endpoint != "":
		spec.Endpoint = wgv1.Endpoint(ann.Endpoint)
	case invalid[wgv1.AnnotationEndpoint] && current != nil && ann.ownsEndpoint(string(current.Endpoint)):
		// The last good one, if it is still the node's own: one an older
		// operator published unchecked is dropped, not kept.
		spec.Endpoint = current.Endpoint
	}

	switch {
	case ann.PersistentKeepalive != nil:
		k := *ann.PersistentKeepalive
		spec.PersistentKeepalive = &k
	case invalid[wgv1.AnnotationPersistentKeepalive] && current != nil && current.PersistentKeepalive != nil:
		k := *current.PersistentKeepalive
		spec.PersistentKeepalive = &k
	}

	spec.AllowedIPs = CanonicalCIDRs(podCIDRs)
	return spec, true
}

// PathInputs are what a node MeshPeer's location and candidates come from
// besides the Node's annotations.
type PathInputs struct {
	// Location is NodeLocation's answer.
	Location string
	// Observed are ObservedCandidates' answer.
	Observed []wgv1.Candidate
	// Relay is NodeRelay's answer.
	Relay wgv1.RelayPreference
}

// SetPaths fills a node MeshPeer spec's location, relay preference and candidates: the
// private and public endpoints its agent announced (the last good ones while
// the annotation is invalid), its wgmesh.io/force-endpoint as a public
// candidate, and the observed ones; sorted (wgv1.SortCandidates), without
// repeats, at most the CRD's 16.
func SetPaths(spec *wgv1.MeshPeerSpec, in PathInputs, ann NodeAnnotations, current *wgv1.MeshPeerSpec) {
	spec.Location = wgv1.Location(in.Location)
	spec.Relay = in.Relay
	own := ann.Candidates
	if own == nil && current != nil && slices.ContainsFunc(ann.Invalid, func(e AnnotationError) bool { return e.Annotation == wgv1.AnnotationCandidates }) {
		for _, c := range current.Candidates {
			if c.Kind != wgv1.CandidateObserved && (c.Kind != wgv1.CandidatePublic || string(c.Endpoint) != ann.ForceEndpoint) {
				own = append(own, c)
			}
		}
	}
	var cs []wgv1.Candidate
	add := func(c wgv1.Candidate) {
		if _, err := wgv1.ParseCandidate(c); err == nil && !slices.Contains(cs, c) {
			cs = append(cs, c)
		}
	}
	for _, c := range own {
		add(c)
	}
	if ann.ForceEndpoint != "" {
		add(wgv1.Candidate{Kind: wgv1.CandidatePublic, Endpoint: wgv1.Endpoint(ann.ForceEndpoint)})
	}
	for _, c := range in.Observed {
		add(c)
	}
	wgv1.SortCandidates(cs)
	spec.Candidates = cs[:min(len(cs), maxCandidates)]
}

// maxCandidates is the CRD's maxItems of spec.candidates.
const maxCandidates = 16

// ownsEndpoint reports whether ep may stay in the node's MeshPeer as its
// last good endpoint: empty, or the Node's own address (always, when the
// annotations were parsed without the Node).
func (a NodeAnnotations) ownsEndpoint(ep string) bool {
	return ep == "" || a.ownEndpoint == nil || a.ownEndpoint(ep) == nil
}

// CanonicalCIDRs parses CIDRs, masks them and drops unparsable ones, keeping
// the order.
func CanonicalCIDRs(in []string) []wgv1.CIDR {
	var out []wgv1.CIDR
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			continue
		}
		c := wgv1.CIDR(p.Masked().String())
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// SpecEqual reports whether two MeshPeer specs say the same thing.
func SpecEqual(a, b wgv1.MeshPeerSpec) bool {
	if a.NodeName != b.NodeName || a.PublicKey != b.PublicKey || a.Endpoint != b.Endpoint || a.Location != b.Location ||
		a.Relay != b.Relay || !slices.Equal(a.Candidates, b.Candidates) {
		return false
	}
	if (a.PersistentKeepalive == nil) != (b.PersistentKeepalive == nil) ||
		(a.PersistentKeepalive != nil && *a.PersistentKeepalive != *b.PersistentKeepalive) {
		return false
	}
	return slices.Equal(a.AllowedIPs, b.AllowedIPs)
}
