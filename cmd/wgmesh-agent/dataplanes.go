package main

import (
	"context"
	"net/netip"
	"sync"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wgmesh/wgmesh/agent"
	agentcni "github.com/wgmesh/wgmesh/agent/cni"
	"github.com/wgmesh/wgmesh/agent/egress"
)

// dataplaneFlags are the flags only node data plane components use.
type dataplaneFlags struct {
	cniBinSource, cniConfDir, cniBinDir string
}

// nodeDataplanes returns the agent.NodeDataplane components, in the order the
// agent applies them after the mesh: first the CNI plugins and conflist, then
// egress masquerade and br_netfilter.
func nodeDataplanes(f dataplaneFlags, o agent.Options, log logr.Logger) []agent.NodeDataplane {
	cniEvents, egressEvents := &nodeEvents{}, &nodeEvents{}
	return []agent.NodeDataplane{
		cniDataplane{events: cniEvents, m: agentcni.New(agentcni.Options{
			ConfDir: f.cniConfDir, BinDir: f.cniBinDir, BinSource: f.cniBinSource,
			Log: log.WithName("cni"), Metrics: agentcni.NewMetrics(metrics.Registry), Events: cniEvents.emit,
		})},
		egressDataplane{events: egressEvents, m: egress.NewManager(egress.ManagerOptions{
			ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, TunnelIf: o.LinkName, BridgeIf: o.BridgeName,
			Log: log.WithName("egress"), Metrics: egress.NewMetrics(metrics.Registry), Events: egressEvents.emit,
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
	m      *agentcni.Manager
	events *nodeEvents
}

func (cniDataplane) Name() string { return "cni" }
func (d cniDataplane) Apply(ctx context.Context, st agent.NodeState) error {
	d.events.set(st.Event)
	return d.m.Apply(ctx, agentcni.State{PodCIDRs: prefixStrings(st.PodCIDRs), MTU: st.MTU})
}
func (d cniDataplane) Cleanup(ctx context.Context) error { return d.m.Cleanup(ctx) }

type egressDataplane struct {
	m      *egress.Manager
	events *nodeEvents
}

func (egressDataplane) Name() string { return "egress" }
func (d egressDataplane) Apply(ctx context.Context, st agent.NodeState) error {
	d.events.set(st.Event)
	return d.m.Apply(ctx, prefixStrings(st.PodCIDRs))
}
func (d egressDataplane) Cleanup(ctx context.Context) error { return d.m.Cleanup(ctx) }

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
