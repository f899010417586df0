package operator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wgmesh/wgmesh/operator/cidr"
)

// Metrics are the operator's Prometheus metrics (wgmesh_operator_*).
type Metrics struct {
	PoolExhausted       *prometheus.CounterVec
	PodCIDRsAssigned    prometheus.Counter
	PoolUsed            *prometheus.GaugeVec
	PoolSize            *prometheus.GaugeVec
	MeshPeersManaged    prometheus.Gauge
	ReconcileErrors     *prometheus.CounterVec
	KeyConflicts        prometheus.Gauge
	AllowedIPsConflicts prometheus.Gauge
	LearnedEndpoints    *prometheus.GaugeVec
	ForeignEndpoints    prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (the
// controller-runtime registry in the binary, a fresh one per test manager).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		PoolExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_operator_cidr_pool_exhausted_total",
			Help: "Times a node could not get a pod CIDR because the pool was full.",
		}, []string{"pool"}),
		PodCIDRsAssigned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wgmesh_operator_podcidrs_assigned_total",
			Help: "Nodes this replica wrote spec.podCIDRs to.",
		}),
		PoolUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wgmesh_operator_cidr_pool_used",
			Help: "Node CIDRs in use per pool.",
		}, []string{"pool"}),
		PoolSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wgmesh_operator_cidr_pool_size",
			Help: "Node CIDRs per pool, used or not.",
		}, []string{"pool"}),
		MeshPeersManaged: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_operator_meshpeers_managed",
			Help: "Node MeshPeers written by the operator.",
		}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_operator_reconcile_errors_total",
			Help: "Reconciles that ended in an error, per controller.",
		}, []string{"controller"}),
		KeyConflicts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_operator_key_conflicts",
			Help: "MeshPeers left out of the mesh because another MeshPeer has the same public key.",
		}),
		AllowedIPsConflicts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_operator_allowedips_conflicts",
			Help: "External MeshPeers left out of the mesh because their allowedIPs overlap node pod CIDRs.",
		}),
		LearnedEndpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wgmesh_operator_learned_endpoints",
			Help: "Addresses nodes report as WireGuard endpoints of node peers learned from handshakes (MeshPeer status.learnedEndpoints); protected=\"true\" when enough nodes report one that no external peer may claim it, \"false\" when a single node does.",
		}, []string{"protected"}),
		ForeignEndpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_operator_foreign_endpoints",
			Help: "Nodes whose wgmesh.io/endpoint is not one of the Node's own addresses (not published; InvalidAnnotation on its MeshPeer).",
		}),
	}
	for _, c := range []prometheus.Collector{m.PoolExhausted, m.PodCIDRsAssigned, m.PoolUsed, m.PoolSize, m.MeshPeersManaged, m.ReconcileErrors, m.KeyConflicts, m.AllowedIPsConflicts, m.LearnedEndpoints, m.ForeignEndpoints} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) setPools(stats []cidr.PoolStats) {
	for _, s := range stats {
		m.PoolUsed.WithLabelValues(s.Name).Set(float64(s.Used))
		m.PoolSize.WithLabelValues(s.Name).Set(float64(s.Total))
	}
}
