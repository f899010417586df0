package podnet

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func TestNodeCIDRs(t *testing.T) {
	for _, tc := range []struct {
		spec corev1.NodeSpec
		want string
	}{
		{corev1.NodeSpec{PodCIDRs: []string{"198.19.1.0/24", "2001:db8:19:1::/64"}, PodCIDR: "198.19.1.0/24"}, "[198.19.1.0/24 2001:db8:19:1::/64]"},
		{corev1.NodeSpec{PodCIDR: "198.19.2.7/24"}, "[198.19.2.0/24]"}, // the single field, host bits masked
		{corev1.NodeSpec{PodCIDRs: []string{"junk", "198.19.3.0/24"}}, "[198.19.3.0/24]"},
		{corev1.NodeSpec{}, "[]"},
	} {
		if got := fmtPrefixes(NodeCIDRs(&corev1.Node{Spec: tc.spec})); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.spec, got, tc.want)
		}
	}
}

func TestGateway(t *testing.T) {
	for in, want := range map[string]string{"198.19.1.0/24": "198.19.1.1/24", "198.19.1.77/24": "198.19.1.1/24", "2001:db8:19:1::/64": "2001:db8:19:1::1/64", "198.19.1.5/32": ""} {
		gw, ok := Gateway(netip.MustParsePrefix(in))
		if got := map[bool]string{true: gw.String(), false: ""}[ok]; got != want {
			t.Errorf("Gateway(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestTunnelAddress(t *testing.T) {
	for in, want := range map[string]string{"198.19.1.0/24": "198.19.1.0/32", "198.19.1.77/24": "198.19.1.0/32", "2001:db8:19:1::/64": "2001:db8:19:1::/128", "198.19.1.5/32": ""} {
		a, ok := TunnelAddress(netip.MustParsePrefix(in))
		if got := map[bool]string{true: a.String(), false: ""}[ok]; got != want {
			t.Errorf("TunnelAddress(%s) = %q, want %q", in, got, want)
		}
		// Never a pod's address: not the gateway, and host-local starts after it.
		if gw, _ := Gateway(netip.MustParsePrefix(in)); ok && a.Addr() == gw.Addr() {
			t.Errorf("TunnelAddress(%s) is the gateway", in)
		}
	}
}

func TestParseCIDRsNamesTheInput(t *testing.T) {
	ps, err := ParseCIDRs("--nodeport-addresses", []string{"198.18.0.0/24", "", " 2001:db8::/64", "198.18.1.0/24"})
	if err != nil || fmtPrefixes(ps) != "[198.18.0.0/24 2001:db8::/64 198.18.1.0/24]" {
		t.Fatalf("%v %v", ps, err)
	}
	if _, err := ParseCIDRs("--service-cidrs", []string{"198.18.128.1/20"}); err == nil || !strings.Contains(err.Error(), "--service-cidrs") || !strings.Contains(err.Error(), "198.18.128.0/20") {
		t.Errorf("host bits: %v, want an error naming the flag and the canonical form", err)
	}
	if _, err := ParseCIDRList("--cluster-cidrs", "198.19.0.0/16,198.20.0.0/16"); err == nil || !strings.Contains(err.Error(), "two IPv4 CIDRs") {
		t.Errorf("two IPv4 CIDRs: %v", err)
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

// FuzzParseCIDRList: never panics; at most one prefix per family, each one
// wgv1.ParseCIDR accepts.
func FuzzParseCIDRList(f *testing.F) {
	for _, s := range []string{"198.19.0.0/16,2001:db8::/56", "198.19.0.0/16,198.20.0.0/16", ",,", " 198.19.0.0/16 ", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseCIDRList("--cluster-cidrs", s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "--cluster-cidrs: ") {
				t.Fatalf("error %q does not name the flag", err)
			}
			return
		}
		var v4, v6 int
		for _, p := range ps {
			if _, err := wgv1.ParseCIDR(p.String()); err != nil {
				t.Fatalf("%q: accepted %s that ParseCIDR refuses", s, p)
			}
			if p.Addr().Is4() {
				v4++
			} else {
				v6++
			}
		}
		if v4 > 1 || v6 > 1 {
			t.Fatalf("%q: %v has more than one prefix of a family", s, ps)
		}
	})
}
