package agent

import (
	"fmt"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent/servicenat"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// learnedEndpoint is the address WireGuard sends to for a peer now: the
// MeshPeer's endpoint, or for a peer behind NAT the address its handshakes
// came from.
type learnedEndpoint struct {
	Peer string
	Addr netip.Addr
	Port uint16
}

// learnedEndpoints reads the device's peers, named by their MeshPeers.
func learnedEndpoints(dev []wgtypes.Peer, peers []wgv1.MeshPeer) []learnedEndpoint {
	names := make(map[wgtypes.Key]string, len(peers))
	for i := range peers {
		if k, err := wgtypes.ParseKey(string(peers[i].Spec.PublicKey)); err == nil {
			names[k] = peers[i].Name
		}
	}
	var out []learnedEndpoint
	for _, p := range dev {
		if p.Endpoint == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(p.Endpoint.IP); ok {
			name := names[p.PublicKey]
			if name == "" {
				name = p.PublicKey.String()
			}
			out = append(out, learnedEndpoint{Peer: name, Addr: a.Unmap(), Port: uint16(p.Endpoint.Port)})
		}
	}
	slices.SortFunc(out, func(a, b learnedEndpoint) int { return a.Addr.Compare(b.Addr) })
	return out
}

func learnedAddrs(ls []learnedEndpoint) []netip.Addr {
	out := make([]netip.Addr, len(ls))
	for i, l := range ls {
		out[i] = l.Addr
	}
	return out
}

// reservedAddrs are the addresses only the agent knows that no Service may
// take as an external address: the API server's, the WireGuard endpoints in
// use, every MeshPeer's endpoint and allowedIPs (an external peer's range
// must reach that peer). The service NAT adds the Nodes' addresses and the
// pod and service CIDRs itself.
func reservedAddrs(apiServer []netip.Addr, learned []learnedEndpoint, peers []wgv1.MeshPeer) servicenat.Reserved {
	var r servicenat.Reserved
	for _, a := range apiServer {
		r.AddAddr(a, "the API server's address")
	}
	for _, l := range learned {
		r.AddAddr(l.Addr, "the WireGuard endpoint in use for peer "+l.Peer)
	}
	for i := range peers {
		p := &peers[i]
		if hp, err := wgv1.ParseEndpoint(string(p.Spec.Endpoint), false); err == nil {
			r.AddAddr(hp.Addr, "the WireGuard endpoint of MeshPeer "+p.Name)
		}
		for _, c := range p.Spec.AllowedIPs {
			if pfx, err := wgv1.ParseCIDR(string(c)); err == nil {
				r.AddPrefix(pfx, fmt.Sprintf("in the allowedIPs %s of MeshPeer %s", pfx, p.Name))
			}
		}
	}
	return r
}
