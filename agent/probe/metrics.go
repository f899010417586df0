package probe

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the probes' Prometheus metrics.
type Metrics struct {
	Reachable *prometheus.GaugeVec
	RTT       *prometheus.GaugeVec
	Probes    *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Reachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wgmesh_peer_reachable",
			Help: "1 when the last reachability probe to the node peer through the tunnel was answered, 0 when it was not."}, []string{"peer"}),
		RTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wgmesh_peer_rtt_seconds",
			Help: "Round-trip time of the last answered reachability probe to the node peer."}, []string{"peer"}),
		Probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wgmesh_peer_probes_total",
			Help: "Reachability probes finished, by result (answered, lost)."}, []string{"result"}),
	}
	m.Probes.WithLabelValues("answered")
	m.Probes.WithLabelValues("lost")
	if reg != nil {
		reg.MustRegister(m.Reachable, m.RTT, m.Probes)
	}
	return m
}
