package antispoof

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestElementsMatchSetTypes(t *testing.T) {
	p := portA
	p.IPs = append(p.IPs, ip4A) // a duplicate is registered once
	els, err := p.Elements()
	if err != nil {
		t.Fatal(err)
	}
	klen := newVM(nil).klen
	var got []string
	for _, e := range els {
		if len(e.Key) != klen[e.Set] {
			t.Errorf("%s: key of %d bytes, set %s holds %d", e, len(e.Key), e.Set, klen[e.Set])
		}
		got = append(got, e.String())
	}
	want := []string{
		"pod-ipv4 vethaaaa0001 . 02:00:00:00:00:0a . 198.19.1.10",
		"pod-ipv6 vethaaaa0001 . 02:00:00:00:00:0a . 2001:db8:100:1::10",
		"pod-macs vethaaaa0001 . 02:00:00:00:00:0a",
		"pod-ports vethaaaa0001",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("elements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestValidateNamesTheBadValue(t *testing.T) {
	cases := []struct {
		name string
		p    Port
		want string
	}{
		{"no interface", Port{MAC: macA, IPs: []netip.Addr{ip4A}}, `host interface ""`},
		{"long interface", Port{HostIf: "veth0123456789abc", MAC: macA, IPs: []netip.Addr{ip4A}}, `"veth0123456789abc"`},
		{"no MAC", Port{HostIf: "veth0", IPs: []netip.Addr{ip4A}}, "MAC"},
		{"multicast MAC", Port{HostIf: "veth0", MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, IPs: []netip.Addr{ip4A}}, "01:00:5e:00:00:01"},
		{"no IPs", Port{HostIf: "veth0", MAC: macA}, "veth0 has no IP"},
		{"unspecified IP", Port{HostIf: "veth0", MAC: macA, IPs: []netip.Addr{netip.IPv4Unspecified()}}, `"0.0.0.0"`},
		{"mapped IP", Port{HostIf: "veth0", MAC: macA, IPs: []netip.Addr{netip.MustParseAddr("::ffff:198.19.1.2")}}, "::ffff:198.19.1.2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.Elements()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Elements(%v) = %v, want an error naming %s", tc.p, err, tc.want)
			}
		})
	}
}

// bridgeResult is what the bridge plugin returns: bridge, host veth, pod
// interface, and the addresses on the pod interface.
func bridgeResult() *current.Result {
	two := 2
	return &current.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*current.Interface{
			{Name: "wgmesh-br0", Mac: "02:00:00:00:00:01"},
			{Name: "vethaaaa0001", Mac: "02:00:00:00:00:77"},
			{Name: "eth0", Mac: macA.String(), Sandbox: "/run/netns/pod"},
		},
		IPs: []*current.IPConfig{
			{Interface: &two, Address: net.IPNet{IP: net.ParseIP("198.19.1.10"), Mask: net.CIDRMask(24, 32)}},
			{Interface: &two, Address: net.IPNet{IP: net.ParseIP("2001:db8:100:1::10"), Mask: net.CIDRMask(64, 128)}},
		},
	}
}

func TestPortFromResult(t *testing.T) {
	p, err := PortFromResult(bridgeResult(), "eth0", "wgmesh-br0")
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != portA.String() {
		t.Errorf("port %s, want %s", p, portA)
	}

	cases := []struct {
		name   string
		mutate func(r *current.Result)
		ifName string
		want   string
	}{
		{"no prevResult", nil, "eth0", "must follow the bridge plugin"},
		{"other interface", func(*current.Result) {}, "net1", "no interface net1"},
		{"no host veth", func(r *current.Result) { r.Interfaces = append(r.Interfaces[:1], r.Interfaces[2]) }, "eth0", "no host-side interface"},
		{"two host interfaces", func(r *current.Result) { r.Interfaces = append(r.Interfaces, &current.Interface{Name: "vethzz"}) }, "eth0", "vethaaaa0001 and vethzz"},
		{"bad MAC", func(r *current.Result) { r.Interfaces[2].Mac = "nope" }, "eth0", `"nope"`},
		{"no addresses", func(r *current.Result) { r.IPs = nil }, "eth0", "has no IP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r *current.Result
			if tc.mutate != nil {
				r = bridgeResult()
				tc.mutate(r)
			}
			_, err := PortFromResult(r, tc.ifName, "wgmesh-br0")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
