package egress

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mp(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ma(s string) netip.Addr   { return netip.MustParseAddr(s) }

func TestDesiredTracesPackets(t *testing.T) {
	progs := Desired(Options{
		PodCIDRs:     []netip.Prefix{mp("198.19.1.0/24"), mp("2001:db8:100:1::/64")},
		ClusterCIDRs: []netip.Prefix{mp("198.19.0.0/16"), mp("2001:db8:100::/56")},
		ServiceCIDRs: []netip.Prefix{mp("198.18.128.0/20"), mp("2001:db8:200::/112")},
		// A node whose podCIDRs kube-controller-manager gave it, outside
		// the flag, one inside (covered already), and an external peer's
		// allowedIPs (a laptop).
		PeerRanges: []netip.Prefix{mp("198.20.7.0/24"), mp("198.19.2.0/24"), mp("198.18.200.0/24")},
	})
	if len(progs) != 2 || progs[0].Family != IPv4 || progs[1].Family != IPv6 {
		t.Fatalf("want ip and ip6 programs, got %+v", progs)
	}
	verdict := func(src, dst, oif string) Verdict {
		pkt := Packet{Src: ma(src), Dst: ma(dst), OIF: oif}
		for _, p := range progs {
			if (p.Family == IPv4) == pkt.Src.Is4() {
				return p.Verdict(pkt)
			}
		}
		t.Fatalf("no program for %s", src)
		return ""
	}
	cases := []struct {
		name, src, dst, oif string
		want                Verdict
	}{
		{"pod to internet", "198.19.1.5", "198.18.0.250", "eth0", Masquerade},
		{"pod to other node's underlay address", "198.19.1.5", "198.18.0.12", "eth0", Masquerade},
		{"pod to pod same node", "198.19.1.5", "198.19.1.6", "wgmesh-br0", Return},
		{"pod to remote pod", "198.19.1.5", "198.19.2.7", "wgmesh0", Return},
		{"pod to a service address never translated (no endpoints, no proxy)", "198.19.1.5", "198.18.128.10", "eth0", Drop},
		{"pod into the mesh outside cluster ranges (external peer)", "198.19.1.5", "198.18.5.1", "wgmesh0", Return},
		{"host traffic", "198.18.0.11", "198.18.0.250", "eth0", Return},
		{"other node's pod routed through us", "198.19.2.7", "198.18.0.250", "eth0", Return},
		{"v6 pod to internet", "2001:db8:100:1::5", "2001:db8::250", "eth0", Masquerade},
		{"v6 pod to remote pod", "2001:db8:100:1::5", "2001:db8:100:2::7", "wgmesh0", Return},
		{"v6 pod to an untranslated service address", "2001:db8:100:1::5", "2001:db8:200::10", "eth0", Drop},
		{"pod to a node range outside --cluster-cidrs (kube-controller-manager)", "198.19.1.5", "198.20.7.7", "eth0", Drop},
		{"pod to a pod range with no route yet (default route)", "198.19.1.5", "198.19.9.9", "eth0", Drop},
		{"node to a pod range with no route yet", "198.18.0.11", "198.19.9.9", "eth0", Drop},
		{"v6 pod to a pod range with no route yet", "2001:db8:100:1::5", "2001:db8:100:9::9", "eth0", Drop},
		{"pod to local pod through the bridge", "198.19.1.5", "198.19.1.9", "wgmesh-br0", Return},
		{"pod to an external peer through the tunnel", "198.19.1.5", "198.18.200.1", "wgmesh0", Return},
		{"pod to an external peer with the tunnel gone (default route)", "198.19.1.5", "198.18.200.1", "eth0", Drop},
		{"node to an external peer with the tunnel gone", "198.18.0.11", "198.18.200.1", "eth0", Drop},
	}
	for _, tc := range cases {
		if got := verdict(tc.src, tc.dst, tc.oif); got != tc.want {
			t.Errorf("%s: %s -> %s via %s = %s, want %s", tc.name, tc.src, tc.dst, tc.oif, got, tc.want)
		}
	}
}

func TestDesiredFamilyWithoutPodCIDRIsEmpty(t *testing.T) {
	progs := Desired(Options{
		PodCIDRs:     []netip.Prefix{mp("198.19.1.0/24")},
		ClusterCIDRs: []netip.Prefix{mp("198.19.0.0/16"), mp("2001:db8:100::/56")},
	})
	if len(progs[1].Rules) != 0 {
		t.Errorf("ip6 program %v, want empty without an IPv6 podCIDR", progs[1].Rules)
	}
	// The guard protects cluster ranges even before this node has a podCIDR.
	if len(progs[1].Guard) != 1 {
		t.Errorf("ip6 guard %v, want one rule for the IPv6 cluster range", progs[1].Guard)
	}
	if progs[0].Verdict(Packet{Src: ma("198.19.1.2"), Dst: ma("198.18.0.250")}) != Masquerade {
		t.Error("IPv4 egress not masqueraded")
	}
	if got := Desired(Options{}); len(got[0].Rules)+len(got[1].Rules)+len(got[0].Guard)+len(got[1].Guard) != 0 {
		t.Errorf("no podCIDRs: %v, want empty programs", got)
	}
}

func TestRuleStrings(t *testing.T) {
	progs := Desired(Options{PodCIDRs: []netip.Prefix{mp("198.19.1.0/24")}, ClusterCIDRs: []netip.Prefix{mp("198.19.0.0/16")}})
	var lines []string
	for _, r := range progs[0].Rules {
		lines = append(lines, r.String())
	}
	want := `oifname "wgmesh0" return|ip daddr 198.19.0.0/16 return|ip saddr 198.19.1.0/24 masquerade`
	if got := strings.Join(lines, "|"); got != want {
		t.Errorf("rules %q, want %q", got, want)
	}
	if got, want := progs[0].Guard[0].String(), `oifname != "wgmesh0" oifname != "wgmesh-br0" ip daddr 198.19.0.0/16 drop`; got != want {
		t.Errorf("guard %q, want %q", got, want)
	}
}

func TestGuardedRanges(t *testing.T) {
	got := GuardedRanges(Options{ClusterCIDRs: []netip.Prefix{mp("198.19.0.0/16")}, PeerRanges: []netip.Prefix{mp("198.19.2.0/24"), mp("198.20.7.0/24"), mp("2001:db8:100:1::/64")},
		ServiceCIDRs: []netip.Prefix{mp("198.18.128.0/20")}}, IPv4)
	want := []netip.Prefix{mp("198.18.128.0/20"), mp("198.19.0.0/16"), mp("198.20.7.0/24")}
	if !slices.Equal(got, want) {
		t.Errorf("guarded %v, want %v (covered ranges folded, other family left out)", got, want)
	}
}
