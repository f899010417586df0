package operator

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/podnet"
)

// Problems are the operator's findings about one MeshPeer; an empty message
// means no problem.
type Problems struct {
	KeyConflict        string
	AllowedIPsConflict string
}

// maxListed caps how many other peers or CIDRs a condition message names.
const maxListed = 5

// ConflictInput is what conflicts are computed from.
type ConflictInput struct {
	Peers []wgv1.MeshPeer
	Nodes []corev1.Node
	// ClusterCIDRs are the cluster's pod ranges (--cluster-cidrs): a node's
	// pod CIDRs must lie inside them. Empty: not checked.
	ClusterCIDRs []netip.Prefix
	// Protected are addresses no external peer may route into the tunnel
	// (the API server's). Protected too (ProtectedAddrs): every Node's
	// InternalIP and ExternalIP, its wgmesh.io/force-endpoint, every
	// external peer's endpoint, and every endpoint learned from handshakes
	// that LearnedQuorum nodes report. A node peer's spec endpoint protects
	// only as one of those: an address a node merely announced never does.
	Protected []netip.Addr
}

// LearnedQuorum is how many nodes must report an address in their
// MeshPeer's status.learnedEndpoints before it protects: each agent writes
// its own status, so one compromised agent could otherwise name any
// external peer's address and evict it. Each node's agent keeps the
// endpoints it learned clear on its own node whatever the others report.
const LearnedQuorum = 2

// ProtectedAddr is an underlay address no external peer may claim, and
// what it is, for messages.
type ProtectedAddr struct {
	Addr netip.Addr
	What string
}

// LearnedReport is one address nodes report as a learned WireGuard
// endpoint: by which nodes, of which node peers (sorted).
type LearnedReport struct {
	Addr      netip.Addr
	Reporters []string
	Peers     []string
}

// LearnedReports collects the learned endpoints that node peers report in
// their status about other node peers, by address, sorted. Reports by a
// MeshPeer that is not a node's (anyone may write an external peer's
// status), about a peer that is not another node's, or unparsable, are
// ignored.
func LearnedReports(peers []wgv1.MeshPeer, nodes []corev1.Node) []LearnedReport {
	uids := nodeUIDs(nodes)
	isNode := map[string]bool{}
	for i := range peers {
		if wgv1.IsNodePeer(&peers[i], uids) {
			isNode[peers[i].Name] = true
		}
	}
	byAddr := map[netip.Addr]*LearnedReport{}
	for i := range peers {
		mp := &peers[i]
		if !isNode[mp.Name] {
			continue
		}
		for _, l := range mp.Status.LearnedEndpoints {
			a, err := netip.ParseAddr(l.Address)
			if err != nil || !isNode[l.Peer] || l.Peer == mp.Name {
				continue
			}
			a = a.Unmap()
			r := byAddr[a]
			if r == nil {
				r = &LearnedReport{Addr: a}
				byAddr[a] = r
			}
			if !slices.Contains(r.Reporters, mp.Name) {
				r.Reporters = append(r.Reporters, mp.Name)
			}
			if !slices.Contains(r.Peers, l.Peer) {
				r.Peers = append(r.Peers, l.Peer)
			}
		}
	}
	out := make([]LearnedReport, 0, len(byAddr))
	for _, r := range byAddr {
		sort.Strings(r.Reporters)
		sort.Strings(r.Peers)
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// ProtectedAddrs are the underlay addresses no external peer's allowedIPs
// may contain, each with what it is (see ConflictInput.Protected).
func ProtectedAddrs(in ConflictInput) []ProtectedAddr {
	var out []ProtectedAddr
	for _, a := range in.Protected {
		out = append(out, ProtectedAddr{Addr: a.Unmap(), What: "the API server"})
	}
	for i := range in.Nodes {
		n := &in.Nodes[i]
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && (a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP) {
				out = append(out, ProtectedAddr{Addr: ip.Unmap(), What: fmt.Sprintf("%s of Node %s", a.Type, n.Name)})
			}
		}
		if hp, err := wgv1.ParseEndpoint(n.Annotations[wgv1.AnnotationForceEndpoint], true); err == nil && hp.Addr.IsValid() {
			out = append(out, ProtectedAddr{Addr: hp.Addr.Unmap(), What: fmt.Sprintf("the %s of Node %s", wgv1.AnnotationForceEndpoint, n.Name)})
		}
	}
	uids := nodeUIDs(in.Nodes)
	for i := range in.Peers {
		mp := &in.Peers[i]
		if wgv1.IsNodePeer(mp, uids) {
			continue // its endpoint is one of the above, or protects nothing
		}
		if hp, err := wgv1.ParseEndpoint(string(mp.Spec.Endpoint), true); err == nil && hp.Addr.IsValid() {
			out = append(out, ProtectedAddr{Addr: hp.Addr.Unmap(), What: fmt.Sprintf("the endpoint of MeshPeer %s", mp.Name)})
		}
	}
	for _, r := range LearnedReports(in.Peers, in.Nodes) {
		if len(r.Reporters) >= LearnedQuorum {
			peers := "node " + r.Peers[0]
			if len(r.Peers) > 1 {
				peers = "nodes " + listNames(r.Peers)
			}
			out = append(out, ProtectedAddr{Addr: r.Addr, What: fmt.Sprintf("the WireGuard endpoint of %s, learned from handshakes by nodes %s",
				peers, listNames(r.Reporters))})
		}
	}
	return out
}

// FindConflicts computes, from all MeshPeers and Nodes, which peers share a
// public key (the node that published it first keeps it), which node peers
// carry pod CIDRs they may not publish (PodCIDRConflicts), and which
// external peers claim a node's pod CIDRs or an underlay address. Only
// peers with a problem are in the result.
func FindConflicts(in ConflictInput) map[string]Problems {
	out := map[string]Problems{}
	uids := nodeUIDs(in.Nodes)

	byKey := map[wgv1.PublicKey][]*wgv1.MeshPeer{}
	for i := range in.Peers {
		byKey[in.Peers[i].Spec.PublicKey] = append(byKey[in.Peers[i].Spec.PublicKey], &in.Peers[i])
	}
	for key, group := range byKey {
		if len(group) < 2 {
			continue
		}
		owner := wgv1.KeyOwner(group, uids)
		var names []string
		for _, mp := range group {
			names = append(names, mp.Name)
		}
		sort.Strings(names)
		for _, n := range names {
			if n == owner {
				continue
			}
			var others []string
			for _, o := range names {
				if o != n {
					others = append(others, o)
				}
			}
			p := out[n]
			if owner != "" {
				p.KeyConflict = fmt.Sprintf("publicKey %s belongs to node MeshPeer %s, which published it first; this peer is left out of the mesh until it uses its own key", key, owner)
			} else {
				p.KeyConflict = fmt.Sprintf("publicKey %s is also used by MeshPeer %s; both are left out of the mesh until one changes its key", key, listNames(others))
			}
			out[n] = p
		}
	}

	for name, msg := range PodCIDRConflicts(in.Nodes, in.Peers, in.ClusterCIDRs) {
		if i := slices.IndexFunc(in.Peers, func(mp wgv1.MeshPeer) bool { return mp.Name == name }); i >= 0 && wgv1.IsNodePeer(&in.Peers[i], uids) {
			p := out[name]
			p.AllowedIPsConflict = msg
			out[name] = p
		}
	}

	type nodeCIDR struct {
		node   string
		prefix netip.Prefix
	}
	var podCIDRs []nodeCIDR
	for i := range in.Nodes {
		for _, s := range podnet.NodeCIDRStrings(&in.Nodes[i]) {
			if p, err := netip.ParsePrefix(s); err == nil {
				podCIDRs = append(podCIDRs, nodeCIDR{node: in.Nodes[i].Name, prefix: p.Masked()})
			}
		}
	}
	protected := ProtectedAddrs(in)
	sort.Slice(podCIDRs, func(i, j int) bool { return podCIDRs[i].node < podCIDRs[j].node })
	for i := range in.Peers {
		mp := &in.Peers[i]
		if wgv1.IsNodePeer(mp, uids) {
			continue
		}
		var hits []string
		for _, a := range mp.Spec.AllowedIPs {
			ap, err := netip.ParsePrefix(string(a))
			if err != nil {
				continue
			}
			for _, nc := range podCIDRs {
				if ap.Overlaps(nc.prefix) {
					hits = append(hits, fmt.Sprintf("%s overlaps pod CIDR %s of node %s", a, nc.prefix, nc.node))
				}
			}
			for _, c := range in.ClusterCIDRs {
				if ap.Overlaps(c) && len(hits) == 0 {
					hits = append(hits, fmt.Sprintf("%s overlaps the cluster's pod CIDR %s", a, c))
				}
			}
			for _, p := range protected {
				if ap.Contains(p.Addr) {
					hits = append(hits, fmt.Sprintf("%s contains underlay address %s (%s), which would loop WireGuard's own packets into the tunnel", a, p.Addr, p.What))
					break
				}
			}
		}
		if len(hits) > 0 {
			p := out[mp.Name]
			p.AllowedIPsConflict = "allowedIPs " + listNames(hits) + "; this peer is left out of the mesh until its allowedIPs stay clear of the cluster's pod CIDRs and underlay addresses"
			out[mp.Name] = p
		}
	}
	return out
}

// PodCIDRConflicts names the nodes whose pod CIDRs may not be published,
// with why: CIDRs outside the cluster's pod CIDRs, or overlapping another
// node's. Of two overlapping nodes the one whose MeshPeer already publishes
// its CIDRs keeps them (then the older Node, then the name), so a Node that
// arrives with pre-set podCIDRs overlapping an existing node's never takes
// the mesh away from the nodes already in it.
func PodCIDRConflicts(nodes []corev1.Node, peers []wgv1.MeshPeer, cluster []netip.Prefix) map[string]string {
	uids := nodeUIDs(nodes)
	published := map[string]bool{}
	for i := range peers {
		if wgv1.IsNodePeer(&peers[i], uids) && len(peers[i].Spec.AllowedIPs) > 0 {
			published[peers[i].Name] = true
		}
	}
	type entry struct {
		node    *corev1.Node
		cidrs   []netip.Prefix
		outside string
	}
	var es []entry
	for i := range nodes {
		e := entry{node: &nodes[i]}
		for _, s := range podnet.NodeCIDRStrings(&nodes[i]) {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				continue
			}
			p = p.Masked()
			if len(cluster) > 0 && !slices.ContainsFunc(cluster, func(c netip.Prefix) bool { return c.Bits() <= p.Bits() && c.Contains(p.Addr()) }) && e.outside == "" {
				e.outside = fmt.Sprintf("pod CIDR %s of node %s lies outside the cluster's pod CIDRs %s (--cluster-cidrs); the node is left out of the mesh", p, nodes[i].Name, joinPrefixes(cluster))
			}
			e.cidrs = append(e.cidrs, p)
		}
		es = append(es, e)
	}
	// Incumbents first: they keep their CIDRs.
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i].node, es[j].node
		if published[a.Name] != published[b.Name] {
			return published[a.Name]
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	out := map[string]string{}
	// kept: every published prefix, with its node; covered: every prefix
	// that contains a published one. Two prefixes overlap when one contains
	// the other, so each check is at most 128 map lookups.
	kept := map[netip.Prefix]string{}
	covered := map[netip.Prefix]netip.Prefix{}
	for _, e := range es {
		if e.outside != "" {
			out[e.node.Name] = e.outside
			continue
		}
		clash := ""
		for _, a := range e.cidrs {
			other, ok := covered[a]
			for bits := a.Bits(); !ok && bits >= 0; bits-- {
				anc := netip.PrefixFrom(a.Addr(), bits).Masked()
				if _, ok = kept[anc]; ok {
					other = anc
				}
			}
			if ok {
				clash = fmt.Sprintf("pod CIDR %s of node %s overlaps pod CIDR %s of node %s, which is already in the mesh; the node is left out until its spec.podCIDRs is fixed (re-create the Node without podCIDRs to get a free range)", a, e.node.Name, other, kept[other])
				break
			}
		}
		if clash != "" {
			out[e.node.Name] = clash
			continue
		}
		for _, a := range e.cidrs {
			kept[a] = e.node.Name
			for bits := a.Bits(); bits >= 0; bits-- {
				if _, ok := covered[netip.PrefixFrom(a.Addr(), bits).Masked()]; !ok {
					covered[netip.PrefixFrom(a.Addr(), bits).Masked()] = a
				}
			}
		}
	}
	return out
}

// PodCIDRConflictOf is PodCIDRConflicts(nodes, peers, cluster)[name],
// computed on the nodes whose pod CIDRs overlap name's, directly or through
// others (its component of the overlap graph): only they can decide it. In
// the common case, no overlap, that is one pass over the nodes instead of a
// sort of all of them, which at a thousand nodes was half the operator's CPU
// (it runs for every node event).
func PodCIDRConflictOf(name string, nodes []corev1.Node, peers []wgv1.MeshPeer, cluster []netip.Prefix) string {
	cidrs := make([][]netip.Prefix, len(nodes))
	self := -1
	for i := range nodes {
		cidrs[i] = podnet.NodeCIDRs(&nodes[i])
		if nodes[i].Name == name {
			self = i
		}
	}
	if self < 0 {
		return ""
	}
	in := map[int]bool{self: true}
	queue := []int{self}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for j := range nodes {
			if in[j] || !overlapsAnyPrefix(cidrs[cur], cidrs[j]) {
				continue
			}
			in[j] = true
			queue = append(queue, j)
		}
	}
	component := make([]corev1.Node, 0, len(in))
	for i := range nodes {
		if in[i] {
			component = append(component, nodes[i])
		}
	}
	return PodCIDRConflicts(component, peers, cluster)[name]
}

func overlapsAnyPrefix(as, bs []netip.Prefix) bool {
	for _, a := range as {
		for _, b := range bs {
			if a.Overlaps(b) {
				return true
			}
		}
	}
	return false
}

func nodeUIDs(nodes []corev1.Node) func(name string) (types.UID, bool) {
	m := make(map[string]types.UID, len(nodes))
	for i := range nodes {
		m[nodes[i].Name] = nodes[i].UID
	}
	return func(name string) (types.UID, bool) {
		uid, ok := m[name]
		return uid, ok
	}
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func listNames(s []string) string {
	if len(s) <= maxListed {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(s[:maxListed], ", "), len(s)-maxListed)
}
