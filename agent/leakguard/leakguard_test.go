package leakguard_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wgmesh/wgmesh/agent/cniinstall"
	"github.com/wgmesh/wgmesh/agent/leakguard"
	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/nft"
)

func mp(s string) netip.Prefix { return netip.MustParsePrefix(s) }

var opts = leakguard.Options{
	ClusterCIDRs: []netip.Prefix{mp("198.19.0.0/16"), mp("2001:db8:100::/56")},
	ServiceCIDRs: []netip.Prefix{mp("198.18.128.0/20"), mp("2001:db8:200::/112")},
}

func TestRanges(t *testing.T) {
	o := leakguard.Options{ClusterCIDRs: []netip.Prefix{mp("198.19.0.0/16")}, ServiceCIDRs: []netip.Prefix{mp("198.18.128.0/20")}}
	got := leakguard.Ranges(o, []netip.Prefix{mp("198.19.2.0/24"), mp("198.20.7.0/24"), mp("2001:db8:100:1::/64")}, nft.IPv4)
	want := []netip.Prefix{mp("198.18.128.0/20"), mp("198.19.0.0/16"), mp("198.20.7.0/24")}
	if !slices.Equal(got, want) {
		t.Errorf("guarded %v, want %v (covered ranges folded, other family left out)", got, want)
	}
}

func TestDesiredRules(t *testing.T) {
	rs := leakguard.Desired(leakguard.Options{ClusterCIDRs: []netip.Prefix{mp("198.19.0.0/16")}}, nil, nft.IPv4)
	for _, chain := range []string{guard.ForwardChain, guard.OutputChain} {
		rules := rs.Chains[chain]
		if len(rules) != 1 {
			t.Fatalf("chain %s: %v, want one rule", chain, rules)
		}
		if got, want := rules[0].String(), `ip daddr 198.19.0.0/16 oifname != "wgmesh0" oifname != "wgmesh-br0" counter drop`; got != want {
			t.Errorf("chain %s: %q, want %q", chain, got, want)
		}
	}
	// Before this node has a podCIDR, and in a family with no pod CIDR of
	// its own, the cluster's ranges are guarded all the same.
	if got := leakguard.Desired(opts, nil, nft.IPv6).Chains[guard.ForwardChain]; len(got) != 2 {
		t.Errorf("ip6 guard %v, want the cluster and the service range", got)
	}
}

// TestGuardBeforeConflist: the CNI configuration, which lets pods onto the
// network, is written only once the guard is in the kernel. While the
// guard cannot be programmed nothing is written, the failure is an Event
// and a metric, and the guard's error is the CNI installer's.
func TestGuardBeforeConflist(t *testing.T) {
	ctx := context.Background()
	fake := nft.NewFake()
	metrics := leakguard.NewMetrics(nil)
	g := leakguard.New(opts, fake.For(leakguard.Part), logr.Discard(), metrics)
	root := t.TempDir()
	cni := cniinstall.New(cniinstall.Options{ConfDir: filepath.Join(root, "net.d"), BinDir: filepath.Join(root, "bin"),
		PortMapBackend: "nftables", Log: logr.Discard(), GuardReady: g.Ready})
	st := cniinstall.State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420}
	conflist := cni.ConfigPath()
	noConflist := func(stage string) {
		t.Helper()
		if _, err := os.Stat(conflist); !os.IsNotExist(err) {
			t.Fatalf("%s: a conflist exists without the leak guard (%v)", stage, err)
		}
	}

	// Before the first Apply (the agent just started).
	if err := cni.Apply(ctx, st); err == nil || !strings.Contains(err.Error(), "has not been programmed yet") {
		t.Fatalf("CNI before the guard: %v, want the guard's error", err)
	}
	noConflist("before the guard")

	// The kernel refuses the guard.
	fake.FailWrites = errors.New("netlink receive: operation not permitted")
	var events []string
	event := func(_, reason, msg string) { events = append(events, reason+": "+msg) }
	if err := g.Apply(ctx, nil, event); err == nil {
		t.Fatal("guard Apply with the kernel refusing: no error")
	}
	if err := cni.Apply(ctx, st); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("CNI with the guard refused: %v, want the guard's error", err)
	}
	noConflist("guard refused")
	if len(events) != 1 || !strings.HasPrefix(events[0], leakguard.ReasonFailed+": leak guard, table ip wgmesh") {
		t.Errorf("events %q, want one %s naming the table", events, leakguard.ReasonFailed)
	}
	if testutil.ToFloat64(metrics.Ready) != 0 || testutil.ToFloat64(metrics.Errors) != 1 {
		t.Errorf("ready %v errors %v, want 0 and 1", testutil.ToFloat64(metrics.Ready), testutil.ToFloat64(metrics.Errors))
	}

	// The guard is in: the conflist follows.
	fake.FailWrites = nil
	if err := g.Apply(ctx, []netip.Prefix{mp("198.20.7.0/24")}, event); err != nil {
		t.Fatal(err)
	}
	if err := g.Ready(); err != nil {
		t.Fatalf("Ready after a good Apply: %v", err)
	}
	if got := fake.Ruleset(nft.IPv4).Chains[guard.ForwardChain]; len(got) != 3 {
		t.Fatalf("guard-forward %v, want the cluster, peer and service ranges", got)
	}
	if err := cni.Apply(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(conflist); err != nil {
		t.Fatalf("no conflist once the guard is in: %v", err)
	}
	if testutil.ToFloat64(metrics.Ready) != 1 || testutil.ToFloat64(metrics.Ranges.WithLabelValues("ip")) != 3 {
		t.Errorf("ready %v ranges %v, want 1 and 3", testutil.ToFloat64(metrics.Ready), testutil.ToFloat64(metrics.Ranges.WithLabelValues("ip")))
	}
}

// TestGuardRepairsDrift: rules deleted behind the agent's back are
// rewritten; unchanged input writes nothing. (A chain hooked elsewhere is
// nft's TestKernelRecreatesRehookedChain, on a real kernel.)
func TestGuardRepairsDrift(t *testing.T) {
	ctx := context.Background()
	fake := nft.NewFake()
	g := leakguard.New(opts, fake.For(leakguard.Part), logr.Discard(), nil)
	if err := g.Apply(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	writes := fake.Writes
	if err := g.Apply(ctx, nil, nil); err != nil || fake.Writes != writes {
		t.Fatalf("unchanged: err %v, writes %d -> %d", err, writes, fake.Writes)
	}
	fake.Tamper(nft.IPv6, func(rs *nft.Ruleset) { rs.Chains[guard.OutputChain] = nil })
	if err := g.Apply(ctx, nil, nil); err != nil || fake.Writes != writes+1 {
		t.Fatalf("drift: err %v, writes %d -> %d, want one repair", err, writes, fake.Writes)
	}
	if got := fake.Ruleset(nft.IPv6).Chains[guard.OutputChain]; len(got) != 2 {
		t.Errorf("guard-output after repair: %v", got)
	}
}

// TestGuardAfterOtherFilters: the guard's chains run after every chain at
// the standard filter priority, kube-proxy's among them (its reject of a
// Service without endpoints must answer before the guard drops), and
// before the packet leaves (postrouting's NAT chains run at srcnat, after).
func TestGuardAfterOtherFilters(t *testing.T) {
	for _, bc := range leakguard.Part.BaseChains {
		if bc.Priority <= nft.PriorityFilter || bc.Priority >= nft.PrioritySNAT {
			t.Errorf("%s at priority %d: want after filter (%d) and before srcnat (%d)", bc.Name, bc.Priority, nft.PriorityFilter, nft.PrioritySNAT)
		}
	}
}
