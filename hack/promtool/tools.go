//go:build tools

// Package tools pins promtool, which the chart tests run on the chart's
// alerting rules (promtool check rules, promtool test rules). It is a separate
// module, like hack/tools, so that the product's own module never depends on
// github.com/prometheus/prometheus.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
