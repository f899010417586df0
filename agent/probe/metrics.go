package probe

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the probes' Prometheus metrics: aggregates over the peers,
// whose number of series does not grow with the mesh. (The agent exports
// each peer's last result, wgmesh_peer_reachable{peer} and
// wgmesh_peer_rtt_seconds{peer}, only with --per-peer-metrics.)
type Metrics struct {
	Probes *prometheus.CounterVec
	RTT    prometheus.Histogram
}

// rttBuckets span a LAN's tenth of a millisecond to the default probe
// timeout (1 s), in seconds.
var rttBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wgmesh_peer_probes_total",
			Help: "Reachability probes finished, by result (answered, lost)."}, []string{"result"}),
		RTT: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wgmesh_peer_probe_rtt_seconds",
			Help: "Round-trip times of the answered reachability probes to all node peers.", Buckets: rttBuckets}),
	}
	m.Probes.WithLabelValues("answered")
	m.Probes.WithLabelValues("lost")
	if reg != nil {
		reg.MustRegister(m.Probes, m.RTT)
	}
	return m
}
