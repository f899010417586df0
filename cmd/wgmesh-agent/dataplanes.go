package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/cniinstall"
	"github.com/wgmesh/wgmesh/agent/egress"
	"github.com/wgmesh/wgmesh/agent/leakguard"
	"github.com/wgmesh/wgmesh/nft"
)

// cniPluginRecord, in --state-dir, names the CNI plugins the agent created in
// --cni-bin-dir: the ones its cleanup removes.
const cniPluginRecord = "cni-plugins"

// dataplaneFlags are the flags only node data plane components use.
type dataplaneFlags struct {
	cniBinSource, cniConfDir, cniBinDir string
	portMapBackend                      string
}

// nodeDataplanes returns the agent.NodeDataplane components, in the order the
// agent applies them after the mesh (and cleans them up in reverse): the
// leak guard, egress masquerade and br_netfilter, then the CNI plugins and
// conflist, which are written only once the guard is in place (see
// agent/leakguard; the conflist's first plugin, wgmesh-guard, holds pods
// back after a reboot until it is). The egress manager is returned too: it
// knows whether br_netfilter is on, which the network policy needs.
func nodeDataplanes(f dataplaneFlags, np networkPolicyFlags, o agent.Options, log logr.Logger) ([]agent.NodeDataplane, *egress.Manager) {
	cniEvents, egressEvents := &nodeEvents{}, &nodeEvents{}
	g := leakguard.New(leakguard.Options{ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, TunnelIf: o.LinkName, BridgeIf: o.BridgeName},
		&nft.Kernel{Part: leakguard.Part}, log.WithName("leakguard"), leakguard.NewMetrics(metrics.Registry))
	eg := egress.NewManager(egress.ManagerOptions{
		ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, TunnelIf: o.LinkName, NFT: &nft.Kernel{Part: egress.Part},
		Log: log.WithName("egress"), Metrics: egress.NewMetrics(metrics.Registry), Events: egressEvents.emit,
	})
	return []agent.NodeDataplane{
		guardDataplane{g: g},
		egressDataplane{events: egressEvents, m: eg},
		cniDataplane{events: cniEvents, m: cniinstall.New(cniinstall.Options{
			ConfDir: f.cniConfDir, BinDir: f.cniBinDir, BinSource: f.cniBinSource, PluginRecord: filepath.Join(o.StateDir, cniPluginRecord),
			PortMapBackend: f.portMapBackend, GuardReady: g.Ready, PolicySocket: np.cniSocket(),
			Log: log.WithName("cni"), Metrics: cniinstall.NewMetrics(metrics.Registry), Events: cniEvents.emit,
		})},
	}, eg
}

// nodeEvents forwards a component's Events to the recorder of the reconcile
// in progress: the components are built before the agent has a Node object.
type nodeEvents struct {
	mu sync.Mutex
	fn func(eventType, reason, message string)
}

func (e *nodeEvents) set(fn func(eventType, reason, message string)) {
	e.mu.Lock()
	e.fn = fn
	e.mu.Unlock()
}

func (e *nodeEvents) emit(eventType, reason, message string) {
	e.mu.Lock()
	fn := e.fn
	e.mu.Unlock()
	if fn != nil {
		fn(eventType, reason, message)
	}
}

type cniDataplane struct {
	m      *cniinstall.Manager
	events *nodeEvents
}

func (cniDataplane) Name() string { return "cni" }
func (d cniDataplane) Apply(ctx context.Context, st agent.NodeState) error {
	d.events.set(st.Event)
	return d.m.Apply(ctx, cniinstall.State{PodCIDRs: prefixStrings(st.PodCIDRs), MTU: st.MTU})
}
func (d cniDataplane) Cleanup(ctx context.Context) error { return d.m.Cleanup(ctx) }

// guardDataplane is the leak guard, and the owner of table wgmesh: its
// cleanup, the last of the node's (they run in reverse), deletes the table
// with every part in it (the service NAT's and the network policy's too).
type guardDataplane struct{ g *leakguard.Guard }

func (guardDataplane) Name() string { return "leakguard" }
func (d guardDataplane) Apply(ctx context.Context, st agent.NodeState) error {
	return d.g.Apply(ctx, slices.Concat(st.NodePodCIDRs, st.ExternalPeerRanges), st.Event)
}
func (guardDataplane) Cleanup(context.Context) error { return nft.DeleteTable(0) }

type egressDataplane struct {
	m      *egress.Manager
	events *nodeEvents
}

func (egressDataplane) Name() string { return "egress" }
func (d egressDataplane) Apply(ctx context.Context, st agent.NodeState) error {
	d.events.set(st.Event)
	return d.m.Apply(ctx, st.PodCIDRs)
}

// Cleanup leaves the chain to the table's owner (guardDataplane) and the
// br_netfilter sysctls as they are: other components may rely on them.
func (egressDataplane) Cleanup(context.Context) error { return nil }

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
