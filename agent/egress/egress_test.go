package egress

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wgmesh/wgmesh/agent/leakguard"
	"github.com/wgmesh/wgmesh/nft"
)

var (
	cluster  = []netip.Prefix{mp("198.19.0.0/16"), mp("2001:db8:100::/56")}
	services = []netip.Prefix{mp("198.18.128.0/20"), mp("2001:db8:200::/112")}
	pods     = []netip.Prefix{mp("198.19.1.0/24"), mp("2001:db8:100:1::/64")}
)

// TestEgressAndGuardTracePackets traces packets through the egress chain and
// the leak guard together, as the kernel sees them in one table.
func TestEgressAndGuardTracePackets(t *testing.T) {
	// A node whose podCIDRs kube-controller-manager gave it, outside the
	// flag, one inside (covered already), and an external peer's
	// allowedIPs (a laptop).
	peers := []netip.Prefix{mp("198.20.7.0/24"), mp("198.19.2.0/24"), mp("198.18.200.0/24")}
	fake := nft.NewFake()
	m := NewManager(ManagerOptions{ClusterCIDRs: cluster, ServiceCIDRs: services, NFT: fake.For(Part), ProcSys: t.TempDir(), Log: logr.Discard()})
	g := leakguard.New(leakguard.Options{ClusterCIDRs: cluster, ServiceCIDRs: services}, fake.For(leakguard.Part), logr.Discard(), nil)
	if err := g.Apply(context.Background(), peers, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(context.Background(), pods); err != nil {
		t.Fatal(err)
	}
	local := map[netip.Addr]bool{ma("198.18.0.11"): true, ma("2001:db8::11"): true}
	cases := []struct {
		name, src, dst, oif string
		fromNode            bool
		want                string
	}{
		{"pod to internet", "198.19.1.5", "198.18.0.250", "eth0", false, "accept masq"},
		{"pod to other node's underlay address", "198.19.1.5", "198.18.0.12", "eth0", false, "accept masq"},
		{"pod to pod same node", "198.19.1.5", "198.19.1.6", "wgmesh-br0", false, "accept"},
		{"pod to remote pod", "198.19.1.5", "198.19.2.7", "wgmesh0", false, "accept"},
		{"pod to a service address never translated (no endpoints, no proxy)", "198.19.1.5", "198.18.128.10", "eth0", false, "drop"},
		{"pod into the mesh outside cluster ranges (external peer)", "198.19.1.5", "198.18.5.1", "wgmesh0", false, "accept"},
		{"host traffic", "198.18.0.11", "198.18.0.250", "eth0", true, "accept"},
		{"other node's pod routed through us", "198.19.2.7", "198.18.0.250", "eth0", false, "accept"},
		{"v6 pod to internet", "2001:db8:100:1::5", "2001:db8::250", "eth0", false, "accept masq"},
		{"v6 pod to remote pod", "2001:db8:100:1::5", "2001:db8:100:2::7", "wgmesh0", false, "accept"},
		{"v6 pod to an untranslated service address", "2001:db8:100:1::5", "2001:db8:200::10", "eth0", false, "drop"},
		{"pod to a node range outside --cluster-cidrs (kube-controller-manager)", "198.19.1.5", "198.20.7.7", "eth0", false, "drop"},
		{"pod to a pod range with no route yet (default route)", "198.19.1.5", "198.19.9.9", "eth0", false, "drop"},
		{"node to a pod range with no route yet", "198.18.0.11", "198.19.9.9", "eth0", true, "drop"},
		{"v6 pod to a pod range with no route yet", "2001:db8:100:1::5", "2001:db8:100:9::9", "eth0", false, "drop"},
		{"pod to an external peer through the tunnel", "198.19.1.5", "198.18.200.1", "wgmesh0", false, "accept"},
		{"pod to an external peer with the tunnel gone (default route)", "198.19.1.5", "198.18.200.1", "eth0", false, "drop"},
		{"node to an external peer with the tunnel gone", "198.18.0.11", "198.18.200.1", "eth0", true, "drop"},
	}
	for _, tc := range cases {
		src := ma(tc.src)
		tr := fake.Tracer(nft.FamilyOf(src), local, func(netip.Addr) string { return tc.oif })
		got := nft.Outcomes(tr.Trace(nft.Packet{Src: src, Dst: ma(tc.dst), Proto: nft.UDP, DPort: 53, FromNode: tc.fromNode}))
		if got != tc.want {
			t.Errorf("%s: %s -> %s via %s = %s, want %s", tc.name, tc.src, tc.dst, tc.oif, got, tc.want)
		}
	}
}

func TestDesiredFamilyWithoutPodCIDRIsEmpty(t *testing.T) {
	o := Options{PodCIDRs: []netip.Prefix{mp("198.19.1.0/24")}, ClusterCIDRs: cluster}
	if got := Desired(o, nft.IPv6).Chains[ChainName]; len(got) != 0 {
		t.Errorf("ip6 chain %v, want empty without an IPv6 podCIDR", got)
	}
	if got := Desired(Options{}, nft.IPv4).Chains[ChainName]; len(got) != 0 {
		t.Errorf("no podCIDRs: %v, want an empty chain", got)
	}
}

func TestRuleStrings(t *testing.T) {
	rs := Desired(Options{PodCIDRs: []netip.Prefix{mp("198.19.1.0/24")}, ClusterCIDRs: []netip.Prefix{mp("198.19.0.0/16")}}, nft.IPv4)
	var lines []string
	for _, r := range rs.Chains[ChainName] {
		lines = append(lines, r.String())
	}
	want := `oifname "wgmesh0" return|ip daddr 198.19.0.0/16 return|ip saddr 198.19.1.0/24 counter masquerade`
	if got := strings.Join(lines, "|"); got != want {
		t.Errorf("rules %q, want %q", got, want)
	}
}

// TestManagerWritesOnlyWhatDiffers: unchanged input writes nothing, drift
// is repaired, a failed write is an error, an Event and a metric.
func TestManagerWritesOnlyWhatDiffers(t *testing.T) {
	fake := nft.NewFake()
	metrics := NewMetrics(nil)
	var events []string
	m := NewManager(ManagerOptions{ClusterCIDRs: cluster, ServiceCIDRs: services, NFT: fake.For(Part), ProcSys: t.TempDir(), Log: logr.Discard(),
		Metrics: metrics, Events: func(_, reason, _ string) { events = append(events, reason) }})
	ctx := context.Background()
	if err := m.Apply(ctx, pods); err != nil {
		t.Fatal(err)
	}
	writes := fake.Writes
	if err := m.Apply(ctx, pods); err != nil || fake.Writes != writes {
		t.Errorf("unchanged input: err %v, writes %d -> %d, want no write", err, writes, fake.Writes)
	}
	fake.Tamper(nft.IPv4, func(rs *nft.Ruleset) { rs.Chains[ChainName] = rs.Chains[ChainName][:1] })
	if err := m.Apply(ctx, pods); err != nil || fake.Writes != writes+1 {
		t.Errorf("drift: err %v, writes %d -> %d, want one repair", err, writes, fake.Writes)
	}
	if got := len(fake.Ruleset(nft.IPv4).Chains[ChainName]); got != 4 {
		t.Errorf("after repair the chain has %d rules, want 4", got)
	}
	fake.FailWrites = errors.New("netlink: operation not permitted")
	fake.Tamper(nft.IPv6, func(rs *nft.Ruleset) { delete(rs.Chains, ChainName) })
	err := m.Apply(ctx, pods)
	if err == nil || !strings.Contains(err.Error(), "egress masquerade, table ip6 wgmesh") {
		t.Errorf("failed write: %v, want an error naming the table", err)
	}
	if len(events) == 0 || events[len(events)-1] != "EgressMasqueradeFailed" {
		t.Errorf("events %v, want EgressMasqueradeFailed last", events)
	}
	if got := testutil.ToFloat64(metrics.Errors.WithLabelValues("apply")); got != 1 {
		t.Errorf("errors metric %v, want 1", got)
	}
}
