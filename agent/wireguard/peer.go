// Package wireguard owns the WireGuard link wgmesh0: it creates it (kernel
// module or userspace WireGuard in its own long-lived process) and configures
// it only through wgctrl, applying per-peer differences.
package wireguard

import (
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is one desired WireGuard peer, endpoint already resolved.
type Peer struct {
	PublicKey wgtypes.Key
	// Endpoint is nil when the peer has none (behind NAT) or it could not be
	// resolved: the endpoint WireGuard learned from handshakes is then kept.
	Endpoint   *net.UDPAddr
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration
	// Pinned: the path choice picked Endpoint (agent/paths), so it is set
	// even while the peer is connected at another address (a location
	// label moves a pair from the public path to the private one). Without
	// it an endpoint WireGuard roamed to is kept while connected.
	Pinned bool
}

// ConnectedWithin is how recent a handshake must be for a peer to count as
// connected (WireGuard rekeys every 2 minutes on an active session).
const ConnectedWithin = 3 * time.Minute

// Connected reports whether a peer had a handshake within ConnectedWithin of now.
func Connected(p wgtypes.Peer, now time.Time) bool {
	return !p.LastHandshakeTime.IsZero() && now.Sub(p.LastHandshakeTime) < ConnectedWithin
}

func toIPNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		bits := 32
		if p.Addr().Is6() {
			bits = 128
		}
		out = append(out, net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)})
	}
	return out
}

func fromIPNet(n net.IPNet) netip.Prefix {
	addr, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	if len(n.Mask) == net.IPv4len {
		addr = addr.Unmap()
	}
	return netip.PrefixFrom(addr, ones).Masked()
}

func udpEqual(a, b *net.UDPAddr) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.IP.Equal(b.IP) && a.Port == b.Port
}
