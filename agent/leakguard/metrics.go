package leakguard

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the leak guard.
type Metrics struct {
	Syncs  *prometheus.CounterVec
	Errors prometheus.Counter
	Ready  prometheus.Gauge
	Ranges *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg when reg is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_leak_guard_syncs_total",
			Help: "Times the leak guard chains of a family were (re)written because they were missing or differed.",
		}, []string{"family"}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wgmesh_leak_guard_errors_total",
			Help: "Failed attempts to program the leak guard.",
		}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_leak_guard_ready",
			Help: "1 when the leak guard is in the kernel as desired, 0 when the last attempt failed (pods are held back until it is).",
		}),
		Ranges: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wgmesh_leak_guard_ranges",
			Help: "Destination ranges the leak guard keeps off every interface but the tunnel and the pod bridge, by family.",
		}, []string{"family"}),
	}
	if reg != nil {
		reg.MustRegister(m.Syncs, m.Errors, m.Ready, m.Ranges)
	}
	return m
}
