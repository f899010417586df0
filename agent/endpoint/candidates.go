package endpoint

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Candidates are the endpoints this node announces in wgmesh.io/candidates:
// each InternalIP of its Node as private, each ExternalIP as public, at the
// listen port, IPv4 first, at most wgv1.MaxAnnouncedCandidates. Only the
// Node's own addresses may be announced (wgv1.CheckOwnCandidates, the
// admission policy), so interface addresses the Node does not list are not;
// the operator adds the force-endpoint and the observed endpoints itself.
func Candidates(node *corev1.Node, listenPort int) []wgv1.Candidate {
	var out []wgv1.Candidate
	for _, a := range node.Status.Addresses {
		kind := wgv1.CandidatePrivate
		switch a.Type {
		case corev1.NodeInternalIP:
		case corev1.NodeExternalIP:
			kind = wgv1.CandidatePublic
		default:
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil || !usable(ip.Unmap()) {
			continue
		}
		c := wgv1.Candidate{Kind: kind, Endpoint: wgv1.Endpoint(JoinHostPort(ip.Unmap(), listenPort))}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	wgv1.SortCandidates(out)
	return out[:min(len(out), wgv1.MaxAnnouncedCandidates)]
}
