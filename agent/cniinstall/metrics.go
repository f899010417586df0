package cniinstall

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the CNI component. Create once with NewMetrics and register.
type Metrics struct {
	ConfigWrites   prometheus.Counter
	ConfigRemovals prometheus.Counter
	ConfigPresent  prometheus.Gauge
	PluginInstalls *prometheus.CounterVec
	Errors         *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg when reg is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ConfigWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wgmesh_cni_config_writes_total",
			Help: "Times the agent wrote the CNI conflist because it was missing or different.",
		}),
		ConfigRemovals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wgmesh_cni_config_removals_total",
			Help: "Times the agent removed its CNI conflist (node without podCIDRs, or cleanup).",
		}),
		ConfigPresent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_cni_config_present",
			Help: "1 when the agent's CNI conflist is in place, else 0.",
		}),
		PluginInstalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_cni_plugin_installs_total",
			Help: "Times a CNI plugin binary was installed because it was missing or different.",
		}, []string{"plugin"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_cni_errors_total",
			Help: "Errors of the CNI component by operation (render, write, remove, install).",
		}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.ConfigWrites, m.ConfigRemovals, m.ConfigPresent, m.PluginInstalls, m.Errors)
	}
	return m
}
