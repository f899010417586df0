// Package netlinkfake is an in-memory kernel for the unit tests of the
// packages that keep links, addresses and routes (agent/routes,
// agent/bridge): links by name, addresses, and routes in the main table
// keyed by destination, with every call recorded.
package netlinkfake

import (
	"fmt"
	"net"
	"slices"
	"sort"

	"github.com/vishvananda/netlink"
)

// Handle is the fake; its fields are the state tests look at.
type Handle struct {
	Links  map[string]netlink.Link
	Addrs  map[string][]netlink.Addr
	Routes []netlink.Route
	// Calls records each change ("mtu wgmesh-br0 1380", "addradd ...").
	Calls []string
	// FailOn makes RouteReplace of a destination fail.
	FailOn map[string]error
}

// New returns a fake holding links.
func New(links ...netlink.Link) *Handle {
	f := &Handle{Links: map[string]netlink.Link{}, Addrs: map[string][]netlink.Addr{}}
	for _, l := range links {
		f.Links[l.Attrs().Name] = l
	}
	return f
}

func (f *Handle) LinkByName(name string) (netlink.Link, error) {
	if l, ok := f.Links[name]; ok {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *Handle) LinkAdd(l netlink.Link) error {
	l.Attrs().Index = 100 + len(f.Links)
	f.Links[l.Attrs().Name] = l
	f.Calls = append(f.Calls, "linkadd "+l.Attrs().Name)
	return nil
}

func (f *Handle) LinkSetUp(l netlink.Link) error {
	l.Attrs().Flags |= net.FlagUp
	f.Calls = append(f.Calls, "up "+l.Attrs().Name)
	return nil
}

func (f *Handle) LinkSetMTU(l netlink.Link, mtu int) error {
	l.Attrs().MTU = mtu
	f.Calls = append(f.Calls, fmt.Sprintf("mtu %s %d", l.Attrs().Name, mtu))
	return nil
}

func (f *Handle) LinkSetHardwareAddr(l netlink.Link, hw net.HardwareAddr) error {
	l.Attrs().HardwareAddr = hw
	f.Calls = append(f.Calls, fmt.Sprintf("hwaddr %s %s", l.Attrs().Name, hw))
	return nil
}

func (f *Handle) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	return slices.Clone(f.Addrs[l.Attrs().Name]), nil
}

func (f *Handle) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	f.Addrs[l.Attrs().Name] = append(f.Addrs[l.Attrs().Name], *a)
	f.Calls = append(f.Calls, "addradd "+a.IPNet.String())
	return nil
}

func (f *Handle) AddrDel(l netlink.Link, a *netlink.Addr) error {
	f.Addrs[l.Attrs().Name] = slices.DeleteFunc(f.Addrs[l.Attrs().Name], func(x netlink.Addr) bool { return x.IPNet.String() == a.IPNet.String() })
	f.Calls = append(f.Calls, "addrdel "+a.IPNet.String())
	return nil
}

func (f *Handle) RouteListFiltered(_ int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, r := range f.Routes {
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

func (f *Handle) RouteReplace(r *netlink.Route) error {
	if err := f.FailOn[r.Dst.String()]; err != nil {
		return err
	}
	f.Routes = slices.DeleteFunc(f.Routes, func(x netlink.Route) bool { return x.Dst.String() == r.Dst.String() })
	f.Routes = append(f.Routes, *r)
	f.Calls = append(f.Calls, "replace "+r.Dst.String())
	return nil
}

func (f *Handle) RouteDel(r *netlink.Route) error {
	f.Routes = slices.DeleteFunc(f.Routes, func(x netlink.Route) bool { return x.Dst.String() == r.Dst.String() && x.LinkIndex == r.LinkIndex })
	f.Calls = append(f.Calls, "del "+r.Dst.String())
	return nil
}

// dump lists the routes as "dst dev-index src proto".
// Dump lists the routes as "dst dev src" lines, sorted.
func (f *Handle) Dump() []string {
	var out []string
	for _, r := range f.Routes {
		out = append(out, fmt.Sprintf("%s if%d src=%v proto=%d", r.Dst, r.LinkIndex, r.Src, r.Protocol))
	}
	sort.Strings(out)
	return out
}
