package netpol

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Conn is the first packet of a connection, after service NAT (the
// destination is the endpoint, not the ClusterIP).
type Conn struct {
	Src, Dst netip.Addr
	Proto    Protocol
	// DPort is the destination port (TCP, UDP, SCTP).
	DPort uint16
	// SrcNode and DstNode, when set, say that the source or destination is
	// that node's host (the agent knows when a packet comes from its own
	// host). When empty, Evaluate looks the address up among the pods and
	// then among Cluster.Nodes' addresses.
	SrcNode, DstNode string
}

func (c Conn) String() string {
	return fmt.Sprintf("%s -> %s %s/%d", c.Src, c.Dst, c.Proto, c.DPort)
}

// Reason is why a direction allows or denies.
type Reason uint8

const (
	// NotAPod: the address is no selectable pod's, nothing isolates it.
	NotAPod Reason = iota
	// NotIsolated: no policy selects the pod in this direction.
	NotIsolated
	// AllowedByRule: a rule of a selecting policy matches (Decision.Match).
	AllowedByRule
	// Denied: policies isolate the pod and no rule of theirs matches.
	Denied
	// SelfException: a pod reaching itself is always allowed.
	SelfException
	// NodeException: traffic between a pod and its own node is always
	// allowed.
	NodeException
)

func (r Reason) String() string {
	return [...]string{"not a pod", "not isolated", "allowed by rule", "denied", "self", "own node"}[r]
}

// Endpoint is what an address of a connection turned out to be.
type Endpoint struct {
	Addr netip.Addr
	// Pod is the key of the selectable pod with this address, if any.
	Pod string
	// Node is the node whose host this is, if the address is no pod's.
	Node string
}

func (e Endpoint) String() string {
	switch {
	case e.Pod != "":
		return fmt.Sprintf("pod %s (%s)", e.Pod, e.Addr)
	case e.Node != "":
		return fmt.Sprintf("node %s (%s)", e.Node, e.Addr)
	}
	return e.Addr.String()
}

// Decision is one direction's verdict, explained: egress at the source pod,
// ingress at the destination pod.
type Decision struct {
	Direction Direction
	Reason    Reason
	// Pod is the key of the pod the direction is judged at ("" for
	// NotAPod).
	Pod string
	// IsolatedBy are the keys of the policies isolating Pod in this
	// direction, sorted.
	IsolatedBy []string
	// Match is the first matching rule (policies in key order, rules, peers
	// and ports in their order) when Reason is AllowedByRule.
	Match *Match
}

// Allowed says whether the direction lets the connection through.
func (d Decision) Allowed() bool { return d.Reason != Denied }

// Match names the rule that allowed a connection.
type Match struct {
	Policy    string // "<namespace>/<name>"
	Direction Direction
	Rule      int // index in spec.ingress or spec.egress
	Peer      int // index in from or to; -1 when the rule has no peers
	Port      int // index in ports; -1 when the rule has no ports
}

// String is "x/allow-b ingress rule 0 (from[1], ports[0])".
func (m Match) String() string {
	s := fmt.Sprintf("%s %s rule %d", m.Policy, m.Direction, m.Rule)
	var parts []string
	if m.Peer >= 0 {
		peers := "from"
		if m.Direction == Egress {
			peers = "to"
		}
		parts = append(parts, fmt.Sprintf("%s[%d]", peers, m.Peer))
	}
	if m.Port >= 0 {
		parts = append(parts, fmt.Sprintf("ports[%d]", m.Port))
	}
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

func (d Decision) String() string {
	switch d.Reason {
	case NotAPod:
		return d.Direction.String() + ": not a pod, no policy applies"
	case NotIsolated:
		return fmt.Sprintf("%s: %s is not isolated", d.Direction, d.Pod)
	case SelfException:
		return fmt.Sprintf("%s: %s reaches itself, always allowed", d.Direction, d.Pod)
	case NodeException:
		return fmt.Sprintf("%s: traffic between %s and its own node, always allowed", d.Direction, d.Pod)
	}
	s := fmt.Sprintf("%s: %s isolated by %s; ", d.Direction, d.Pod, strings.Join(d.IsolatedBy, ", "))
	if d.Match == nil {
		return s + "no rule matches"
	}
	return s + "allowed by " + d.Match.String()
}

// Verdict is a connection's fate: allowed iff egress at the source and
// ingress at the destination allow it.
type Verdict struct {
	Src, Dst        Endpoint
	Egress, Ingress Decision
	Allowed         bool
}

func (v Verdict) String() string {
	word := "denied"
	if v.Allowed {
		word = "allowed"
	}
	return fmt.Sprintf("%s -> %s: %s; %s; %s", v.Src, v.Dst, v.Egress, v.Ingress, word)
}

// Evaluate judges a connection against the cluster's policies. It is the
// reference evaluator: direct, object by object, in time linear in the
// cluster's size.
func Evaluate(c *Cluster, conn Conn) Verdict {
	_, _, _, v := judge(c, conn)
	return v
}

// judge is Evaluate, also returning what it looked up.
func judge(c *Cluster, conn Conn) (w *world, src, dst resolved, v Verdict) {
	w = newWorld(c)
	src = w.resolve(conn.Src.Unmap(), conn.SrcNode)
	dst = w.resolve(conn.Dst.Unmap(), conn.DstNode)
	v = Verdict{Src: src.Endpoint, Dst: dst.Endpoint}
	v.Egress = w.decide(Egress, src, dst, conn)
	v.Ingress = w.decide(Ingress, dst, src, conn)
	v.Allowed = v.Egress.Allowed() && v.Ingress.Allowed()
	return w, src, dst, v
}

// world is a Cluster looked up by name and address for one evaluation.
type world struct {
	c          *Cluster
	namespaces map[string]*Namespace
}

type resolved struct {
	Endpoint
	pod *Pod
}

func newWorld(c *Cluster) *world {
	w := &world{c: c, namespaces: make(map[string]*Namespace, len(c.Namespaces))}
	for _, ns := range c.Namespaces {
		w.namespaces[ns.Name] = ns
	}
	return w
}

func (w *world) nsLabels(ns string) map[string]string {
	return namespaceLabels(ns, w.namespaces[ns])
}

// resolve finds what an address is: the selectable pod holding it (the
// first by key if several claim it), else a node's host.
func (w *world) resolve(a netip.Addr, node string) resolved {
	r := resolved{Endpoint: Endpoint{Addr: a, Node: node}}
	if node != "" {
		return r
	}
	for _, p := range w.c.Pods {
		if p.Selectable() && p.HasIP(a) && (r.pod == nil || p.Key() < r.pod.Key()) {
			r.pod = p
		}
	}
	if r.pod != nil {
		r.Pod = r.pod.Key()
		return r
	}
	for _, n := range w.c.Nodes {
		if slices.Contains(n.Addrs, a) {
			r.Node = n.Name
			break
		}
	}
	return r
}

// decide judges direction d at subject (the source for egress, the
// destination for ingress); peer is the other end.
func (w *world) decide(d Direction, subject, peer resolved, conn Conn) Decision {
	dec := Decision{Direction: d, Pod: subject.Pod}
	pod := subject.pod
	switch {
	case pod == nil:
		dec.Reason = NotAPod
		return dec
	case peer.pod == pod:
		dec.Reason = SelfException
		return dec
	case peer.Node != "" && peer.Node == pod.Node:
		dec.Reason = NodeException
		return dec
	}
	selecting := w.selecting(d, pod)
	if len(selecting) == 0 {
		dec.Reason = NotIsolated
		return dec
	}
	dstPod := destinationPod(d, subject, peer)
	dec.Reason = Denied
	for _, p := range selecting {
		dec.IsolatedBy = append(dec.IsolatedBy, p.Key())
		if dec.Match != nil {
			continue
		}
		for i, r := range p.Rules(d) {
			if rc := w.checkRule(p, d, i, r, peer, conn, dstPod); rc.Matches() {
				dec.Reason = AllowedByRule
				dec.Match = &Match{Policy: p.Key(), Direction: d, Rule: i, Peer: rc.Peer, Port: rc.Port}
				break
			}
		}
	}
	return dec
}

// selecting are the policies isolating pod in direction d, by key.
func (w *world) selecting(d Direction, pod *Pod) []*Policy {
	var out []*Policy
	for _, p := range w.c.Policies {
		if p.Namespace == pod.Namespace && p.Has(d) && p.PodSelector.Matches(pod.Labels) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *Policy) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}

// destinationPod is where named ports resolve: the subject for ingress,
// the peer for egress (nil when that is not a pod).
func destinationPod(d Direction, subject, peer resolved) *Pod {
	if d == Egress {
		return peer.pod
	}
	return subject.pod
}

// checkRule judges one rule of policy p against the other end of the
// connection.
func (w *world) checkRule(p *Policy, d Direction, i int, r Rule, peer resolved, conn Conn, dstPod *Pod) RuleCheck {
	rc := RuleCheck{Policy: p.Key(), Direction: d, Rule: i}
	rc.Peer, rc.PeerMatches = w.matchPeers(r.Peers, peer)
	rc.Port, rc.PortMatches = matchPorts(r.Ports, conn, dstPod)
	return rc
}

// matchPeers finds the first peer matching the other end (-1 for a rule
// without peers).
func (w *world) matchPeers(peers []Peer, other resolved) (int, bool) {
	if len(peers) == 0 {
		return -1, true
	}
	for i, p := range peers {
		switch {
		case p.Err != nil:
		case p.Block != nil:
			if p.Block.Contains(other.Addr) {
				return i, true
			}
		case p.Pods != nil:
			if other.pod != nil && p.Pods.Matches(other.pod, w.nsLabels(other.pod.Namespace)) {
				return i, true
			}
		}
	}
	return 0, false
}

// matchPorts finds the first port matching the connection (-1 for a rule
// without ports). dst is the destination pod, nil when the destination is
// not a pod.
func matchPorts(ports []Port, conn Conn, dst *Pod) (int, bool) {
	if len(ports) == 0 {
		return -1, true
	}
	for i, p := range ports {
		if p.Matches(conn.Proto, conn.DPort, dst) {
			return i, true
		}
	}
	return 0, false
}

// Matches says whether the port admits protocol proto and destination port
// dport on the destination pod dst (nil when it is not a pod: then a named
// port matches nothing).
func (p Port) Matches(proto Protocol, dport uint16, dst *Pod) bool {
	switch {
	case p.Err != nil || p.Protocol != proto:
		return false
	case p.Name != "":
		return dst != nil && slices.Contains(dst.Ports, ContainerPort{Name: p.Name, Protocol: proto, Port: dport})
	case p.Port == 0:
		return true
	case p.EndPort == 0:
		return dport == p.Port
	}
	return p.Port <= dport && dport <= p.EndPort
}
