// Package paths chooses, without side effects, how two peers of the mesh
// reach each other: at a private address inside one location, at a public
// address, by hole punching through both NATs at the addresses others see
// them at, or not at all without a relay. Both ends compute the same choice
// from the same two MeshPeers (Choose(a, b) and Choose(b, a) agree on the
// kind), so no coordination is needed.
//
// The rule, first match wins, for peers a and b:
//
//	either has no location or no candidates  endpoint      spec.endpoint, as before locations
//	same location, private of one family     private       each sends to the other's private candidate
//	a public candidate of a usable family     public        each sends to the other's public one if it has one;
//	                                                        a side without one keeps its NAT open (keepalive)
//	both have observed of one family          punched       each sends to the other's observed, keepalive on both
//	otherwise                                 relay-needed  no endpoint: the pair needs a relay
//
// For a relay-needed pair of nodes, ChooseRelay picks the node that carries
// their traffic (the pair's path is then relayed), also the same on both
// sides.
//
// A private candidate is never chosen across locations, and a public or
// observed candidate equal to a private one of the same peer is not used.
package paths

import (
	"fmt"
	"slices"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Kind is how a pair of peers reaches each other. The values are metric
// labels (wgmesh_peer_paths{path}): a fixed, small set.
type Kind string

const (
	// KindEndpoint: the peer's spec.endpoint, as before locations (one of
	// the two has no location or no candidates).
	KindEndpoint Kind = "endpoint"
	// KindPrivate: a private candidate inside the shared location.
	KindPrivate Kind = "private"
	// KindPublic: a public candidate of at least one of the two.
	KindPublic Kind = "public"
	// KindPunched: both behind NAT, each sends to the other's observed
	// endpoint with keepalives until both NATs let the other in.
	KindPunched Kind = "punched"
	// KindRelayNeeded: no direct path, and (after the relay choice) no node
	// that can relay: the pair cannot talk.
	KindRelayNeeded Kind = "relay-needed"
	// KindRelayed: no direct path; another node (ChooseRelay) carries the
	// pair's traffic. Never Choose's answer: the topology sets it.
	KindRelayed Kind = "relayed"
)

// Kinds are every Kind, in the order metrics list them.
var Kinds = []Kind{KindEndpoint, KindPrivate, KindPublic, KindPunched, KindRelayed, KindRelayNeeded}

// PunchKeepalive is the persistent keepalive, in seconds, of a side that
// must keep its NAT's mapping open (a punched path, or the side of a
// public path without a public candidate): under the 30 s many NATs keep
// an idle UDP mapping.
const PunchKeepalive = 25

// Peer is one end of a pair, as its MeshPeer spec says.
type Peer struct {
	Location   string
	Candidates []wgv1.Candidate
	// Endpoint is spec.endpoint (may be empty).
	Endpoint string
}

// FromSpec is the Peer a MeshPeer spec describes.
func FromSpec(s wgv1.MeshPeerSpec) Peer {
	return Peer{Location: string(s.Location), Candidates: s.Candidates, Endpoint: string(s.Endpoint)}
}

// Path is what one side does towards the other.
type Path struct {
	Kind Kind
	// Endpoint is where this side sends to the other; empty: it waits for
	// the other's handshake (WireGuard then answers where it came from).
	Endpoint string
	// Keepalive: this side must send keepalives (PunchKeepalive at least)
	// to keep its NAT's mapping towards the other open.
	Keepalive bool
	// Reason says why a relay is needed; empty otherwise.
	Reason string
}

// Choose is the path local uses towards remote. Choose(a, b).Kind ==
// Choose(b, a).Kind for all a and b; the result does not depend on the
// order of candidates.
func Choose(local, remote Peer) Path {
	if local.Location == "" || remote.Location == "" {
		return Path{Kind: KindEndpoint, Endpoint: remote.Endpoint}
	}
	l, r := parse(local.Candidates), parse(remote.Candidates)
	if len(l.all) == 0 || len(r.all) == 0 {
		return Path{Kind: KindEndpoint, Endpoint: remote.Endpoint}
	}
	if local.Location == remote.Location {
		if ep, ok := firstOfFamilies(r.private, families(l.private)); ok {
			return Path{Kind: KindPrivate, Endpoint: ep.text}
		}
	}
	toRemote, remoteReachable := firstOfFamilies(r.public, families(l.all))
	_, localReachable := firstOfFamilies(l.public, families(r.all))
	switch {
	case remoteReachable:
		// Without a public address of our own we are behind NAT as far as
		// the remote knows: keep our mapping towards it open.
		return Path{Kind: KindPublic, Endpoint: toRemote.text, Keepalive: !localReachable}
	case localReachable:
		// The remote sends first, to our public address; we answer where
		// its handshake came from.
		return Path{Kind: KindPublic}
	}
	if ep, ok := firstOfFamilies(r.observed, families(l.observed)); ok {
		return Path{Kind: KindPunched, Endpoint: ep.text, Keepalive: true}
	}
	var why string
	switch {
	case len(l.observed) == 0 && len(r.observed) == 0:
		why = "neither has a public candidate or an observed endpoint"
	case len(l.observed) == 0:
		why = "neither has a public candidate and this node has no observed endpoint"
	case len(r.observed) == 0:
		why = "neither has a public candidate and the peer has no observed endpoint"
	default:
		why = "neither has a public candidate and their observed endpoints share no address family"
	}
	return Path{Kind: KindRelayNeeded, Reason: fmt.Sprintf("relay needed (%s to %s): %s", local.Location, remote.Location, why)}
}

// endpoint is a parsed candidate: fam is 4 or 6, or 0 for a DNS name
// (reachable from either family, as far as we can tell).
type endpoint struct {
	text string
	fam  int
	host string
}

type parsed struct {
	private, public, observed, all []endpoint
}

// parse sorts a peer's usable candidates by kind; unparsable ones (which
// the CRD refuses) and public or observed ones that name a private
// candidate's host are dropped.
func parse(cs []wgv1.Candidate) parsed {
	cs = slices.Clone(cs)
	wgv1.SortCandidates(cs)
	cs = slices.Compact(cs)
	var p parsed
	privateHosts := map[string]bool{}
	for _, c := range cs {
		hp, err := wgv1.ParseCandidate(c)
		if err != nil {
			continue
		}
		e := endpoint{text: hp.String(), host: hp.Host}
		switch {
		case hp.Addr.Is4():
			e.fam = 4
		case hp.Addr.Is6():
			e.fam = 6
		}
		if e.fam != 0 {
			e.host = hp.Addr.Unmap().String()
		}
		switch c.Kind {
		case wgv1.CandidatePrivate:
			privateHosts[e.host] = true
			p.private = append(p.private, e)
		case wgv1.CandidatePublic:
			if privateHosts[e.host] {
				continue
			}
			p.public = append(p.public, e)
		case wgv1.CandidateObserved:
			if privateHosts[e.host] {
				continue
			}
			p.observed = append(p.observed, e)
		}
		p.all = append(p.all, e)
	}
	return p
}

// families are the address families of endpoints; a DNS name counts as
// both.
func families(es []endpoint) map[int]bool {
	out := map[int]bool{}
	for _, e := range es {
		if e.fam == 0 {
			out[4], out[6] = true, true
		} else {
			out[e.fam] = true
		}
	}
	return out
}

// firstOfFamilies is the first endpoint of es in one of fams (a DNS name
// fits any family the other side has).
func firstOfFamilies(es []endpoint, fams map[int]bool) (endpoint, bool) {
	for _, e := range es {
		if (e.fam == 0 && len(fams) > 0) || fams[e.fam] {
			return e, true
		}
	}
	return endpoint{}, false
}
