package endpoint

import (
	"net/netip"

	"github.com/vishvananda/netlink"
)

// DefaultRouteAddrs returns the global addresses of the interfaces that carry
// the IPv4 and IPv6 default routes (IPv4 first).
func DefaultRouteAddrs(h *netlink.Handle) []netip.Addr {
	if h == nil {
		h = &netlink.Handle{}
	}
	var out []netip.Addr
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := h.RouteListFiltered(fam, &netlink.Route{}, 0)
		if err != nil {
			continue
		}
		for _, r := range rs {
			if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
				continue
			}
			link, err := h.LinkByIndex(r.LinkIndex)
			if err != nil {
				continue
			}
			addrs, err := h.AddrList(link, fam)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && usable(ip.Unmap()) {
					out = append(out, ip.Unmap())
				}
			}
		}
	}
	return out
}
