package paths

import (
	"crypto/sha256"
	"encoding/binary"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Node is a node peer as the relay choice sees it: its name, its MeshPeer
// spec's path fields and relay preference (spec.relay).
type Node struct {
	Name  string
	Peer  Peer
	Relay wgv1.RelayPreference
}

// NodeFromSpec is the Node a node MeshPeer describes.
func NodeFromSpec(name string, s wgv1.MeshPeerSpec) Node {
	return Node{Name: name, Peer: FromSpec(s), Relay: s.Relay}
}

// RelayNodes are the node MeshPeers that take part in the relay choice
// (ends and relays): those of a live Node (wgv1.IsNodePeer with nodes; nil:
// the UID is not checked), not left out by the operator and not on a Node
// that is not Ready. Only the MeshPeers decide, so every node sees the
// same.
func RelayNodes(peers []wgv1.MeshPeer, nodes func(name string) (types.UID, bool)) []Node {
	var out []Node
	for i := range peers {
		mp := &peers[i]
		if !wgv1.IsNodePeer(mp, nodes) {
			continue
		}
		if excluded, _ := mp.Excluded(); excluded {
			continue
		}
		if c := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionNodeNotReady); c != nil && c.Status == metav1.ConditionTrue {
			continue
		}
		out = append(out, NodeFromSpec(mp.Name, mp.Spec))
	}
	return out
}

// Direct reports whether a path kind reaches the other side without
// depending on a NAT's behaviour: private or public. Only such paths may
// carry relayed traffic (a punched path fails with a symmetric NAT, an
// endpoint path says nothing about the network between the two).
func Direct(k Kind) bool { return k == KindPrivate || k == KindPublic }

// ChooseRelay is the node that relays the traffic between the nodes named
// a and b, which have no direct path (relay-needed), chosen among nodes:
// never a or b, never a node whose spec.relay is never, only a node whose
// paths with both a and b are Direct; nodes preferring to relay
// (spec.relay prefer) first; among equals the one with the highest hash of
// (a, b, the node) (rendezvous hashing: pairs spread over the relays, and
// a relay that goes moves only its own pairs). ChooseRelay(a, b, nodes) ==
// ChooseRelay(b, a, nodes) and does not depend on the order of nodes;
// false: no node can relay.
func ChooseRelay(a, b string, nodes []Node) (string, bool) {
	var pa, pb *Peer
	for i := range nodes {
		switch nodes[i].Name {
		case a:
			pa = &nodes[i].Peer
		case b:
			pb = &nodes[i].Peer
		}
	}
	if pa == nil || pb == nil || a == b {
		return "", false
	}
	var best string
	var bestPrefer bool
	var bestHash uint64
	for _, n := range nodes {
		if n.Name == a || n.Name == b || n.Relay == wgv1.RelayNever {
			continue
		}
		if !Direct(Choose(n.Peer, *pa).Kind) || !Direct(Choose(n.Peer, *pb).Kind) {
			continue
		}
		prefer, h := n.Relay == wgv1.RelayPrefer, relayHash(a, b, n.Name)
		if best == "" || (prefer && !bestPrefer) || (prefer == bestPrefer && (h > bestHash || (h == bestHash && n.Name < best))) {
			best, bestPrefer, bestHash = n.Name, prefer, h
		}
	}
	return best, best != ""
}

// relayHash is a stable hash of the unordered pair {a, b} and the relay r.
func relayHash(a, b, r string) uint64 {
	if b < a {
		a, b = b, a
	}
	h := sha256.New()
	for _, s := range []string{a, b, r} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return binary.BigEndian.Uint64(h.Sum(nil))
}
