package routes

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/agent/mesh"
)

func wgLink() netlink.Link {
	return &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "wgmesh0", Index: 7}, LinkType: "tun"}
}

func route(dst, src string) mesh.Route {
	r := mesh.Route{Dst: netip.MustParsePrefix(dst), Peer: "p"}
	if src != "" {
		r.Src = netip.MustParseAddr(src)
	}
	return r
}

func TestSync(t *testing.T) {
	_, foreignDst, _ := net.ParseCIDR("198.18.50.0/24")
	_, otherLinkDst, _ := net.ParseCIDR("198.19.9.0/24")
	_, staleDst, _ := net.ParseCIDR("198.19.4.0/24")
	_, keptDst, _ := net.ParseCIDR("198.19.2.0/24")
	tests := []struct {
		name      string
		existing  []netlink.Route
		desired   []mesh.Route
		want      []string
		wantCalls []string
	}{
		{
			name:    "adds v4 and v6 with src",
			desired: []mesh.Route{route("198.19.2.0/24", "198.19.1.1"), route("2001:db8:100:2::/64", "2001:db8:100:1::1")},
			want: []string{
				"198.19.2.0/24 if7 src=198.19.1.1 proto=87",
				"2001:db8:100:2::/64 if7 src=2001:db8:100:1::1 proto=87",
			},
		},
		{
			name: "keeps matching, removes stale ours, leaves foreign and other links alone",
			existing: []netlink.Route{
				{LinkIndex: 7, Dst: keptDst, Src: net.ParseIP("198.19.1.1").To4(), Protocol: Protocol},
				{LinkIndex: 7, Dst: staleDst, Protocol: Protocol},
				{LinkIndex: 7, Dst: foreignDst, Protocol: 4},
				{LinkIndex: 3, Dst: otherLinkDst, Protocol: Protocol},
			},
			desired: []mesh.Route{route("198.19.2.0/24", "198.19.1.1")},
			want: []string{
				"198.18.50.0/24 if7 src=<nil> proto=4",
				"198.19.2.0/24 if7 src=198.19.1.1 proto=87",
				"198.19.9.0/24 if3 src=<nil> proto=87",
			},
			wantCalls: []string{"del 198.19.4.0/24"},
		},
		{
			name:      "src changed: replaced",
			existing:  []netlink.Route{{LinkIndex: 7, Dst: keptDst, Src: net.ParseIP("198.19.1.9").To4(), Protocol: Protocol}},
			desired:   []mesh.Route{route("198.19.2.0/24", "198.19.1.1")},
			want:      []string{"198.19.2.0/24 if7 src=198.19.1.1 proto=87"},
			wantCalls: []string{"replace 198.19.2.0/24"},
		},
		{
			name:      "nothing to do: no calls",
			existing:  []netlink.Route{{LinkIndex: 7, Dst: keptDst, Src: net.ParseIP("198.19.1.1").To4(), Protocol: Protocol}},
			desired:   []mesh.Route{route("198.19.2.0/24", "198.19.1.1")},
			want:      []string{"198.19.2.0/24 if7 src=198.19.1.1 proto=87"},
			wantCalls: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(wgLink())
			f.routes = tt.existing
			tb := &Table{Link: "wgmesh0", Netlink: f}
			if _, err := tb.Sync(tt.desired); err != nil {
				t.Fatal(err)
			}
			if got := f.dump(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("routes = %q\nwant %q", got, tt.want)
			}
			if tt.wantCalls != nil {
				calls := f.calls
				if calls == nil {
					calls = []string{}
				}
				if !reflect.DeepEqual(calls, tt.wantCalls) {
					t.Errorf("calls = %q, want %q", calls, tt.wantCalls)
				}
			}
		})
	}
}

func TestSyncOneFailureDoesNotStopOthers(t *testing.T) {
	f := newFake(wgLink())
	f.failOn = map[string]error{"198.19.2.0/24": errors.New("invalid source")}
	tb := &Table{Link: "wgmesh0", Netlink: f}
	_, err := tb.Sync([]mesh.Route{route("198.19.2.0/24", "198.19.1.1"), route("198.19.3.0/24", "198.19.1.1")})
	if err == nil || !strings.Contains(err.Error(), "198.19.2.0/24") {
		t.Fatalf("error = %v, want one naming 198.19.2.0/24", err)
	}
	if got := f.dump(); len(got) != 1 || !strings.HasPrefix(got[0], "198.19.3.0/24") {
		t.Fatalf("routes = %q, want the other route installed", got)
	}
}

func TestSyncMissingLink(t *testing.T) {
	tb := &Table{Link: "wgmesh0", Netlink: newFake()}
	if _, err := tb.Sync(nil); err == nil || !strings.Contains(err.Error(), "wgmesh0") {
		t.Fatalf("error = %v, want one naming the link", err)
	}
}

func TestEnsureBridge(t *testing.T) {
	f := newFake()
	o := BridgeOptions{Name: "wgmesh-br0", MTU: 1420, Gateways: []netip.Prefix{mustPrefix("198.19.1.1/24"), mustPrefix("2001:db8:100:1::1/64")}}
	if err := EnsureBridge(f, o); err != nil {
		t.Fatal(err)
	}
	br := f.links["wgmesh-br0"]
	if br == nil || br.Type() != "bridge" || br.Attrs().MTU != 1420 || br.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("bridge = %+v", br)
	}
	if n := len(f.addrs["wgmesh-br0"]); n != 2 {
		t.Fatalf("bridge has %d addresses, want 2", n)
	}
	// Idempotent: a second call changes nothing.
	f.calls = nil
	if err := EnsureBridge(f, o); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 0 {
		t.Fatalf("second EnsureBridge made calls %q", f.calls)
	}
	// MTU and gateway change: stale address removed, new one added.
	o.MTU = 1380
	o.Gateways = []netip.Prefix{mustPrefix("198.19.7.1/24")}
	if err := EnsureBridge(f, o); err != nil {
		t.Fatal(err)
	}
	want := []string{"mtu wgmesh-br0 1380", "addradd 198.19.7.1/24"}
	if !reflect.DeepEqual(f.calls[:2], want) || len(f.calls) != 4 {
		t.Fatalf("calls = %q", f.calls)
	}
	// A set hardware address is created with the bridge and repaired when
	// something changes it.
	mac := StableMAC("wgmesh-br0", o.Gateways)
	o.HardwareAddr = mac
	m := newFake()
	if err := EnsureBridge(m, o); err != nil {
		t.Fatal(err)
	}
	if got := m.links["wgmesh-br0"].Attrs().HardwareAddr; got.String() != mac.String() {
		t.Fatalf("bridge created with address %s, want %s", got, mac)
	}
	m.links["wgmesh-br0"].Attrs().HardwareAddr = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	m.calls = nil
	if err := EnsureBridge(m, o); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.calls, []string{"hwaddr wgmesh-br0 " + mac.String()}) {
		t.Fatalf("address drift repaired with calls %q", m.calls)
	}
	// A non-bridge link of that name is refused with a clear message.
	g := newFake(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "wgmesh-br0"}})
	if err := EnsureBridge(g, o); err == nil || !strings.Contains(err.Error(), "not a bridge") {
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
