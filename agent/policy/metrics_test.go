package policy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wgmesh/wgmesh/test/metricnames"
)

// TestMetricNames: the network policy's metrics, every vector with a
// series, follow Prometheus' naming conventions.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SyncDuration.WithLabelValues("full").Observe(0.01)
	m.Writes.WithLabelValues("partial").Add(3)
	m.SyncErrors.WithLabelValues("kernel").Inc()
	m.IsolatedPods.WithLabelValues("ingress").Set(2)
	m.DeniedPackets.WithLabelValues("egress").Add(5)
	m.UnjudgedPackets.WithLabelValues("ingress").Add(1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 11 {
		t.Errorf("%d families gathered, want all 11", len(mfs))
	}
	metricnames.Check(t, reg, "")
}
