package keyrotation

import "github.com/prometheus/client_golang/prometheus"

// Results of a rotation (label result of wgmesh_key_rotations_total).
const (
	// ResultCompleted: every node peer connected before the switch
	// handshook with the new key.
	ResultCompleted = "completed"
	// ResultUnconfirmed: the key is rotated, but some of those peers had
	// not handshaken with it within the confirmation timeout.
	ResultUnconfirmed = "unconfirmed"
	// ResultRolledBack: the rotation was given up before the switch.
	ResultRolledBack = "rolled_back"
)

// Metrics of key rotation.
type Metrics struct {
	Rotations  *prometheus.CounterVec
	KeyCreated prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wgmesh_key_rotations_total",
			Help: "Key rotations of this node finished, by result (completed, unconfirmed, rolled_back)."}, []string{"result"}),
		KeyCreated: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wgmesh_key_created_timestamp_seconds",
			Help: "When this node's current WireGuard key was put in place (Unix seconds): created, or promoted by a rotation."}),
	}
	for _, r := range []string{ResultCompleted, ResultUnconfirmed, ResultRolledBack} {
		m.Rotations.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Rotations, m.KeyCreated)
	}
	return m
}
