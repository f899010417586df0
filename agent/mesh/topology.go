// Package mesh computes, without side effects, the WireGuard peers and routes
// one node wants from the MeshPeers in the API server. Everything it returns
// is sorted so that the same input always gives the same output.
package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wgmesh/wgmesh/agent/paths"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/podnet"
)

// Input is what the topology is computed from.
type Input struct {
	// NodeName is this agent's node; its own MeshPeer is skipped.
	NodeName string
	// PublicKey is this node's public key; a peer announcing it is skipped.
	PublicKey wgtypes.Key
	// PodCIDRs are this node's pod CIDRs (its bridge subnets).
	PodCIDRs []netip.Prefix
	// Peers are all MeshPeers.
	Peers []wgv1.MeshPeer
	// NodeUIDs tells which Nodes exist, with their UIDs: a MeshPeer is a
	// node's only when its controller owner reference is that Node (see
	// wgv1.IsNodePeer). Nil: the UID is not checked.
	NodeUIDs func(name string) (types.UID, bool)
	// ClusterCIDRs are the cluster's pod ranges: a node peer's allowedIPs
	// must lie inside them, an external peer's must stay outside. Empty:
	// not checked.
	ClusterCIDRs []netip.Prefix
	// ServiceCIDRs are the cluster's service ranges: no peer may claim them.
	ServiceCIDRs []netip.Prefix
	// Protected are addresses no external peer may route into the tunnel:
	// this node's underlay addresses, the API server's and the endpoints
	// WireGuard learned from peers' handshakes (a peer behind NAT is reached
	// at its router's address, which no MeshPeer names). Every peer's
	// endpoint address is protected too.
	Protected []netip.Addr
	// Connected tells whether WireGuard has a session with a peer now (a
	// handshake within wireguard.ConnectedWithin), by MeshPeer name: a
	// punched path is taken only once it has one, and the pair stays on a
	// relay meanwhile (punching in the background). Nil: not known; a
	// punched path is taken at once.
	Connected func(name string) bool
}

// Peer is one desired WireGuard peer. Endpoint is host:port (possibly a DNS
// name): the one the path choice took from the MeshPeer (paths.Choose:
// spec.endpoint without locations, else one of spec.candidates, or none);
// resolving it is a side effect left to the caller.
type Peer struct {
	Name       string // MeshPeer name
	NodeName   string // empty for external peers
	PublicKey  wgtypes.Key
	Endpoint   string
	AllowedIPs []netip.Prefix
	Keepalive  int32 // seconds, 0 = off
	// Path is how this node reaches the peer; PathReason says why a relay
	// is needed.
	Path       paths.Kind
	PathReason string
	// Relay is the node peer that carries this peer's traffic (Path
	// relayed): the relay's WireGuard entry takes this peer's AllowedIPs,
	// and this peer's entry keeps its key with none (WireGuard's AllowedIPs
	// never overlap between peers), no endpoint and no keepalive; or, while
	// a punched path waits for its first handshake, the observed endpoint
	// and the keepalive, to punch.
	Relay string
	// RelayFor are the relayed peers this peer carries for this node, and
	// RelayedIPs their AllowedIPs, which its WireGuard entry takes besides
	// its own.
	RelayFor   []string
	RelayedIPs []netip.Prefix
}

// WireGuardAllowedIPs are the AllowedIPs of the peer's WireGuard entry:
// none for a relayed peer (its relay carries them), its own and those of
// the peers it relays otherwise. AllowedIPs stays the peer's own ranges:
// its routes, probes and the leak guard go by them.
func (p Peer) WireGuardAllowedIPs() []netip.Prefix {
	if p.Relay != "" {
		return nil
	}
	if len(p.RelayedIPs) == 0 {
		return p.AllowedIPs
	}
	out := append(slices.Clone(p.AllowedIPs), p.RelayedIPs...)
	sortPrefixes(out)
	return out
}

// Route sends Dst through the WireGuard link with Src as preferred source.
// Src is invalid (zero) when this node has no pod CIDR of Dst's family.
type Route struct {
	Dst  netip.Prefix
	Src  netip.Addr
	Peer string // MeshPeer name, for logs
}

// Problem is a MeshPeer left out of the mesh, with the field, the value and
// why, so that it can be reported as a log line, an Event and a condition.
type Problem struct {
	Peer   string
	Field  string
	Value  string
	Reason string // CamelCase, for Events
	Detail string
}

func (p Problem) String() string {
	return fmt.Sprintf("MeshPeer %s %s %q: %s", p.Peer, p.Field, p.Value, p.Detail)
}

// Topology is the desired mesh for one node.
type Topology struct {
	Peers    []Peer    // sorted by name
	Routes   []Route   // sorted by destination
	Problems []Problem // sorted by peer, field
	// Gateways are this node's bridge gateway addresses (first address of
	// each pod CIDR), sorted IPv4 first.
	Gateways []netip.Prefix
}

// Reasons for problems.
const (
	ReasonInvalidPublicKey   = "InvalidPublicKey"
	ReasonInvalidEndpoint    = "InvalidEndpoint"
	ReasonInvalidAllowedIPs  = "InvalidAllowedIPs"
	ReasonOverlappingIPs     = "OverlappingAllowedIPs"
	ReasonDuplicatePublicKey = "DuplicatePublicKey"
	ReasonOutsideClusterCIDR = "AllowedIPsOutsideClusterCIDRs"
	ReasonCapturesUnderlay   = "AllowedIPsCaptureUnderlay"
	// ReasonUnresolvableEndpoint: the peer is kept, but its endpoint's DNS
	// name does not resolve (reported by the tunnel, which resolves).
	ReasonUnresolvableEndpoint = "UnresolvableEndpoint"
)

type candidate struct {
	peer Peer
	node bool
	mp   *wgv1.MeshPeer
}

// New computes the topology. Peers that are this node, that the operator
// excluded, or that cannot be used are left out; the unusable ones are
// returned as Problems while every other peer keeps working. Bad candidates
// (bad fields, copied keys, ranges they may not claim) are removed first;
// only then are overlaps between the rest resolved, so that one wide or
// already-excluded peer never takes good peers out with it. The phases:
// gateways, candidates, refusals, overlaps, peers and routes.
func New(in Input) Topology {
	var t Topology
	t.Gateways = gateways(in.PodCIDRs)
	cands, problems := candidates(in)
	t.Problems = problems
	bad := map[string]Problem{}
	refuse(in, cands, bad)
	resolveAllOverlaps(cands, bad)
	var external []netip.Prefix
	for _, c := range cands {
		if _, ok := bad[c.peer.Name]; !ok && !c.node {
			external = append(external, c.peer.AllowedIPs...)
		}
	}
	for _, c := range cands {
		if p, ok := bad[c.peer.Name]; ok {
			t.Problems = append(t.Problems, p)
			continue
		}
		punchable(&c.peer, external)
		t.Peers = append(t.Peers, c.peer)
		t.Routes = append(t.Routes, routesOf(c.peer, t.Gateways)...)
	}
	relay(in, t.Peers)
	slices.SortFunc(t.Routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	slices.SortFunc(t.Problems, func(a, b Problem) int {
		if c := strings.Compare(a.Peer, b.Peer); c != 0 {
			return c
		}
		return strings.Compare(a.Field, b.Field)
	})
	return t
}

// punchable gives up a punched path whose endpoint (an observed address,
// which nothing protects) lies in an external peer's allowedIPs: WireGuard's
// own packets would be routed into the tunnel.
func punchable(p *Peer, external []netip.Prefix) {
	if p.Path != paths.KindPunched {
		return
	}
	ap, err := netip.ParseAddrPort(p.Endpoint)
	if err != nil {
		return
	}
	for _, r := range external {
		if r.Contains(ap.Addr().Unmap()) {
			p.Path, p.Endpoint = paths.KindRelayNeeded, ""
			p.PathReason = fmt.Sprintf("relay needed: the observed endpoint %s lies in an external peer's allowedIPs %s", ap, r)
			return
		}
	}
}

// wantsRelay: a node peer without a path (relay-needed), or on a punched
// path without a session yet.
func wantsRelay(in Input, p Peer) bool {
	if p.NodeName == "" {
		return false
	}
	return p.Path == paths.KindRelayNeeded || (p.Path == paths.KindPunched && in.Connected != nil && !in.Connected(p.Name))
}

// relay gives each node peer without a direct path (relay-needed) the
// relay paths.ChooseRelay picks among the node MeshPeers (the same on both
// ends: it reads only what every node reads), when that relay is a peer
// here with a direct path: the relay's entry carries the peer's AllowedIPs
// (added after the overlaps were resolved: they are the relayed peer's,
// which passed), the peer's entry none. A pair without a relay stays
// relay-needed, saying why. Routes are unchanged: the peer's ranges go
// through wgmesh0, where WireGuard picks the relay.
//
// A punched path is taken only once WireGuard has a session on it
// (in.Connected): until then the pair stays on its relay, and the peer's
// entry keeps the observed endpoint and the keepalive, so that both ends
// punch in the background; a NAT that maps each destination to its own
// port (punching never works) keeps the pair on the relay. When the session
// ends (no handshake within wireguard.ConnectedWithin) the pair returns to
// the relay, and leaves it again at the next handshake. Both ends see one
// handshake, so they switch within a resync of each other.
func relay(in Input, peers []Peer) {
	idx := map[string]int{}
	need := false
	for i, p := range peers {
		idx[p.Name] = i
		need = need || wantsRelay(in, p)
	}
	if !need {
		return
	}
	nodes := paths.RelayNodes(in.Peers, in.NodeUIDs)
	for i := range peers {
		p := &peers[i]
		if !wantsRelay(in, *p) {
			continue
		}
		punching := p.Path == paths.KindPunched
		r, ok := paths.ChooseRelay(in.NodeName, p.Name, nodes)
		j, usable := idx[r]
		usable = ok && usable && paths.Direct(peers[j].Path)
		switch {
		case punching && !usable:
			continue // punching is all there is
		case !ok:
			p.PathReason += "; no node can relay (a node with a private or public path to both, not labelled wgmesh.io/relay=false)"
			continue
		case !usable:
			p.PathReason += fmt.Sprintf("; its relay %s is not a usable peer of this node", r)
			continue
		}
		if punching {
			p.Path, p.Relay = paths.KindRelayed, r
			p.PathReason = fmt.Sprintf("relayed by %s until the punched path to %s has a handshake", r, p.Endpoint)
		} else {
			p.Path, p.Relay, p.Endpoint, p.Keepalive = paths.KindRelayed, r, "", 0
			p.PathReason = fmt.Sprintf("relayed by %s: %s", r, p.PathReason)
		}
		peers[j].RelayFor = append(peers[j].RelayFor, p.Name)
		peers[j].RelayedIPs = append(peers[j].RelayedIPs, p.AllowedIPs...)
	}
	for i := range peers {
		sortPrefixes(peers[i].RelayedIPs)
	}
}

// gateways are this node's bridge addresses, one per pod CIDR, sorted.
func gateways(podCIDRs []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range podCIDRs {
		if gw, ok := podnet.Gateway(c); ok {
			out = append(out, gw)
		}
	}
	sortPrefixes(out)
	return out
}

// candidates are the MeshPeers that may be peers, parsed, sorted by name:
// not this node, not excluded by the operator, not owned by a Node that is
// gone, not this node's key under another name. Peers whose fields do not
// parse are returned as problems.
func candidates(in Input) ([]candidate, []Problem) {
	// A keepalive set on this node's own MeshPeer (a node behind NAT) is
	// used towards every peer that has none of its own: the NATed side must
	// send first and keep its mapping open.
	var ownKeepalive int32
	var self paths.Peer
	for i := range in.Peers {
		if mp := &in.Peers[i]; mp.Name == in.NodeName && wgv1.IsNodePeer(mp, in.NodeUIDs) {
			self = paths.FromSpec(mp.Spec)
			if mp.Spec.PersistentKeepalive != nil {
				ownKeepalive = *mp.Spec.PersistentKeepalive
			}
		}
	}
	var cands []candidate
	var problems []Problem
	for i := range in.Peers {
		mp := &in.Peers[i]
		if mp.Name == in.NodeName {
			continue
		}
		if excluded, _ := mp.Excluded(); excluded {
			continue
		}
		if in.NodeUIDs != nil && wgv1.IsNodePeer(mp, nil) && !wgv1.IsNodePeer(mp, in.NodeUIDs) {
			// Owned by a Node that is gone (or an older Node of that
			// name): the garbage collector or the operator is about to
			// delete or take it over. Not a peer, and not a problem: every
			// node reporting it would be a status write per node per
			// leaving node.
			continue
		}
		p, prob := parse(mp)
		if prob != nil {
			problems = append(problems, *prob)
			continue
		}
		if p.Keepalive == 0 {
			p.Keepalive = ownKeepalive
		}
		path := paths.Choose(self, paths.FromSpec(mp.Spec))
		p.Endpoint, p.Path, p.PathReason = path.Endpoint, path.Kind, path.Reason
		if path.Keepalive {
			p.Keepalive = max(p.Keepalive, paths.PunchKeepalive)
		}
		if p.PublicKey == in.PublicKey {
			// Our own key under another name: never a peer of ourselves.
			continue
		}
		c := candidate{peer: p, node: wgv1.IsNodePeer(mp, in.NodeUIDs), mp: mp}
		if !c.node {
			c.peer.NodeName = ""
		}
		cands = append(cands, c)
	}
	slices.SortFunc(cands, func(a, b candidate) int { return strings.Compare(a.peer.Name, b.peer.Name) })
	return cands, problems
}

// refuse marks in bad the candidates that copy another's key or claim
// ranges they may not (checkRanges), with every peer's endpoint protected.
func refuse(in Input, cands []candidate, bad map[string]Problem) {
	markKeyConflicts(cands, bad, in.NodeUIDs)
	protected := slices.Clone(in.Protected)
	for _, c := range cands {
		if a, err := netip.ParseAddrPort(string(c.mp.Spec.Endpoint)); err == nil {
			protected = append(protected, a.Addr().Unmap())
		}
		// A peer's own addresses (private, public) are protected; an
		// observed one is other nodes' word and protects nothing (one lying
		// agent would evict an external peer): a punched path to an address
		// an external peer routes is given up instead (punchable).
		for _, cand := range c.mp.Spec.Candidates {
			if a, err := netip.ParseAddrPort(string(cand.Endpoint)); err == nil && cand.Kind != wgv1.CandidateObserved {
				protected = append(protected, a.Addr().Unmap())
			}
		}
	}
	for _, c := range cands {
		if _, ok := bad[c.peer.Name]; ok {
			continue
		}
		if p, ok := checkRanges(in, c, protected); !ok {
			bad[c.peer.Name] = p
		}
	}
}

// resolveAllOverlaps marks in bad the candidates left that overlap: node
// peers among themselves first; external peers lose to any node peer left;
// then external peers among themselves.
func resolveAllOverlaps(cands []candidate, bad map[string]Problem) {
	var nodes, externals []candidate
	for _, c := range cands {
		if _, ok := bad[c.peer.Name]; ok {
			continue
		}
		if c.node {
			nodes = append(nodes, c)
		} else {
			externals = append(externals, c)
		}
	}
	nodes = resolveOverlaps(nodes, bad)
	var rest []candidate
	for _, c := range externals {
		if p, ok := overlapsPeer(c, nodes); ok {
			bad[c.peer.Name] = p
			continue
		}
		rest = append(rest, c)
	}
	resolveOverlaps(rest, bad)
}

// routesOf are a peer's routes: each allowed range through the tunnel, from
// this node's gateway of that family (so that replies come back through it).
func routesOf(p Peer, gateways []netip.Prefix) []Route {
	var out []Route
	for _, a := range p.AllowedIPs {
		r := Route{Dst: a, Peer: p.Name}
		for _, gw := range gateways {
			if gw.Addr().Is4() == a.Addr().Is4() {
				r.Src = gw.Addr()
				break
			}
		}
		out = append(out, r)
	}
	return out
}

// markKeyConflicts leaves out peers sharing a public key, except the one
// wgv1.KeyOwner picks: a key copied onto another node or into an external
// MeshPeer never evicts the node that had it first.
func markKeyConflicts(cands []candidate, bad map[string]Problem, nodes func(name string) (types.UID, bool)) {
	byKey := map[wgtypes.Key][]candidate{}
	for _, c := range cands {
		byKey[c.peer.PublicKey] = append(byKey[c.peer.PublicKey], c)
	}
	for _, group := range byKey {
		if len(group) < 2 {
			continue
		}
		var all []string
		var mps []*wgv1.MeshPeer
		for _, c := range group {
			all = append(all, c.peer.Name)
			mps = append(mps, c.mp)
		}
		winner := wgv1.KeyOwner(mps, nodes)
		for _, c := range group {
			if c.peer.Name == winner {
				continue
			}
			detail := fmt.Sprintf("the same key is announced by MeshPeers %s; each peer needs its own key", strings.Join(all, ", "))
			if winner != "" {
				detail = fmt.Sprintf("the key belongs to node MeshPeer %s, which announced it first; each peer needs its own key", winner)
			}
			bad[c.peer.Name] = Problem{Peer: c.peer.Name, Field: "spec.publicKey", Value: c.peer.PublicKey.String(),
				Reason: ReasonDuplicatePublicKey, Detail: detail}
		}
	}
}

// checkRanges refuses allowedIPs a peer may not claim: this node's pod
// CIDRs and the service CIDRs (any peer); ranges outside the cluster's pod
// CIDRs (node peers); the cluster's pod CIDRs and protected underlay
// addresses, which would loop WireGuard's own packets into the tunnel
// (external peers).
func checkRanges(in Input, c candidate, protected []netip.Addr) (Problem, bool) {
	prob := func(a netip.Prefix, reason, detail string) (Problem, bool) {
		return Problem{Peer: c.peer.Name, Field: "spec.allowedIPs", Value: a.String(), Reason: reason, Detail: detail}, false
	}
	for _, a := range c.peer.AllowedIPs {
		if own, ok := overlapsAny(a, in.PodCIDRs); ok {
			return prob(a, ReasonOverlappingIPs, fmt.Sprintf("overlaps this node's (%s) pod CIDR %s; use a range outside every node's pod CIDRs", in.NodeName, own))
		}
		if svc, ok := overlapsAny(a, in.ServiceCIDRs); ok {
			return prob(a, ReasonCapturesUnderlay, fmt.Sprintf("overlaps the service CIDR %s; service addresses never go through the tunnel", svc))
		}
		if c.node {
			if len(in.ClusterCIDRs) > 0 && !insideAny(a, in.ClusterCIDRs) {
				return prob(a, ReasonOutsideClusterCIDR, fmt.Sprintf("a node's allowedIPs must lie inside the cluster's pod CIDRs %s", joinPrefixes(in.ClusterCIDRs)))
			}
			continue
		}
		if cl, ok := overlapsAny(a, in.ClusterCIDRs); ok {
			return prob(a, ReasonOverlappingIPs, fmt.Sprintf("overlaps the cluster's pod CIDR %s, which only node peers carry", cl))
		}
		for _, addr := range protected {
			if a.Contains(addr) {
				return prob(a, ReasonCapturesUnderlay, fmt.Sprintf("contains %s, an underlay address (a node, a peer endpoint, an endpoint WireGuard learned from a peer behind NAT, or the API server): WireGuard's own packets would loop into the tunnel", addr))
			}
		}
	}
	return Problem{}, true
}

// resolveOverlaps leaves out, round by round, the peers that overlap the
// most others (the wide ones), until no two overlap; equals overlapping each
// other all go. It returns the peers kept.
func resolveOverlaps(set []candidate, bad map[string]Problem) []candidate {
	type hit struct {
		mine, theirs netip.Prefix
		peer         string
	}
	for {
		counts := make([]int, len(set))
		first := make([]hit, len(set))
		most := 0
		for i := range set {
			for j := range set {
				if i == j {
					continue
				}
				if a, b, ok := overlapping(set[i].peer.AllowedIPs, set[j].peer.AllowedIPs); ok {
					if counts[i] == 0 {
						first[i] = hit{mine: a, theirs: b, peer: set[j].peer.Name}
					}
					counts[i]++
				}
			}
			most = max(most, counts[i])
		}
		if most == 0 {
			return set
		}
		var keep []candidate
		for i, c := range set {
			if counts[i] < most {
				keep = append(keep, c)
				continue
			}
			h := first[i]
			detail := fmt.Sprintf("overlaps %s of MeshPeer %s; AllowedIPs must not overlap between peers", h.theirs, h.peer)
			if counts[i] > 1 {
				detail = fmt.Sprintf("overlaps %d other peers (such as %s of MeshPeer %s); AllowedIPs must not overlap between peers", counts[i], h.theirs, h.peer)
			}
			bad[c.peer.Name] = Problem{Peer: c.peer.Name, Field: "spec.allowedIPs", Value: h.mine.String(), Reason: ReasonOverlappingIPs, Detail: detail}
		}
		set = keep
	}
}

func overlapsPeer(c candidate, set []candidate) (Problem, bool) {
	for _, o := range set {
		if a, b, ok := overlapping(c.peer.AllowedIPs, o.peer.AllowedIPs); ok {
			return Problem{Peer: c.peer.Name, Field: "spec.allowedIPs", Value: a.String(), Reason: ReasonOverlappingIPs,
				Detail: fmt.Sprintf("overlaps %s of node MeshPeer %s; node pod CIDRs win over external peers", b, o.peer.Name)}, true
		}
	}
	return Problem{}, false
}

func overlapping(as, bs []netip.Prefix) (netip.Prefix, netip.Prefix, bool) {
	for _, a := range as {
		if b, ok := overlapsAny(a, bs); ok {
			return a, b, true
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}

func insideAny(p netip.Prefix, set []netip.Prefix) bool {
	for _, o := range set {
		if o.Bits() <= p.Bits() && o.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func parse(mp *wgv1.MeshPeer) (Peer, *Problem) {
	p := Peer{Name: mp.Name, NodeName: mp.Spec.NodeName, Endpoint: string(mp.Spec.Endpoint)}
	key, err := wgtypes.ParseKey(string(mp.Spec.PublicKey))
	if err != nil {
		return p, &Problem{Peer: mp.Name, Field: "spec.publicKey", Value: string(mp.Spec.PublicKey), Reason: ReasonInvalidPublicKey,
			Detail: "not " + wgv1.WantPublicKey}
	}
	p.PublicKey = key
	if p.Endpoint != "" {
		if _, err := wgv1.ParseEndpoint(p.Endpoint, true); err != nil {
			return p, &Problem{Peer: mp.Name, Field: "spec.endpoint", Value: p.Endpoint, Reason: ReasonInvalidEndpoint, Detail: err.Error()}
		}
	}
	for _, s := range mp.Spec.AllowedIPs {
		pfx, err := wgv1.ParseCIDR(string(s))
		if err != nil {
			return p, &Problem{Peer: mp.Name, Field: "spec.allowedIPs", Value: string(s), Reason: ReasonInvalidAllowedIPs, Detail: err.Error()}
		}
		p.AllowedIPs = append(p.AllowedIPs, pfx)
	}
	sortPrefixes(p.AllowedIPs)
	p.AllowedIPs = slices.Compact(p.AllowedIPs)
	if mp.Spec.PersistentKeepalive != nil {
		p.Keepalive = *mp.Spec.PersistentKeepalive
	}
	return p, nil
}

func overlapsAny(p netip.Prefix, set []netip.Prefix) (netip.Prefix, bool) {
	for _, o := range set {
		if p.Overlaps(o) {
			return o, true
		}
	}
	return netip.Prefix{}, false
}

func sortPrefixes(ps []netip.Prefix) { slices.SortFunc(ps, comparePrefix) }

// comparePrefix orders IPv4 before IPv6, then by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	if a.Addr().Is4() != b.Addr().Is4() {
		if a.Addr().Is4() {
			return -1
		}
		return 1
	}
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
