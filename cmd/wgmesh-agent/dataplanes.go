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
// agent applies them after the mesh: first the leak guard, egress masquerade
// and br_netfilter, then the CNI plugins and conflist, which are written only
// once the guard is in place (the conflist's first plugin, wgmesh-guard,
// holds pods back after a reboot until it is).
func nodeDataplanes(f dataplaneFlags, o agent.Options, log logr.Logger) []agent.NodeDataplane {
	cniEvents, egressEvents := &nodeEvents{}, &nodeEvents{}
	eg := egress.NewManager(egress.ManagerOptions{
		ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, TunnelIf: o.LinkName, BridgeIf: o.BridgeName,
		Log: log.WithName("egress"), Metrics: egress.NewMetrics(metrics.Registry), Events: egressEvents.emit,
	})
	return []agent.NodeDataplane{
		egressDataplane{events: egressEvents, m: eg},
		cniDataplane{events: cniEvents, m: cniinstall.New(cniinstall.Options{
			ConfDir: f.cniConfDir, BinDir: f.cniBinDir, BinSource: f.cniBinSource, PluginRecord: filepath.Join(o.StateDir, cniPluginRecord),
			PortMapBackend: f.portMapBackend, GuardReady: eg.GuardErr,
			Log: log.WithName("cni"), Metrics: cniinstall.NewMetrics(metrics.Registry), Events: cniEvents.emit,
		})},
	}
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

type egressDataplane struct {
	m      *egress.Manager
	events *nodeEvents
}

func (egressDataplane) Name() string { return "egress" }
func (d egressDataplane) Apply(ctx context.Context, st agent.NodeState) error {
	d.events.set(st.Event)
	return d.m.Apply(ctx, prefixStrings(st.PodCIDRs), append(slices.Clone(st.NodePodCIDRs), st.ExternalPeerRanges...)...)
}
func (d egressDataplane) Cleanup(ctx context.Context) error { return d.m.Cleanup(ctx) }

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
