package operator

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/wgmesh/wgmesh/operator/cidr"
)

// Options configure the operator's controllers.
type Options struct {
	// Pools are the validated pod CIDR pools (cidr.Config.Parse).
	Pools []cidr.PoolSpec
	// Registerer receives the wgmesh_operator_* metrics.
	Registerer prometheus.Registerer
	// Now is the clock for condition times; time.Now when nil.
	Now func() time.Time
	// APIServer are the API server's addresses: no external MeshPeer may
	// route them into the tunnel.
	APIServer []netip.Addr
	// Locations say where a node's location comes from.
	Locations LocationOptions
}

// Setup adds the operator's controllers to a manager. They run only on the
// elected leader.
func Setup(mgr ctrl.Manager, opts Options) error {
	if len(opts.Pools) == 0 {
		return fmt.Errorf("no pod CIDR pool configured")
	}
	m, err := NewMetrics(opts.Registerer)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	rec := mgr.GetEventRecorder(FieldManager)
	nodeCIDR := &NodeCIDRReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Allocator: cidr.New(opts.Pools),
		Recorder:  rec,
		Metrics:   m,
	}
	if err := nodeCIDR.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up %s controller: %w", nodeCIDRControllerName, err)
	}
	peers := &MeshPeerReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: rec, Metrics: m, Now: opts.Now,
		ClusterCIDRs: poolPrefixes(opts.Pools), Locations: opts.Locations}
	if err := peers.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up %s controller: %w", meshPeerControllerName, err)
	}
	conflicts := &ConflictReconciler{Client: mgr.GetClient(), Recorder: rec, Metrics: m, Now: opts.Now,
		ClusterCIDRs: poolPrefixes(opts.Pools), APIServer: opts.APIServer}
	if err := conflicts.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up %s controller: %w", conflictControllerName, err)
	}
	return nil
}

func poolPrefixes(pools []cidr.PoolSpec) []netip.Prefix {
	out := make([]netip.Prefix, len(pools))
	for i, p := range pools {
		out[i] = p.Prefix
	}
	return out
}
