package mtu

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestChoose(t *testing.T) {
	for _, c := range []struct{ configured, underlay, want int }{
		{0, 1500, 1420}, {0, 1400, 1320}, {1380, 1500, 1380}, {0, 1300, 1280}, {0, 9000, 8920},
	} {
		if got := Choose(c.configured, c.underlay); got != c.want {
			t.Errorf("Choose(%d, %d) = %d, want %d", c.configured, c.underlay, got, c.want)
		}
	}
}

type fakeNL struct {
	links  map[int]netlink.Link
	routes map[string][]netlink.Route // RouteGet by target
	table  []netlink.Route
}

func (f fakeNL) RouteGet(dst net.IP) ([]netlink.Route, error) { return f.routes[dst.String()], nil }
func (f fakeNL) RouteListFiltered(int, *netlink.Route, uint64) ([]netlink.Route, error) {
	return f.table, nil
}
func (f fakeNL) LinkByIndex(i int) (netlink.Link, error) { return f.links[i], nil }

func TestUnderlay(t *testing.T) {
	f := fakeNL{
		links: map[int]netlink.Link{
			1: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}},
			2: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", MTU: 1400}},
			3: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "wgmesh0", MTU: 1000}},
		},
		routes: map[string][]netlink.Route{
			"198.18.0.12": {{LinkIndex: 1}},
			"198.18.1.11": {{LinkIndex: 2}},
			"198.19.9.9":  {{LinkIndex: 3}},
		},
		table: []netlink.Route{{LinkIndex: 1}},
	}
	addr := netip.MustParseAddr
	if i, m, err := Underlay(f, []netip.Addr{addr("198.18.0.12"), addr("198.18.1.11"), addr("198.19.9.9")}, "wgmesh0"); err != nil || i != "eth1" || m != 1400 {
		t.Errorf("Underlay = %s %d %v, want eth1 1400", i, m, err)
	}
	if i, m, err := Underlay(f, nil, "wgmesh0"); err != nil || i != "eth0" || m != 1500 {
		t.Errorf("Underlay(no peers) = %s %d %v, want default route eth0 1500", i, m, err)
	}
	f.table = nil
	if _, m, err := Underlay(f, nil); err == nil || m != 1500 {
		t.Errorf("no routes: %d %v, want fallback 1500 with an error", m, err)
	}
}
