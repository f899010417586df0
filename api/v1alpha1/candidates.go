package v1alpha1

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// MaxAnnouncedCandidates bounds the wgmesh.io/candidates annotation.
const MaxAnnouncedCandidates = 8

// WantCandidates says what wgmesh.io/candidates accepts.
var WantCandidates = fmt.Sprintf("at most %d entries kind=host:port separated by commas, kind private or public, host an IPv4 or [IPv6] address, port in 1-65535", MaxAnnouncedCandidates)

// ParseCandidatesAnnotation parses the wgmesh.io/candidates annotation an
// agent writes on its own Node: kind=host:port,... with kind private or
// public (observed candidates are what others see, never a node's own
// claim) and an IP address as host. An empty value is no candidates.
func ParseCandidatesAnnotation(s string) ([]Candidate, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxAnnouncedCandidates {
		return nil, fmt.Errorf("%q has %d entries: want %s", s, len(parts), WantCandidates)
	}
	var out []Candidate
	for _, p := range parts {
		kind, ep, ok := strings.Cut(p, "=")
		c := Candidate{Kind: CandidateKind(kind), Endpoint: Endpoint(ep)}
		if !ok || (c.Kind != CandidatePrivate && c.Kind != CandidatePublic) {
			return nil, fmt.Errorf("%q: entry %q is not kind=host:port with kind private or public: want %s", s, p, WantCandidates)
		}
		if _, err := ParseEndpoint(ep, false); err != nil {
			return nil, fmt.Errorf("%q: entry %q: %w", s, p, err)
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// FormatCandidatesAnnotation is the annotation's value for candidates
// (ParseCandidatesAnnotation reads it back).
func FormatCandidatesAnnotation(cs []Candidate) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c.Kind) + "=" + string(c.Endpoint)
	}
	return strings.Join(s, ",")
}

// CheckOwnCandidates checks the wgmesh.io/candidates an agent announces:
// parsable (ParseCandidatesAnnotation), and every host one of the Node's
// own addresses (NodeAddrs), or the Node's wgmesh.io/force-endpoint. A node
// announces only itself: another machine's address would pull other
// nodes' traffic for it there, and would evict that machine's external
// peer (a node's endpoints are addresses no external peer may route). The
// chart's admission policy wgmesh-agent-own-node says the same.
func CheckOwnCandidates(n *corev1.Node, value string) ([]Candidate, error) {
	cs, err := ParseCandidatesAnnotation(value)
	if err != nil {
		return nil, fmt.Errorf("Node %s annotation %s=%w", n.Name, AnnotationCandidates, err)
	}
	force := n.Annotations[AnnotationForceEndpoint]
	addrs := NodeAddrs(n)
	for _, c := range cs {
		if force != "" && string(c.Endpoint) == force {
			continue
		}
		hp, _ := ParseEndpoint(string(c.Endpoint), false)
		if !slices.Contains(addrs, hp.Addr.Unmap()) {
			return nil, fmt.Errorf("Node %s annotation %s=%q: %s candidate %s: want %s", n.Name, AnnotationCandidates, value, c.Kind, c.Endpoint, WantOwnEndpoint(n.Name, addrs))
		}
	}
	return cs, nil
}

// SortCandidates orders candidates by kind (private, public, observed),
// then IPv4 before IPv6 and DNS names last, then by text: the order
// spec.candidates is written in, so that equal sets compare equal.
func SortCandidates(cs []Candidate) {
	rank := map[CandidateKind]int{CandidatePrivate: 0, CandidatePublic: 1, CandidateObserved: 2}
	family := func(e Endpoint) int {
		if ap, err := netip.ParseAddrPort(string(e)); err == nil {
			if ap.Addr().Is4() {
				return 0
			}
			return 1
		}
		return 2
	}
	slices.SortFunc(cs, func(a, b Candidate) int {
		if d := rank[a.Kind] - rank[b.Kind]; d != 0 {
			return d
		}
		if d := family(a.Endpoint) - family(b.Endpoint); d != 0 {
			return d
		}
		return strings.Compare(string(a.Endpoint), string(b.Endpoint))
	})
}
