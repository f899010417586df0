package bridge

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/agent/netlinkfake"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestEnsure(t *testing.T) {
	f := netlinkfake.New()
	o := Options{Name: "wgmesh-br0", MTU: 1420, Gateways: []netip.Prefix{mustPrefix("198.19.1.1/24"), mustPrefix("2001:db8:100:1::1/64")}}
	if err := Ensure(f, o); err != nil {
		t.Fatal(err)
	}
	br := f.Links["wgmesh-br0"]
	if br == nil || br.Type() != "bridge" || br.Attrs().MTU != 1420 || br.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("bridge = %+v", br)
	}
	if n := len(f.Addrs["wgmesh-br0"]); n != 2 {
		t.Fatalf("bridge has %d addresses, want 2", n)
	}
	// Idempotent: a second call changes nothing.
	f.Calls = nil
	if err := Ensure(f, o); err != nil {
		t.Fatal(err)
	}
	if len(f.Calls) != 0 {
		t.Fatalf("second EnsureBridge made calls %q", f.Calls)
	}
	// MTU and gateway change: stale address removed, new one added.
	o.MTU = 1380
	o.Gateways = []netip.Prefix{mustPrefix("198.19.7.1/24")}
	if err := Ensure(f, o); err != nil {
		t.Fatal(err)
	}
	want := []string{"mtu wgmesh-br0 1380", "addradd 198.19.7.1/24"}
	if !reflect.DeepEqual(f.Calls[:2], want) || len(f.Calls) != 4 {
		t.Fatalf("calls = %q", f.Calls)
	}
	// A set hardware address is created with the bridge and repaired when
	// something changes it.
	mac := StableMAC("wgmesh-br0", o.Gateways)
	o.HardwareAddr = mac
	m := netlinkfake.New()
	if err := Ensure(m, o); err != nil {
		t.Fatal(err)
	}
	if got := m.Links["wgmesh-br0"].Attrs().HardwareAddr; got.String() != mac.String() {
		t.Fatalf("bridge created with address %s, want %s", got, mac)
	}
	m.Links["wgmesh-br0"].Attrs().HardwareAddr = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	m.Calls = nil
	if err := Ensure(m, o); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Calls, []string{"hwaddr wgmesh-br0 " + mac.String()}) {
		t.Fatalf("address drift repaired with calls %q", m.Calls)
	}
	// A non-bridge link of that name is refused with a clear message.
	g := netlinkfake.New(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "wgmesh-br0"}})
	if err := Ensure(g, o); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("error = %v", err)
	}
}

func TestStableMAC(t *testing.T) {
	gw := []netip.Prefix{mustPrefix("198.19.1.1/24"), mustPrefix("2001:db8:100:1::1/64")}
	a, b := StableMAC("wgmesh-br0", gw), StableMAC("wgmesh-br0", gw)
	if a.String() != b.String() {
		t.Fatalf("not deterministic: %s vs %s", a, b)
	}
	if a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Fatalf("%s is not a locally administered unicast address", a)
	}
	if c := StableMAC("wgmesh-br0", gw[:1]); c.String() == a.String() {
		t.Fatalf("different gateways gave the same address %s", c)
	}
}
