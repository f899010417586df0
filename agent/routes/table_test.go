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
	"github.com/wgmesh/wgmesh/agent/netlinkfake"
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
			f := netlinkfake.New(wgLink())
			f.Routes = tt.existing
			tb := &Table{Link: "wgmesh0", Netlink: f}
			if _, err := tb.Sync(tt.desired); err != nil {
				t.Fatal(err)
			}
			if got := f.Dump(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("routes = %q\nwant %q", got, tt.want)
			}
			if tt.wantCalls != nil {
				calls := f.Calls
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
	f := netlinkfake.New(wgLink())
	f.FailOn = map[string]error{"198.19.2.0/24": errors.New("invalid source")}
	tb := &Table{Link: "wgmesh0", Netlink: f}
	_, err := tb.Sync([]mesh.Route{route("198.19.2.0/24", "198.19.1.1"), route("198.19.3.0/24", "198.19.1.1")})
	if err == nil || !strings.Contains(err.Error(), "198.19.2.0/24") {
		t.Fatalf("error = %v, want one naming 198.19.2.0/24", err)
	}
	if got := f.Dump(); len(got) != 1 || !strings.HasPrefix(got[0], "198.19.3.0/24") {
		t.Fatalf("routes = %q, want the other route installed", got)
	}
}

func TestSyncMissingLink(t *testing.T) {
	tb := &Table{Link: "wgmesh0", Netlink: netlinkfake.New()}
	if _, err := tb.Sync(nil); err == nil || !strings.Contains(err.Error(), "wgmesh0") {
		t.Fatalf("error = %v, want one naming the link", err)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
