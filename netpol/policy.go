package netpol

import (
	"fmt"
)

// Policy is a NetworkPolicy normalized: policyTypes defaulted, selectors
// parsed once, cidrs parsed, ports resolved to protocol numbers. Invalid
// parts are kept, marked to match nothing (package comment, "Invalid
// input fails closed"). Treat it as immutable once built.
type Policy struct {
	Namespace, Name string
	// PodSelector selects the policy's subjects in its namespace.
	PodSelector Selector
	// Ingress and Egress are the policy types after defaulting: whether the
	// policy isolates its pods in that direction.
	Ingress, Egress bool
	// IngressRules and EgressRules are the rules of the directions the
	// policy has (nil otherwise). An empty list allows nothing.
	IngressRules, EgressRules []Rule
	// Errors are the problems found, each naming the policy, the field
	// and the value.
	Errors []error
}

// Key is "<namespace>/<name>".
func (p *Policy) Key() string { return p.Namespace + "/" + p.Name }

// Has says whether the policy isolates in direction d.
func (p *Policy) Has(d Direction) bool {
	if d == Egress {
		return p.Egress
	}
	return p.Ingress
}

// Rules are the policy's rules of direction d.
func (p *Policy) Rules(d Direction) []Rule {
	if d == Egress {
		return p.EgressRules
	}
	return p.IngressRules
}

// Rule is one ingress or egress rule. Peers are the sources (ingress) or
// destinations (egress); no peers means any address, no ports any
// protocol and port.
type Rule struct {
	Peers []Peer
	Ports []Port
}

// Peer is one entry of from/to: pods by selector, or an ipBlock.
type Peer struct {
	// Pods is set for podSelector and namespaceSelector peers.
	Pods *PeerSelector
	// Block is set for ipBlock peers.
	Block *IPBlock
	// Err, when set, makes the peer match nothing.
	Err error
}

// PeerSelector selects pods: those of one namespace (a podSelector alone)
// or those of the namespaces a namespaceSelector matches.
type PeerSelector struct {
	// Namespace is the policy's namespace when the peer has no
	// namespaceSelector; empty otherwise.
	Namespace string
	// Namespaces is the namespaceSelector (when Namespace is empty).
	Namespaces Selector
	// Pods is the podSelector (everything when the peer has none).
	Pods Selector
	// Key identifies the selector across policies: equal keys, equal
	// members. It names the peer set of its members.
	Key SelectorKey
}

// MatchesNamespace says whether pods of namespace ns (with its labels as
// policies match them) can be selected.
func (s *PeerSelector) MatchesNamespace(ns string, nsLabels map[string]string) bool {
	if s.Namespace != "" {
		return s.Namespace == ns
	}
	return s.Namespaces.Matches(nsLabels)
}

// Matches says whether the selector selects pod p, whose namespace has
// labels nsLabels. Pods that are not Selectable never match.
func (s *PeerSelector) Matches(p *Pod, nsLabels map[string]string) bool {
	return p.Selectable() && s.MatchesNamespace(p.Namespace, nsLabels) && s.Pods.Matches(p.Labels)
}

// Port is one entry of ports.
type Port struct {
	Protocol Protocol
	// Port is the port or the first of the range; 0 means every port of
	// Protocol (and Name is empty).
	Port uint16
	// EndPort is the last port of the range; 0 means just Port.
	EndPort uint16
	// Name is a named port, resolved on the destination pod.
	Name string
	// Err, when set, makes the port match nothing.
	Err error
}

// String is the port as a policy would show it: "TCP", "TCP/80",
// "TCP/8000-8100", "TCP/serve-80".
func (p Port) String() string {
	switch {
	case p.Err != nil:
		return "invalid port"
	case p.Name != "":
		return fmt.Sprintf("%s/%s", p.Protocol, p.Name)
	case p.Port == 0:
		return p.Protocol.String()
	case p.EndPort != 0:
		return fmt.Sprintf("%s/%d-%d", p.Protocol, p.Port, p.EndPort)
	}
	return fmt.Sprintf("%s/%d", p.Protocol, p.Port)
}
