// Package metricnames checks the metrics a registry gathers against
// Prometheus' naming conventions: client_golang's promlint (counters end in
// _total and nothing else does, base units, snake_case, help text), and a
// timestamp ends in _timestamp_seconds (a gauge whose help says "Unix time"
// is one). wgmesh's metric constructors are tested with it, with their
// vectors filled in so that every family is gathered.
package metricnames

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// Timestamps: a family about a point in time is named *_timestamp_seconds.
func Timestamps(mf *dto.MetricFamily) []error {
	name := mf.GetName()
	if strings.HasSuffix(name, "_timestamp_seconds") {
		if t := mf.GetType(); t != dto.MetricType_GAUGE && t != dto.MetricType_UNTYPED {
			return []error{errors.New("a timestamp is a gauge")}
		}
		return nil
	}
	if strings.Contains(name, "timestamp") || strings.HasPrefix(mf.GetHelp(), "Unix time") {
		return []error{errors.New(`a timestamp's name ends in "_timestamp_seconds"`)}
	}
	return nil
}

// Problems lints what g gathers.
func Problems(g prometheus.Gatherer) ([]promlint.Problem, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	l := promlint.NewWithMetricFamilies(mfs)
	l.AddCustomValidations(Timestamps)
	return l.Lint()
}

// Check fails t for each problem in what g gathers; prefix limits the check
// to the families so named ("" for all).
func Check(t testing.TB, g prometheus.Gatherer, prefix string) {
	t.Helper()
	problems, err := Problems(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, prefix) {
			t.Errorf("metric %s: %s", p.Metric, p.Text)
		}
	}
}
