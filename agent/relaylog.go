package agent

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
)

// Event reasons of the relay data plane.
const (
	// ReasonPeerRelayed: a peer without a direct path is now reached
	// through a relay (or through another one).
	ReasonPeerRelayed = "PeerRelayed"
	// ReasonPeerDirect: a relayed peer is reached directly again.
	ReasonPeerDirect = "PeerDirect"
	// ReasonNoRelay: a peer without a direct path has no relay either: pods
	// on the two nodes cannot talk.
	ReasonNoRelay = "NoRelay"
)

// relayState remembers, per peer, the relay it was reached through at the
// last reconcile ("" when reached directly, noRelay when it had none), so
// that falling back to a relay, moving to another and returning are each
// logged and recorded as an Event on this node's Node once. A restart
// starts empty: the relays in use are told again.
type relayState map[string]string

const noRelay = "\x00none"

// reportRelays logs and records Events for changes of how peers are
// relayed (paths.KindRelayed, or relay-needed without a relay).
func (a *Agent) reportRelays(node *corev1.Node, peers []mesh.Peer) {
	if a.relays == nil {
		a.relays = relayState{}
	}
	now := relayState{}
	for _, p := range peers {
		switch p.Path {
		case paths.KindRelayed:
			now[p.Name] = p.Relay
		case paths.KindRelayNeeded:
			now[p.Name] = noRelay
		}
	}
	for _, p := range peers {
		was, had := a.relays[p.Name]
		is := now[p.Name]
		if was == is {
			continue
		}
		switch {
		case is == noRelay:
			msg := fmt.Sprintf("node %s cannot reach peer %s: %s", a.o.NodeName, p.Name, p.PathReason)
			a.log.Info("peer has no path and no relay", "meshpeer", p.Name, "reason", p.PathReason)
			a.events.Eventf(node, nil, corev1.EventTypeWarning, ReasonNoRelay, "ChooseRelay", "%s", msg)
		case is != "":
			from := "no direct path"
			if had && was != noRelay {
				from = "its relay " + was + " is gone or no longer reaches both"
			}
			msg := fmt.Sprintf("node %s reaches peer %s through relay %s (%s): %s", a.o.NodeName, p.Name, is, from, p.PathReason)
			a.log.Info("peer relayed", "meshpeer", p.Name, "relay", is, "previousRelay", strings.TrimPrefix(was, noRelay), "reason", p.PathReason)
			a.events.Eventf(node, nil, corev1.EventTypeNormal, ReasonPeerRelayed, "ChooseRelay", "%s", msg)
		case had:
			msg := fmt.Sprintf("node %s reaches peer %s directly again (%s path)", a.o.NodeName, p.Name, p.Path)
			a.log.Info("peer reached directly again", "meshpeer", p.Name, "path", p.Path, "previousRelay", strings.TrimPrefix(was, noRelay))
			a.events.Eventf(node, nil, corev1.EventTypeNormal, ReasonPeerDirect, "ChooseRelay", "%s", msg)
		}
	}
	a.relays = now
}
