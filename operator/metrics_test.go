package operator

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wgmesh/wgmesh/operator/cidr"
	"github.com/wgmesh/wgmesh/test/metricnames"
)

// TestMetricNames: every operator metric, its vectors filled in, follows
// Prometheus' naming conventions (a gauge has no _total suffix).
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.setPools([]cidr.PoolStats{{Name: "198.19.0.0/16", Used: 3, Total: 256}})
	m.PoolExhausted.WithLabelValues("198.19.0.0/16")
	m.ReconcileErrors.WithLabelValues("nodecidr")
	m.LearnedEndpoints.WithLabelValues("true")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var c int
	for _, mf := range mfs {
		c++
		if len(mf.GetMetric()) == 0 {
			t.Errorf("%s has no series: the names check cannot judge it", mf.GetName())
		}
	}
	if c != 10 {
		t.Errorf("gathered %d families, want all 10 of Metrics", c)
	}
	metricnames.Check(t, reg, "")
}
