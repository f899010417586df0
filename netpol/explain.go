package netpol

import (
	"fmt"
	"strings"
)

// Explanation is a Verdict with every rule of the policies isolating each
// end judged, for a reader asking why (`kubectl wgmesh policy trace`):
// which rules the connection meets, and which part of the others it
// misses.
type Explanation struct {
	Verdict
	// EgressRules and IngressRules are the rules of the policies in
	// Egress.IsolatedBy and Ingress.IsolatedBy, in that order and then in
	// spec order; empty when the direction is not judged by rules.
	EgressRules, IngressRules []RuleCheck
}

// RuleCheck is one rule judged against a connection.
type RuleCheck struct {
	Policy    string // "<namespace>/<name>"
	Direction Direction
	Rule      int // index in spec.ingress or spec.egress
	// Peer is the first peer matching the other end (-1 when the rule has
	// no peers: any address); PeerMatches says whether one does.
	Peer        int
	PeerMatches bool
	// Port is the first port matching the connection (-1 when the rule has
	// no ports: any); PortMatches says whether one does.
	Port        int
	PortMatches bool
}

// Matches says whether the rule allows the connection.
func (r RuleCheck) Matches() bool { return r.PeerMatches && r.PortMatches }

// Explain is Evaluate with every rule of the isolating policies judged.
// Its Verdict is Evaluate's, and in each direction the first matching
// RuleCheck is the Decision's Match.
func Explain(c *Cluster, conn Conn) Explanation {
	w, src, dst, v := judge(c, conn)
	e := Explanation{Verdict: v}
	e.EgressRules = w.checkRules(v.Egress, src, dst, conn)
	e.IngressRules = w.checkRules(v.Ingress, dst, src, conn)
	return e
}

// checkRules judges every rule of the policies isolating subject, when the
// decision is made by rules.
func (w *world) checkRules(dec Decision, subject, peer resolved, conn Conn) []RuleCheck {
	if dec.Reason != Denied && dec.Reason != AllowedByRule {
		return nil
	}
	var out []RuleCheck
	dstPod := destinationPod(dec.Direction, subject, peer)
	for _, p := range w.selecting(dec.Direction, subject.pod) {
		for i, r := range p.Rules(dec.Direction) {
			out = append(out, w.checkRule(p, dec.Direction, i, r, peer, conn, dstPod))
		}
	}
	return out
}

// String is how a policy shows the peer: "podSelector app=web",
// "namespaceSelector team=a, podSelector role=db", "ipBlock 10.0.0.0/8
// except 10.1.0.0/16".
func (p Peer) String() string {
	switch {
	case p.Err != nil:
		return "invalid peer (matches nothing)"
	case p.Block != nil:
		return "ipBlock " + p.Block.String()
	case p.Pods != nil:
		var parts []string
		if p.Pods.Namespace == "" {
			parts = append(parts, "namespaceSelector "+p.Pods.Namespaces.String())
		}
		parts = append(parts, "podSelector "+p.Pods.Pods.String())
		return strings.Join(parts, ", ")
	}
	return "no peer"
}

// Describe names the rule's peer and port as the policy writes them:
// `from[0] (podSelector app=web), ports[1] (TCP/80)`, or what of it does
// not match.
func (r RuleCheck) Describe(rule Rule) string {
	peers := "from"
	if r.Direction == Egress {
		peers = "to"
	}
	var parts []string
	switch {
	case len(rule.Peers) == 0:
		parts = append(parts, "any peer")
	case r.PeerMatches:
		parts = append(parts, fmt.Sprintf("%s[%d] (%s)", peers, r.Peer, rule.Peers[r.Peer]))
	default:
		ps := make([]string, len(rule.Peers))
		for i, p := range rule.Peers {
			ps[i] = p.String()
		}
		parts = append(parts, fmt.Sprintf("no %s entry matches (%s)", peers, strings.Join(ps, "; ")))
	}
	switch {
	case len(rule.Ports) == 0:
		parts = append(parts, "any port")
	case r.PortMatches:
		parts = append(parts, fmt.Sprintf("ports[%d] (%s)", r.Port, rule.Ports[r.Port]))
	default:
		ps := make([]string, len(rule.Ports))
		for i, p := range rule.Ports {
			ps[i] = p.String()
		}
		parts = append(parts, "no port matches ("+strings.Join(ps, ", ")+")")
	}
	return strings.Join(parts, ", ")
}
