// Command wgmesh-promql parses PromQL expressions with Prometheus' own parser
// and prints the metric names each one selects. The chart tests (test/chart)
// feed it every query of the Grafana dashboard and every alerting rule, and
// compare the names with what the wgmesh binaries register; it lives in this
// tools module because the parser pulls in much of Prometheus, which the
// product's module does without.
//
// Input on stdin, a JSON array: [{"where": "panel 3 target A", "expr": "..."}].
// Output on stdout, the same array with "metrics" (sorted, unique) and
// "error" (a parse error, or a selector that names no metric: a name that is
// not fixed cannot be checked) filled in. It exits 0 unless the input itself
// is unreadable, so that the caller reports every bad expression at once.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type query struct {
	Where   string   `json:"where"`
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics"`
	Error   string   `json:"error,omitempty"`
}

func main() {
	var qs []query
	if err := json.NewDecoder(os.Stdin).Decode(&qs); err != nil {
		fmt.Fprintf(os.Stderr, "wgmesh-promql: reading the queries (a JSON array of {where, expr}) from stdin: %v\n", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	for i := range qs {
		qs[i].Metrics, qs[i].Error = metricNames(p, qs[i].Expr)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(qs); err != nil {
		fmt.Fprintf(os.Stderr, "wgmesh-promql: %v\n", err)
		os.Exit(2)
	}
}

// metricNames returns the metric names expr selects, or why it cannot tell.
func metricNames(p parser.Parser, expr string) ([]string, string) {
	e, err := p.ParseExpr(expr)
	if err != nil {
		return nil, err.Error()
	}
	var names, problems []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName {
				continue
			}
			if m.Type != labels.MatchEqual {
				problems = append(problems, fmt.Sprintf("selector %s matches metric names by %s: name the metric", vs, m.Type))
				return nil
			}
			name = m.Value
		}
		if name == "" {
			problems = append(problems, fmt.Sprintf("selector %s names no metric", vs))
			return nil
		}
		names = append(names, name)
		return nil
	})
	slices.Sort(names)
	return slices.Compact(names), strings.Join(problems, "; ")
}
