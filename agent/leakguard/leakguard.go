// Package leakguard keeps traffic to the mesh's ranges off every interface
// but the tunnel and the pod bridge: wgmesh's central promise, that no pod
// packet crosses the underlay in clear.
//
// The guard is two base chains of table wgmesh (families ip and ip6),
// "guard-forward" (hook forward, priority filter) and "guard-output" (hook
// postrouting, priority filter), both policy accept, with one rule per
// guarded range:
//
//	ip daddr 198.19.0.0/16 oifname != "wgmesh0" oifname != "wgmesh-br0" counter drop
//
// The guarded ranges are the cluster's pod CIDRs, every peer's range (the
// pod CIDRs of every node the agent knows, the allowedIPs of the external
// peers in the mesh) and the service CIDRs. Without the guard, traffic to
// a node whose route is not installed yet (the moment a node joins, or
// behind NAT before its first handshake), or to any peer once wgmesh0 has
// vanished, follows the default route and leaves in clear.
//
// The node's own traffic is guarded at postrouting, not output: a service
// DNAT in nat-output re-routes the packet, but chains later in the output
// hook still see the first route's interface (the underlay, for a
// ClusterIP), and would drop traffic that in fact leaves through the
// tunnel. At postrouting the interface is final.
//
// Ordering: the CNI configuration, which lets pods onto the network, is
// written only once the guard is in the kernel (Ready is the CNI
// installer's GuardReady), and the conflist's first plugin, wgmesh-guard
// (cni/guard), holds pods back after a reboot until it is.
package leakguard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/nft"
)

// PriorityGuard is the guard's priority: after every filter chain at the
// standard priority (kube-proxy's, whose reject of a Service without
// endpoints must answer the client rather than meet the guard's drop first;
// chains at one priority run in no set order). Running later weakens
// nothing: an accept in another base chain does not end the packet's walk
// of the hook, so every packet that leaves meets the guard.
const PriorityGuard = nft.PriorityFilter + 10

// Part is the leak guard's share of table wgmesh.
var Part = &nft.Part{
	Name: "leak guard",
	BaseChains: []nft.BaseChain{
		{Name: guard.ForwardChain, Hook: nft.HookForward, Priority: PriorityGuard},
		{Name: guard.OutputChain, Hook: nft.HookPostrouting, Priority: PriorityGuard},
	},
}

// Defaults of Options.
const (
	DefaultTunnelIf = "wgmesh0"
	DefaultBridgeIf = "wgmesh-br0"
)

// Options are the cluster-wide inputs of the guard.
type Options struct {
	ClusterCIDRs []netip.Prefix // --cluster-cidrs
	ServiceCIDRs []netip.Prefix // --service-cidrs
	TunnelIf     string         // defaults to DefaultTunnelIf
	BridgeIf     string         // defaults to DefaultBridgeIf
}

func (o Options) withDefaults() Options {
	if o.TunnelIf == "" {
		o.TunnelIf = DefaultTunnelIf
	}
	if o.BridgeIf == "" {
		o.BridgeIf = DefaultBridgeIf
	}
	return o
}

// Ranges are the destinations the guard keeps off every interface but the
// tunnel and the bridge, in family f: the cluster's pod CIDRs, the peer
// ranges and the service CIDRs, without ranges another one already
// covers, sorted.
func Ranges(o Options, peerRanges []netip.Prefix, f nft.Family) []netip.Prefix {
	all := nft.OfFamily(slices.Concat(o.ClusterCIDRs, peerRanges, o.ServiceCIDRs), f)
	slices.SortFunc(all, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range all {
		if !slices.ContainsFunc(out, func(o netip.Prefix) bool { return o.Bits() <= p.Bits() && o.Contains(p.Addr()) }) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// Desired is family f's guard: both chains, one drop rule per range.
func Desired(o Options, peerRanges []netip.Prefix, f nft.Family) *nft.Ruleset {
	o = o.withDefaults()
	var rules nft.Chain
	for _, d := range Ranges(o, peerRanges, f) {
		rules = append(rules, nft.Rule{NotOIFNames: []string{o.TunnelIf, o.BridgeIf}, Daddr: d, Counter: true,
			Verdict: nft.Verdict{Kind: nft.VerdictDrop}})
	}
	rs := Part.Skeleton()
	for _, b := range Part.BaseChains {
		rs.Chains[b.Name] = rules
	}
	return rs
}

// EventFunc records a Kubernetes Event on the agent's Node.
type EventFunc func(eventType, reason, message string)

// ReasonFailed is the Warning Event reason when the guard cannot be
// programmed.
const ReasonFailed = "LeakGuardFailed"

// Guard programs the leak guard and tells whether it is in place.
type Guard struct {
	opts    Options
	nft     nft.Programmer
	log     logr.Logger
	metrics *Metrics

	mu  sync.Mutex
	err error // why the guard is not in place; nil once it is
}

// New returns a Guard writing through p (an nft.Kernel on a node).
func New(o Options, p nft.Programmer, log logr.Logger, m *Metrics) *Guard {
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Guard{opts: o.withDefaults(), nft: p, log: log, metrics: m, err: errors.New("the leak guard has not been programmed yet")}
}

// Apply programs the guard over the cluster's ranges and peerRanges in
// both families, writing only what differs (drift is repaired). A failure
// is reported (Event, metric) and returned; Ready says it until an Apply
// succeeds.
func (g *Guard) Apply(_ context.Context, peerRanges []netip.Prefix, event EventFunc) error {
	err := g.apply(peerRanges)
	g.mu.Lock()
	g.err = err
	g.mu.Unlock()
	if err != nil {
		g.metrics.Errors.Inc()
		g.metrics.Ready.Set(0)
		if event != nil {
			event(corev1.EventTypeWarning, ReasonFailed, err.Error())
		}
		return err
	}
	g.metrics.Ready.Set(1)
	return nil
}

func (g *Guard) apply(peerRanges []netip.Prefix) error {
	for _, f := range nft.Families {
		want := Desired(g.opts, peerRanges, f)
		wrote, err := nft.Sync(g.nft, f, want)
		if err != nil {
			return fmt.Errorf("leak guard, table %s %s: %w", f, nft.Table, err)
		}
		n := len(want.Chains[guard.ForwardChain])
		g.metrics.Ranges.WithLabelValues(f.String()).Set(float64(n))
		if wrote {
			g.metrics.Syncs.WithLabelValues(f.String()).Inc()
			g.log.Info("programmed the leak guard", "family", f.String(), "table", nft.Table, "ranges", n)
		}
	}
	return nil
}

// Ready is nil once the guard is in the kernel, else why not. The CNI
// configuration is written only after it is.
func (g *Guard) Ready() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}
