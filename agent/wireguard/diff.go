package wireguard

import (
	"bytes"
	"net"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Diff returns the per-peer changes that turn current into desired: removals
// of peers no longer wanted, additions, and updates of only the peers whose
// AllowedIPs, keepalive or endpoint differ. An empty result means the device
// must not be touched. The result is sorted by public key.
func Diff(desired []Peer, current []wgtypes.Peer) []wgtypes.PeerConfig {
	return DiffAt(desired, current, time.Now())
}

// DiffAt is Diff with the clock given, for the endpoint rule: a configured
// endpoint replaces the current one only when the peer has had no handshake
// within ConnectedWithin. A live session on another address means WireGuard
// learned a better one (a peer behind NAT, or a configured endpoint that is
// unreachable from here); resetting it every reconcile would break the session.
func DiffAt(desired []Peer, current []wgtypes.Peer, now time.Time) []wgtypes.PeerConfig {
	cur := make(map[wgtypes.Key]*wgtypes.Peer, len(current))
	for i := range current {
		cur[current[i].PublicKey] = &current[i]
	}
	want := make(map[wgtypes.Key]bool, len(desired))
	for _, d := range desired {
		want[d.PublicKey] = true
	}
	var out []wgtypes.PeerConfig
	for _, d := range desired {
		c, ok := cur[d.PublicKey]
		if !ok {
			ka := d.Keepalive
			ep := inheritedEndpoint(d, current, want, now)
			out = append(out, wgtypes.PeerConfig{
				PublicKey:                   d.PublicKey,
				Endpoint:                    ep,
				PersistentKeepaliveInterval: &ka,
				ReplaceAllowedIPs:           true,
				AllowedIPs:                  toIPNets(d.AllowedIPs),
			})
			continue
		}
		pc := wgtypes.PeerConfig{PublicKey: d.PublicKey, UpdateOnly: true}
		changed := false
		if !sameAllowedIPs(d, c) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = toIPNets(d.AllowedIPs)
			changed = true
		}
		if d.Keepalive != c.PersistentKeepaliveInterval {
			ka := d.Keepalive
			pc.PersistentKeepaliveInterval = &ka
			changed = true
		}
		if d.Endpoint != nil && !udpEqual(d.Endpoint, c.Endpoint) && (d.Pinned || !Connected(*c, now)) {
			pc.Endpoint = d.Endpoint
			changed = true
		}
		if changed {
			out = append(out, pc)
		}
	}
	for _, c := range current {
		if !want[c.PublicKey] {
			out = append(out, wgtypes.PeerConfig{PublicKey: c.PublicKey, Remove: true})
		}
	}
	slices.SortFunc(out, func(a, b wgtypes.PeerConfig) int { return bytes.Compare(a.PublicKey[:], b.PublicKey[:]) })
	return out
}

// inheritedEndpoint is the endpoint a new peer starts from. When it takes
// over exactly the AllowedIPs of a removed peer (the same node with a
// rotated key), that peer's endpoint as WireGuard learned it from its packets wins over
// the configured one if its session was live (the rule DiffAt applies to
// existing peers), and is used when none is configured: a node behind NAT
// announces an address the others cannot reach, and without this nobody
// could send to it until it sent first. Otherwise the configured endpoint.
// Among several such peers, the most recently handshaken one. (Another
// node given a departed node's pod CIDR in the same diff would start from
// the departed one's address: without a handshake there, the next
// reconcile sets its configured endpoint.)
func inheritedEndpoint(d Peer, current []wgtypes.Peer, want map[wgtypes.Key]bool, now time.Time) *net.UDPAddr {
	var best *wgtypes.Peer
	for i := range current {
		c := &current[i]
		if want[c.PublicKey] || c.Endpoint == nil || !sameAllowedIPs(d, c) {
			continue
		}
		if best == nil || c.LastHandshakeTime.After(best.LastHandshakeTime) {
			best = c
		}
	}
	if best != nil && (d.Endpoint == nil || Connected(*best, now)) {
		return best.Endpoint
	}
	return d.Endpoint
}

func sameAllowedIPs(d Peer, c *wgtypes.Peer) bool {
	if len(d.AllowedIPs) != len(c.AllowedIPs) {
		return false
	}
	have := make(map[string]bool, len(c.AllowedIPs))
	for _, n := range c.AllowedIPs {
		have[fromIPNet(n).String()] = true
	}
	for _, p := range d.AllowedIPs {
		if !have[p.Masked().String()] {
			return false
		}
	}
	return true
}
