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

	"github.com/wgmesh/wgmesh/agent/endpoint"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
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
}

// Peer is one desired WireGuard peer. Endpoint is host:port as written in the
// MeshPeer (possibly a DNS name); resolving it is a side effect left to the
// caller.
type Peer struct {
	Name       string // MeshPeer name
	NodeName   string // empty for external peers
	PublicKey  wgtypes.Key
	Endpoint   string
	AllowedIPs []netip.Prefix
	Keepalive  int32 // seconds, 0 = off
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
)

type candidate struct {
	peer Peer
	node bool
}

// New computes the topology. Peers that are this node, that the operator
// excluded, or that cannot be used are left out; the unusable ones are
// returned as Problems while every other peer keeps working.
func New(in Input) Topology {
	var t Topology
	for _, c := range in.PodCIDRs {
		if gw, ok := Gateway(c); ok {
			t.Gateways = append(t.Gateways, gw)
		}
	}
	sortPrefixes(t.Gateways)

	// A keepalive set on this node's own MeshPeer (a node behind NAT) is
	// used towards every peer that has none of its own: the NATed side must
	// send first and keep its mapping open.
	var ownKeepalive int32
	for i := range in.Peers {
		if mp := &in.Peers[i]; mp.Spec.NodeName == in.NodeName && mp.Spec.PersistentKeepalive != nil {
			ownKeepalive = *mp.Spec.PersistentKeepalive
		}
	}
	var cands []candidate
	for i := range in.Peers {
		mp := &in.Peers[i]
		if mp.Spec.NodeName != "" && mp.Spec.NodeName == in.NodeName {
			continue
		}
		if mp.Name == in.NodeName && mp.Spec.NodeName == "" {
			continue
		}
		if excluded, _ := mp.Excluded(); excluded {
			continue
		}
		p, prob := parse(mp)
		if prob != nil {
			t.Problems = append(t.Problems, *prob)
			continue
		}
		if p.Keepalive == 0 {
			p.Keepalive = ownKeepalive
		}
		if p.PublicKey == in.PublicKey {
			// Our own key under another name: never a peer of ourselves.
			continue
		}
		cands = append(cands, candidate{peer: p, node: mp.Spec.NodeName != ""})
	}
	slices.SortFunc(cands, func(a, b candidate) int { return strings.Compare(a.peer.Name, b.peer.Name) })

	bad := map[string]Problem{}
	// Duplicate keys: both are left out, never merged.
	byKey := map[wgtypes.Key][]string{}
	for _, c := range cands {
		byKey[c.peer.PublicKey] = append(byKey[c.peer.PublicKey], c.peer.Name)
	}
	for _, c := range cands {
		if others := byKey[c.peer.PublicKey]; len(others) > 1 {
			bad[c.peer.Name] = Problem{Peer: c.peer.Name, Field: "spec.publicKey", Value: c.peer.PublicKey.String(),
				Reason: ReasonDuplicatePublicKey, Detail: fmt.Sprintf("the same key is announced by MeshPeers %s; each peer needs its own key", strings.Join(others, ", "))}
		}
	}
	// AllowedIPs overlapping this node's pod CIDRs, or another peer's.
	for i, c := range cands {
		if _, ok := bad[c.peer.Name]; ok {
			continue
		}
		for _, a := range c.peer.AllowedIPs {
			if own, ok := overlapsAny(a, in.PodCIDRs); ok {
				bad[c.peer.Name] = Problem{Peer: c.peer.Name, Field: "spec.allowedIPs", Value: a.String(), Reason: ReasonOverlappingIPs,
					Detail: fmt.Sprintf("overlaps this node's (%s) pod CIDR %s; use a range outside every node's pod CIDRs", in.NodeName, own)}
				break
			}
		}
		if _, ok := bad[c.peer.Name]; ok {
			continue
		}
		for j, o := range cands {
			if i == j {
				continue
			}
			// A node peer's AllowedIPs come from the operator and win
			// over an external peer's; between equals both lose.
			if c.node && !o.node {
				continue
			}
			if _, ok := bad[o.peer.Name]; ok && bad[o.peer.Name].Reason == ReasonDuplicatePublicKey {
				continue
			}
			for _, a := range c.peer.AllowedIPs {
				if other, ok := overlapsAny(a, o.peer.AllowedIPs); ok {
					bad[c.peer.Name] = Problem{Peer: c.peer.Name, Field: "spec.allowedIPs", Value: a.String(), Reason: ReasonOverlappingIPs,
						Detail: fmt.Sprintf("overlaps %s of MeshPeer %s; AllowedIPs must not overlap between peers", other, o.peer.Name)}
					break
				}
			}
			if _, ok := bad[c.peer.Name]; ok {
				break
			}
		}
	}

	for _, c := range cands {
		if p, ok := bad[c.peer.Name]; ok {
			t.Problems = append(t.Problems, p)
			continue
		}
		t.Peers = append(t.Peers, c.peer)
		for _, a := range c.peer.AllowedIPs {
			r := Route{Dst: a, Peer: c.peer.Name}
			for _, gw := range t.Gateways {
				if gw.Addr().Is4() == a.Addr().Is4() {
					r.Src = gw.Addr()
					break
				}
			}
			t.Routes = append(t.Routes, r)
		}
	}
	slices.SortFunc(t.Routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	slices.SortFunc(t.Problems, func(a, b Problem) int {
		if c := strings.Compare(a.Peer, b.Peer); c != 0 {
			return c
		}
		return strings.Compare(a.Field, b.Field)
	})
	return t
}

func parse(mp *wgv1.MeshPeer) (Peer, *Problem) {
	p := Peer{Name: mp.Name, NodeName: mp.Spec.NodeName, Endpoint: string(mp.Spec.Endpoint)}
	key, err := wgtypes.ParseKey(string(mp.Spec.PublicKey))
	if err != nil {
		return p, &Problem{Peer: mp.Name, Field: "spec.publicKey", Value: string(mp.Spec.PublicKey), Reason: ReasonInvalidPublicKey,
			Detail: "not a WireGuard public key; want 32 bytes in base64"}
	}
	p.PublicKey = key
	if p.Endpoint != "" {
		if err := endpoint.Validate(p.Endpoint); err != nil {
			return p, &Problem{Peer: mp.Name, Field: "spec.endpoint", Value: p.Endpoint, Reason: ReasonInvalidEndpoint, Detail: err.Error()}
		}
	}
	for _, s := range mp.Spec.AllowedIPs {
		pfx, err := netip.ParsePrefix(string(s))
		if err != nil || pfx.Masked() != pfx {
			return p, &Problem{Peer: mp.Name, Field: "spec.allowedIPs", Value: string(s), Reason: ReasonInvalidAllowedIPs,
				Detail: "not a CIDR in canonical form (such as 10.244.1.0/24 or 2001:db8:1::/64)"}
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

// Gateway is the bridge gateway address of a pod CIDR: its first address,
// with the CIDR's prefix length.
func Gateway(podCIDR netip.Prefix) (netip.Prefix, bool) {
	podCIDR = podCIDR.Masked()
	gw := podCIDR.Addr().Next()
	if !gw.IsValid() || !podCIDR.Contains(gw) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(gw, podCIDR.Bits()), true
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
