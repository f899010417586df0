package routes

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"

	"github.com/vishvananda/netlink"
)

// fakeNetlink is an in-memory kernel with just enough behaviour for the
// route table and bridge logic: links by name, addresses, and routes in the
// main table keyed by destination.
type fakeNetlink struct {
	links  map[string]netlink.Link
	addrs  map[string][]netlink.Addr
	routes []netlink.Route
	calls  []string
	failOn map[string]error // RouteReplace dst -> error
}

func newFake(links ...netlink.Link) *fakeNetlink {
	f := &fakeNetlink{links: map[string]netlink.Link{}, addrs: map[string][]netlink.Addr{}}
	for _, l := range links {
		f.links[l.Attrs().Name] = l
	}
	return f
}

func (f *fakeNetlink) LinkByName(name string) (netlink.Link, error) {
	if l, ok := f.links[name]; ok {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *fakeNetlink) LinkAdd(l netlink.Link) error {
	l.Attrs().Index = 100 + len(f.links)
	f.links[l.Attrs().Name] = l
	f.calls = append(f.calls, "linkadd "+l.Attrs().Name)
	return nil
}

func (f *fakeNetlink) LinkSetUp(l netlink.Link) error {
	l.Attrs().Flags |= net.FlagUp
	f.calls = append(f.calls, "up "+l.Attrs().Name)
	return nil
}

func (f *fakeNetlink) LinkSetMTU(l netlink.Link, mtu int) error {
	l.Attrs().MTU = mtu
	f.calls = append(f.calls, fmt.Sprintf("mtu %s %d", l.Attrs().Name, mtu))
	return nil
}

func (f *fakeNetlink) LinkSetHardwareAddr(l netlink.Link, hw net.HardwareAddr) error {
	l.Attrs().HardwareAddr = hw
	f.calls = append(f.calls, fmt.Sprintf("hwaddr %s %s", l.Attrs().Name, hw))
	return nil
}

func (f *fakeNetlink) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	return slices.Clone(f.addrs[l.Attrs().Name]), nil
}

func (f *fakeNetlink) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	f.addrs[l.Attrs().Name] = append(f.addrs[l.Attrs().Name], *a)
	f.calls = append(f.calls, "addradd "+a.IPNet.String())
	return nil
}

func (f *fakeNetlink) AddrDel(l netlink.Link, a *netlink.Addr) error {
	f.addrs[l.Attrs().Name] = slices.DeleteFunc(f.addrs[l.Attrs().Name], func(x netlink.Addr) bool { return x.IPNet.String() == a.IPNet.String() })
	f.calls = append(f.calls, "addrdel "+a.IPNet.String())
	return nil
}

func (f *fakeNetlink) RouteListFiltered(_ int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, r := range f.routes {
		if mask&netlink.RT_FILTER_OIF != 0 && r.LinkIndex != filter.LinkIndex {
			continue
		}
		if mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeNetlink) RouteReplace(r *netlink.Route) error {
	if err := f.failOn[r.Dst.String()]; err != nil {
		return err
	}
	f.routes = slices.DeleteFunc(f.routes, func(x netlink.Route) bool { return x.Dst.String() == r.Dst.String() })
	f.routes = append(f.routes, *r)
	f.calls = append(f.calls, "replace "+r.Dst.String())
	return nil
}

func (f *fakeNetlink) RouteDel(r *netlink.Route) error {
	f.routes = slices.DeleteFunc(f.routes, func(x netlink.Route) bool { return x.Dst.String() == r.Dst.String() && x.LinkIndex == r.LinkIndex })
	f.calls = append(f.calls, "del "+r.Dst.String())
	return nil
}

// dump lists the routes as "dst dev-index src proto".
func (f *fakeNetlink) dump() []string {
	var out []string
	for _, r := range f.routes {
		out = append(out, fmt.Sprintf("%s if%d src=%v proto=%d", r.Dst, r.LinkIndex, r.Src, r.Protocol))
	}
	sort.Strings(out)
	return out
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
