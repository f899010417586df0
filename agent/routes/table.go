package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/agent/mesh"
)

// Table reconciles the routes on one link.
type Table struct {
	Link    string
	Netlink Netlink
}

// SyncResult counts what Sync changed.
type SyncResult struct{ Added, Removed int }

// Sync makes the routes on the link with Protocol exactly desired: missing or
// different ones are (re)placed, stale ones removed. Routes of other
// protocols and on other links are never touched. A failing route does not
// stop the others; all errors are returned joined.
func (t *Table) Sync(desired []mesh.Route) (SyncResult, error) {
	var res SyncResult
	link, err := t.Netlink.LinkByName(t.Link)
	if err != nil {
		return res, fmt.Errorf("route table: link %s: %w", t.Link, err)
	}
	current, err := t.list(link.Attrs().Index)
	if err != nil {
		return res, err
	}
	have := map[netip.Prefix]netlink.Route{}
	for _, r := range current {
		if p, ok := prefixOf(r.Dst); ok {
			have[p] = r
		}
	}
	var errs []error
	want := map[netip.Prefix]bool{}
	for _, d := range desired {
		want[d.Dst] = true
		if r, ok := have[d.Dst]; ok && sameSrc(r.Src, d.Src) {
			continue
		}
		nr := build(link.Attrs().Index, d)
		if err := t.Netlink.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("route %s dev %s src %s (MeshPeer %s): %w", d.Dst, t.Link, d.Src, d.Peer, err))
			continue
		}
		res.Added++
	}
	for p, r := range have {
		if want[p] {
			continue
		}
		if err := t.Netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("removing stale route %s dev %s: %w", p, t.Link, err))
			continue
		}
		res.Removed++
	}
	return res, errors.Join(errs...)
}

// Flush removes every route of Protocol on the link (cleanup on exit).
func (t *Table) Flush() error {
	link, err := t.Netlink.LinkByName(t.Link)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	rs, err := t.list(link.Attrs().Index)
	if err != nil {
		return err
	}
	var errs []error
	for i := range rs {
		if err := t.Netlink.RouteDel(&rs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (t *Table) list(index int) ([]netlink.Route, error) {
	rs, err := t.Netlink.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{LinkIndex: index, Protocol: Protocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes on %s: %w", t.Link, err)
	}
	return rs, nil
}

func build(index int, d mesh.Route) *netlink.Route {
	bits := 32
	if d.Dst.Addr().Is6() {
		bits = 128
	}
	r := &netlink.Route{
		LinkIndex: index,
		Dst:       &net.IPNet{IP: net.IP(d.Dst.Addr().AsSlice()), Mask: net.CIDRMask(d.Dst.Bits(), bits)},
		Protocol:  Protocol,
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.SCOPE_LINK,
	}
	if d.Dst.Addr().Is6() {
		r.Scope = netlink.SCOPE_UNIVERSE
	}
	if d.Src.IsValid() {
		r.Src = net.IP(d.Src.AsSlice())
	}
	return r
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	if len(n.IP) == net.IPv4len || a.Is4In6() {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

func sameSrc(have net.IP, want netip.Addr) bool {
	if !want.IsValid() {
		return len(have) == 0
	}
	a, ok := netip.AddrFromSlice(have)
	return ok && a.Unmap() == want
}
