package egress

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the egress component.
type Metrics struct {
	Syncs             *prometheus.CounterVec
	Errors            *prometheus.CounterVec
	BridgeNFCallReady prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg when reg is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_egress_rule_syncs_total",
			Help: "Times the egress masquerade chain was (re)written because it was missing or differed.",
		}, []string{"family"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_egress_errors_total",
			Help: "Errors programming egress masquerade or br_netfilter sysctls, by operation.",
		}, []string{"op"}),
		BridgeNFCallReady: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_br_netfilter_enabled",
			Help: "1 when net.bridge.bridge-nf-call-iptables and -ip6tables are 1, 0 when br_netfilter is unavailable.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Syncs, m.Errors, m.BridgeNFCallReady)
	}
	return m
}
