package keyrotation

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// kickPort is the UDP port the kick is sent to (discard): the packet only
// has to enter the tunnel, where WireGuard starts a handshake for it; the
// peer's host drops it or answers port unreachable.
const kickPort = 9

// UDPKick sends a one-byte UDP datagram to each address (a peer's bridge
// gateway, routed through wgmesh0): a peer whose session is gone (a key
// changed on either side) is handshaken with at once instead of at the
// next packet of some workload, which a peer behind NAT, that others
// cannot reach first, may never send.
func UDPKick(addrs []netip.Addr) error {
	var errs []error
	for _, a := range addrs {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, kickPort)))
		if err != nil {
			errs = append(errs, fmt.Errorf("kick %s: %w", a, err))
			continue
		}
		if _, err := c.Write([]byte{0}); err != nil {
			errs = append(errs, fmt.Errorf("kick %s: %w", a, err))
		}
		c.Close()
	}
	return errors.Join(errs...)
}
