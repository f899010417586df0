// Package linkaddr keeps a link's global addresses exactly a wanted list:
// the pod bridge's gateways and the WireGuard link's tunnel addresses. Link-
// local addresses are the kernel's and are left alone.
package linkaddr

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is the part of *netlink.Handle Sync uses; tests inject
// agent/netlinkfake.
type Netlink interface {
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
}

var _ Netlink = (*netlink.Handle)(nil)

// Sync adds the addresses of want that link lacks and removes its other
// global addresses. IPv6 addresses are added without duplicate address
// detection: a tentative address cannot be a route's or a masquerade's
// source, and these addresses are the node's own by construction (they come
// from its pod CIDRs).
func Sync(h Netlink, link netlink.Link, want []netip.Prefix) error {
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	have := map[netip.Prefix]netlink.Addr{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap().IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		have[netip.PrefixFrom(ip.Unmap(), ones)] = a
	}
	wanted := map[netip.Prefix]bool{}
	for _, w := range want {
		wanted[w] = true
		if _, ok := have[w]; ok {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(w.Addr().AsSlice()), Mask: net.CIDRMask(w.Bits(), w.Addr().BitLen())}}
		if w.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			return fmt.Errorf("adding address %s: %w", w, err)
		}
	}
	for p, a := range have {
		if wanted[p] {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("removing stale address %s: %w", p, err)
		}
	}
	return nil
}
