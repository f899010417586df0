package chart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/cniinstall"
	"github.com/wgmesh/wgmesh/agent/egress"
	"github.com/wgmesh/wgmesh/agent/keyrotation"
	"github.com/wgmesh/wgmesh/agent/leakguard"
	"github.com/wgmesh/wgmesh/agent/policy"
	"github.com/wgmesh/wgmesh/agent/probe"
	"github.com/wgmesh/wgmesh/agent/servicenat"
	"github.com/wgmesh/wgmesh/operator"
	"github.com/wgmesh/wgmesh/test/metricnames"
	"github.com/wgmesh/wgmesh/test/repo"
)

// metricsConstructors are the binaries' metrics, each made by its package's
// NewMetrics into the registerer given, keyed by the package's directory.
// TestEveryMetricsConstructorIsChecked fails when a package gains a
// NewMetrics that is not listed here. The agent's per-peer series are on,
// so that the panels that need them are checked too.
var metricsConstructors = map[string]func(prometheus.Registerer) error{
	"agent": func(r prometheus.Registerer) error {
		agent.NewMetrics(r, agent.PerPeerMetrics{Enabled: true})
		return nil
	},
	"agent/servicenat":  func(r prometheus.Registerer) error { servicenat.NewMetrics(r); return nil },
	"agent/cniinstall":  func(r prometheus.Registerer) error { cniinstall.NewMetrics(r); return nil },
	"agent/egress":      func(r prometheus.Registerer) error { egress.NewMetrics(r); return nil },
	"agent/probe":       func(r prometheus.Registerer) error { probe.NewMetrics(r); return nil },
	"agent/keyrotation": func(r prometheus.Registerer) error { keyrotation.NewMetrics(r); return nil },
	"agent/leakguard":   func(r prometheus.Registerer) error { leakguard.NewMetrics(r); return nil },
	"agent/policy":      func(r prometheus.Registerer) error { policy.NewMetrics(r); return nil },
	"operator":          func(r prometheus.Registerer) error { _, err := operator.NewMetrics(r); return err },
}

// recorder is a Registerer that registers into a real registry and keeps
// the collectors, whose descriptions name the metrics even when a vector has
// no series yet (Gather leaves those out).
type recorder struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// descRE reads a metric description (prometheus.Desc's String).
var descRE = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), .*variableLabels: \{([^}]*)\}\}$`)

// metricFamilies are the metrics the wgmesh binaries export: every
// constructor's metrics registered into a fresh registry, plus
// controller-runtime's registry (process, Go runtime, controller and client
// metrics), which the binaries' metrics servers serve too. Each has its name,
// help and type; perPeer names those labelled by peer (their series grow
// with nodes² across a cluster).
func metricFamilies(t *testing.T) (families map[string]*dto.MetricFamily, perPeer map[string]bool) {
	t.Helper()
	rec := &recorder{Registry: prometheus.NewRegistry()}
	for pkg, newMetrics := range metricsConstructors {
		if err := newMetrics(rec); err != nil {
			t.Fatalf("%s.NewMetrics: %v", pkg, err)
		}
	}
	families, perPeer = map[string]*dto.MetricFamily{}, map[string]bool{}
	for _, g := range []prometheus.Gatherer{rec, ctrlmetrics.Registry} {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatalf("gathering the metrics: %v", err)
		}
		for _, f := range mfs {
			families[f.GetName()] = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type}
		}
	}
	// Vectors without series are missing from Gather: their descriptions
	// name them, their Go type tells their type (a collector of its own
	// stays untyped).
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the metric name from %s", d)
			}
			name, err1 := strconv.Unquote(m[1])
			help, err2 := strconv.Unquote(m[2])
			if err1 != nil || err2 != nil {
				t.Fatalf("cannot read the metric name and help from %s", d)
			}
			if slices.Contains(strings.Split(m[3], ","), "peer") {
				perPeer[name] = true
			}
			if _, ok := families[name]; ok {
				continue
			}
			kind := dto.MetricType_UNTYPED
			switch c.(type) {
			case *prometheus.CounterVec:
				kind = dto.MetricType_COUNTER
			case *prometheus.GaugeVec:
				kind = dto.MetricType_GAUGE
			case *prometheus.HistogramVec:
				kind = dto.MetricType_HISTOGRAM
			case *prometheus.SummaryVec:
				kind = dto.MetricType_SUMMARY
			}
			families[name] = &dto.MetricFamily{Name: &name, Help: &help, Type: &kind}
		}
	}
	return families, perPeer
}

// exportedSeries returns the series names the wgmesh binaries export, each
// with the metric it belongs to. A histogram exports name_bucket, name_sum
// and name_count, a summary name, name_sum and name_count.
func exportedSeries(t *testing.T) map[string]string {
	t.Helper()
	families, _ := metricFamilies(t)
	series := map[string]string{}
	for name, f := range families {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				series[name+suffix] = name
			}
		case dto.MetricType_SUMMARY:
			for _, suffix := range []string{"", "_sum", "_count"} {
				series[name+suffix] = name
			}
		default:
			series[name] = name
		}
	}
	return series
}

// TestMetricNamesFollowConventions: every wgmesh metric of every binary has
// a name by Prometheus' conventions (client_golang's promlint: _total on
// counters and nothing else, base units, snake_case, help text; and
// metricnames' rule that a timestamp ends in _timestamp_seconds). The
// packages' own tests check their metrics with series filled in; this one
// sees every constructor.
func TestMetricNamesFollowConventions(t *testing.T) {
	families, _ := metricFamilies(t)
	var mfs []*dto.MetricFamily
	for name, f := range families {
		if strings.HasPrefix(name, "wgmesh_") {
			mfs = append(mfs, f)
		}
	}
	if len(mfs) < 40 {
		t.Fatalf("%d wgmesh metrics found; want every constructor's", len(mfs))
	}
	l := promlint.NewWithMetricFamilies(mfs)
	l.AddCustomValidations(metricnames.Timestamps)
	problems, err := l.Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// TestEveryMetricsConstructorIsChecked: each package of the binaries that
// defines NewMetrics is in metricsConstructors, so the exported names the
// dashboard is checked against are complete.
func TestEveryMetricsConstructorIsChecked(t *testing.T) {
	root := repo.Root(t)
	found := map[string]bool{}
	for _, top := range []string{"agent", "operator", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			for _, decl := range f.Decls {
				if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && fn.Name.Name == "NewMetrics" {
					rel, _ := filepath.Rel(root, filepath.Dir(path))
					found[filepath.ToSlash(rel)] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for pkg := range found {
		if _, ok := metricsConstructors[pkg]; !ok {
			t.Errorf("%s defines NewMetrics, which metricsConstructors lacks: add it, so that the dashboard and alerts are checked against its metrics", pkg)
		}
	}
	for pkg := range metricsConstructors {
		if !found[pkg] {
			t.Errorf("metricsConstructors lists %s, which has no NewMetrics any more", pkg)
		}
	}
}

// query is one PromQL expression and where it was found; wgmesh-promql
// fills in the metric names or the error.
type query struct {
	Where   string   `json:"where"`
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics"`
	Error   string   `json:"error,omitempty"`
	// perPeerOK: the query may use per-peer series (a panel whose
	// description starts "Needs agent.perPeerMetrics").
	perPeerOK bool
}

// grafanaVar is a Grafana variable in a query: $name, ${name} or ${name:format}.
var grafanaVar = regexp.MustCompile(`\$(\w+)|\$\{(\w+)(:\w+)?\}`)

// promQL turns a Grafana query into PromQL: interval variables become a
// duration, any other variable (they sit in label matchers) a plain value.
func promQL(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		m := grafanaVar.FindStringSubmatch(v)
		switch m[1] + m[2] {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		}
		return "x"
	})
}

// templateQuery is the PromQL inside a Grafana variable's Prometheus query:
// label_values(expr, label), query_result(expr); "" for label_values(label)
// and label_names(), which name no metric.
var templateFunc = regexp.MustCompile(`^\s*(label_values|query_result|label_names|metrics)\((.*)\)\s*$`)

func templateQuery(q string) (string, error) {
	m := templateFunc.FindStringSubmatch(q)
	if m == nil {
		return "", fmt.Errorf("%q is no Grafana Prometheus variable query (label_values, query_result, label_names)", q)
	}
	switch m[1] {
	case "query_result":
		return m[2], nil
	case "label_values":
		i := strings.LastIndex(m[2], ",")
		if i < 0 {
			return "", nil
		}
		return m[2][:i], nil
	case "metrics":
		return "", fmt.Errorf("%q selects metric names by a regular expression, which cannot be checked", q)
	}
	return "", nil
}

// dashboardQueries collects every query of a Grafana dashboard: the panels'
// targets (also inside collapsed rows) and the query variables.
func dashboardQueries(t *testing.T, dash map[string]any) []query {
	t.Helper()
	var out []query
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			p := p.(map[string]any)
			targets, _ := p["targets"].([]any)
			for _, tg := range targets {
				tg := tg.(map[string]any)
				expr, _ := tg["expr"].(string)
				if expr == "" {
					t.Errorf("panel %v %q target %v: no expr", p["id"], p["title"], tg["refId"])
					continue
				}
				desc, _ := p["description"].(string)
				out = append(out, query{Where: fmt.Sprintf("panel %v %q target %v", p["id"], p["title"], tg["refId"]), Expr: expr,
					perPeerOK: strings.HasPrefix(desc, "Needs agent.perPeerMetrics")})
			}
			if inner, ok := p["panels"].([]any); ok {
				walk(inner)
			}
		}
	}
	panels, _ := dash["panels"].([]any)
	walk(panels)
	vars, _, _ := unstructured.NestedSlice(dash, "templating", "list")
	for _, v := range vars {
		v := v.(map[string]any)
		if v["type"] != "query" {
			continue
		}
		q, _ := v["query"].(string)
		if m, ok := v["query"].(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		expr, err := templateQuery(q)
		if err != nil {
			t.Errorf("variable %v: %v", v["name"], err)
		}
		if expr != "" {
			out = append(out, query{Where: fmt.Sprintf("variable %v", v["name"]), Expr: expr})
		}
	}
	return out
}

// runPromQL parses every query with Prometheus' parser (wgmesh-promql).
func runPromQL(t *testing.T, qs []query) []query {
	t.Helper()
	in, err := json.Marshal(qs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(promtoolDir(t), "wgmesh-promql"))
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("wgmesh-promql: %v\n%s", err, stderr.String())
	}
	var out []query
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || len(out) != len(qs) {
		t.Fatalf("wgmesh-promql answered %d of %d queries (%v):\n%s", len(out), len(qs), err, stdout.String())
	}
	return out
}

// renderedDashboard is the dashboard as the chart ships it, decoded.
func renderedDashboard(t *testing.T) map[string]any {
	t.Helper()
	cm := find(t, render(t, "wgmesh", "kube-system", monitoringOn), "ConfigMap", "-dashboard")
	text, _, _ := unstructured.NestedString(cm.Object, "data", "wgmesh.json")
	var dash map[string]any
	if err := json.Unmarshal([]byte(text), &dash); err != nil {
		t.Fatalf("ConfigMap %s: wgmesh.json: %v", cm.GetName(), err)
	}
	return dash
}

// TestQueriesUseExportedMetrics: every query of the dashboard and every
// alerting rule parses as PromQL (Prometheus' own parser) and names only
// metrics that the binaries export, so no panel stays empty and no alert
// stays silent because of a misspelt or renamed metric. Series labelled by
// peer, which agents export only with agent.perPeerMetrics, are used by no
// alert and no variable, and only by panels whose description starts "Needs
// agent.perPeerMetrics": with the defaults every alert works.
func TestQueriesUseExportedMetrics(t *testing.T) {
	qs := dashboardQueries(t, renderedDashboard(t))
	if len(qs) < 20 {
		t.Fatalf("the dashboard has %d queries; want its panels' and variables' queries", len(qs))
	}
	for i := range qs {
		qs[i].Expr = promQL(qs[i].Expr)
	}
	pr := find(t, render(t, "wgmesh", "kube-system", monitoringOn), "PrometheusRule", "wgmesh")
	for _, g := range ruleGroups(t, pr) {
		for _, r := range g.Rules {
			qs = append(qs, query{Where: fmt.Sprintf("rule group %s alert %s", g.Name, r.Alert+r.Record), Expr: r.Expr})
		}
	}
	series := exportedSeries(t)
	_, perPeer := metricFamilies(t)
	if !perPeer["wgmesh_peer_reachable"] {
		t.Errorf("wgmesh_peer_reachable is not among the per-peer metrics %v", perPeer)
	}
	used := map[string]bool{}
	missing := map[string][]string{}
	for i, q := range runPromQL(t, qs) {
		if q.Where != qs[i].Where {
			t.Fatalf("wgmesh-promql answered %q for query %d, %q", q.Where, i, qs[i].Where)
		}
		for _, m := range q.Metrics {
			if perPeer[series[m]] && !qs[i].perPeerOK {
				t.Errorf("%s uses %s, which agents export only with agent.perPeerMetrics (off by default): use the aggregates, or start the panel's description with \"Needs agent.perPeerMetrics\"\n    %s", q.Where, m, q.Expr)
			}
		}
		if q.Error != "" {
			t.Errorf("%s: %s\n    %s", q.Where, q.Error, q.Expr)
			continue
		}
		if len(q.Metrics) == 0 {
			t.Errorf("%s: the query names no metric: %s", q.Where, q.Expr)
		}
		for _, m := range q.Metrics {
			if metric, ok := series[m]; ok {
				used[metric] = true
			} else {
				missing[m] = append(missing[m], q.Where)
			}
		}
	}
	for _, m := range slices.Sorted(maps.Keys(missing)) {
		t.Errorf("%s is exported by no wgmesh binary, but is used by:\n    %s", m, strings.Join(missing[m], "\n    "))
	}
	var unused []string
	for _, metric := range series {
		if strings.HasPrefix(metric, "wgmesh_") && !used[metric] {
			unused = append(unused, metric)
		}
	}
	slices.Sort(unused)
	t.Logf("wgmesh metrics no dashboard panel or alert uses: %v", slices.Compact(unused))
}

// TestWgmeshPromQLReportsErrors: the parser helper itself finds a metric's
// name wherever it stands and refuses what cannot be checked, so the test
// above cannot pass by reading nothing.
func TestWgmeshPromQLReportsErrors(t *testing.T) {
	got := runPromQL(t, []query{
		{Where: "ok", Expr: `sum by (le) (rate(a_bucket{x="y"}[5m])) / on() group_left b_total and {__name__="c"}`},
		{Where: "syntax", Expr: `sum(rate(a[5m])`},
		{Where: "no name", Expr: `{job="x"}`},
		{Where: "regex name", Expr: `{__name__=~"wgmesh_.*"}`},
	})
	if !slices.Equal(got[0].Metrics, []string{"a_bucket", "b_total", "c"}) || got[0].Error != "" {
		t.Errorf("names %v, error %q; want [a_bucket b_total c] and none", got[0].Metrics, got[0].Error)
	}
	for _, q := range got[1:] {
		if q.Error == "" {
			t.Errorf("%s: %s gave no error", q.Where, q.Expr)
		}
	}
}

// TestDashboardShape: a datasource variable that every panel and query
// variable uses, a node variable that every agent query filters by, unique
// panel ids, and panels that fit Grafana's 24-column grid.
func TestDashboardShape(t *testing.T) {
	dash := renderedDashboard(t)
	if dash["uid"] == "" || dash["title"] == "" || dash["schemaVersion"] == nil {
		t.Errorf("dashboard uid %v, title %v, schemaVersion %v: all are needed", dash["uid"], dash["title"], dash["schemaVersion"])
	}
	vars, _, _ := unstructured.NestedSlice(dash, "templating", "list")
	byName := map[string]map[string]any{}
	for _, v := range vars {
		v := v.(map[string]any)
		byName[v["name"].(string)] = v
	}
	if ds := byName["datasource"]; ds == nil || ds["type"] != "datasource" || ds["query"] != "prometheus" {
		t.Errorf("no datasource variable of type datasource for prometheus: %v", ds)
	}
	if n := byName["node"]; n == nil || n["type"] != "query" || n["includeAll"] != true || n["multi"] != true {
		t.Errorf("no multi-value node variable with All: %v", n)
	}
	wantDS := func(where string, ds any) {
		if uid, _, _ := unstructured.NestedString(map[string]any{"ds": ds}, "ds", "uid"); uid != "${datasource}" {
			t.Errorf("%s: datasource %v, want uid ${datasource}", where, ds)
		}
	}
	wantDS("variable node", byName["node"]["datasource"])
	ids := map[float64]bool{}
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			p := p.(map[string]any)
			where := fmt.Sprintf("panel %v %q", p["id"], p["title"])
			id, _ := p["id"].(float64)
			if id == 0 || ids[id] {
				t.Errorf("%s: id missing or not unique", where)
			}
			ids[id] = true
			x, _, _ := unstructuredInt(p, "gridPos", "x")
			w, _, _ := unstructuredInt(p, "gridPos", "w")
			if w <= 0 || x < 0 || x+w > 24 {
				t.Errorf("%s: gridPos %v does not fit the 24-column grid", where, p["gridPos"])
			}
			if p["type"] != "row" {
				wantDS(where, p["datasource"])
				if p["description"] == nil || p["description"] == "" {
					t.Errorf("%s: no description (what it shows, and which alert watches it)", where)
				}
				targets, _ := p["targets"].([]any)
				if len(targets) == 0 {
					t.Errorf("%s: no query", where)
				}
				for _, tg := range targets {
					tg := tg.(map[string]any)
					wantDS(fmt.Sprintf("%s target %v", where, tg["refId"]), tg["datasource"])
					expr, _ := tg["expr"].(string)
					if strings.Contains(expr, "wgmesh_") && !strings.Contains(expr, "wgmesh_operator_") && !strings.Contains(expr, `node=~"$node"`) {
						t.Errorf("%s target %v: an agent query that ignores the node variable: %s", where, tg["refId"], expr)
					}
				}
			}
			if inner, ok := p["panels"].([]any); ok {
				walk(inner)
			}
		}
	}
	panels, _ := dash["panels"].([]any)
	walk(panels)
}
