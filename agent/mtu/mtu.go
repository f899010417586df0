// Package mtu picks the MTU of the mesh: the underlay MTU of the interface
// that carries traffic to the peers, minus the WireGuard overhead, unless the
// user configured a value.
package mtu

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Overhead is WireGuard's worst-case encapsulation over IPv6: 40 (IPv6) +
// 8 (UDP) + 32 (WireGuard header and tag).
const Overhead = 80

// Minimum keeps the result usable for IPv6, whatever the underlay says.
const Minimum = 1280

// fallbackUnderlay is assumed when no route tells the underlay MTU.
const fallbackUnderlay = 1500

// Netlink is what Underlay reads (a *netlink.Handle).
type Netlink interface {
	RouteGet(dst net.IP) ([]netlink.Route, error)
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	LinkByIndex(index int) (netlink.Link, error)
}

// Underlay returns the smallest MTU of the interfaces routing to targets
// (the peers' endpoint addresses), or of the default-route interface when
// there are no targets. Links named in skip (the WireGuard link itself) are
// ignored.
func Underlay(h Netlink, targets []netip.Addr, skip ...string) (iface string, mtu int, err error) {
	// Most targets route through the same one or two links: look each up once.
	links := map[int]netlink.Link{}
	consider := func(r netlink.Route) {
		l, ok := links[r.LinkIndex]
		if !ok {
			var lerr error
			if l, lerr = h.LinkByIndex(r.LinkIndex); lerr != nil {
				return
			}
			links[r.LinkIndex] = l
		}
		for _, s := range skip {
			if l.Attrs().Name == s {
				return
			}
		}
		m := l.Attrs().MTU
		if r.MTU > 0 && r.MTU < m {
			m = r.MTU
		}
		if mtu == 0 || m < mtu {
			iface, mtu = l.Attrs().Name, m
		}
	}
	for _, t := range targets {
		rs, gerr := h.RouteGet(net.IP(t.AsSlice()))
		if gerr != nil {
			continue
		}
		for _, r := range rs {
			consider(r)
		}
	}
	if mtu == 0 {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, lerr := h.RouteListFiltered(fam, &netlink.Route{}, 0)
			if lerr != nil {
				err = errors.Join(err, lerr)
				continue
			}
			for _, r := range rs {
				if r.Dst == nil || r.Dst.IP.IsUnspecified() {
					consider(r)
				}
			}
			if mtu != 0 {
				break
			}
		}
	}
	if mtu == 0 {
		return "", fallbackUnderlay, fmt.Errorf("no route to the peers and no default route; assuming underlay MTU %d: %w", fallbackUnderlay, err)
	}
	return iface, mtu, nil
}

// Choose returns the configured MTU when set, else underlay minus Overhead,
// never below Minimum.
func Choose(configured, underlay int) int {
	if configured > 0 {
		return configured
	}
	m := underlay - Overhead
	if m < Minimum {
		m = Minimum
	}
	return m
}
