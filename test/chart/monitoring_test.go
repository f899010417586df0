package chart

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/wgmesh/wgmesh/test/repo"
	"github.com/wgmesh/wgmesh/test/skip"
)

// monitoringOn turns on the dashboard, the alerts and the PodMonitor with
// their defaults: what the dashboard and rule tests look at.
var monitoringOn = scenario{name: "monitoring", values: `
monitoring:
  podMonitor:
    enabled: true
  grafanaDashboard:
    enabled: true
  prometheusRule:
    enabled: true
`}

// monitoringCustom sets every monitoring value away from its default.
var monitoringCustom = scenario{name: "monitoring-custom", values: `
monitoring:
  podMonitor:
    enabled: true
    labels: {release: kube-prometheus}
    interval: 15s
  grafanaDashboard:
    enabled: true
    label: example.com/dashboard
    labelValue: wgmesh
    namespace: grafana
    annotations: {grafana_folder: Networking}
  prometheusRule:
    enabled: true
    labels: {release: kube-prometheus}
    alertLabels: {team: network, severity: page}
`}

// promtoolDir finds promtool and wgmesh-promql: $WGMESH_PROMTOOL_DIR (make
// test sets it), else the cached build of hack/promtool.sh; without either
// the test is skipped (fails under WGMESH_NO_SKIP=1).
func promtoolDir(t testing.TB) string {
	t.Helper()
	d := os.Getenv("WGMESH_PROMTOOL_DIR")
	if d == "" {
		if out, err := exec.Command(filepath.Join(repo.Root(t), "hack", "promtool.sh"), "--dir").Output(); err == nil {
			d = strings.TrimSpace(string(out))
		}
	}
	for _, name := range []string{"promtool", "wgmesh-promql"} {
		if st, err := os.Stat(filepath.Join(d, name)); d == "" || err != nil || st.Mode()&0o111 == 0 {
			skip.Unless(t, "promtool not found: set WGMESH_PROMTOOL_DIR or run hack/promtool.sh (make test does both)")
		}
	}
	return d
}

// TestMonitoringOffByDefault: without the monitoring values the chart renders
// nothing that needs the Prometheus operator's CRDs or Grafana.
func TestMonitoringOffByDefault(t *testing.T) {
	for _, s := range scenarios {
		for _, o := range render(t, "wgmesh", "kube-system", s) {
			if strings.HasPrefix(o.GetAPIVersion(), "monitoring.coreos.com/") || strings.HasSuffix(o.GetName(), "-dashboard") {
				t.Errorf("scenario %s renders %s %s; monitoring is off by default", s.name, o.GetKind(), o.GetName())
			}
		}
	}
}

func TestMonitoringLints(t *testing.T) {
	for _, s := range []scenario{monitoringOn, monitoringCustom} {
		if _, err := runHelm(t, "lint", "--strict", chartDir(t), "-f", valuesFile(t, s)); err != nil {
			t.Errorf("scenario %s: %v", s.name, err)
		}
	}
	for _, tc := range []struct{ set, want string }{
		{"monitoring.grafanaDashboard.label=bad label", "/monitoring/grafanaDashboard/label"},
		{"monitoring.grafanaDashboard.namespace=Grafana", "/monitoring/grafanaDashboard/namespace"},
		{"monitoring.podMonitor.interval=15", "/monitoring/podMonitor/interval"},
		{"monitoring.prometheusRule.enable=true", "'enable' not allowed"},
	} {
		if _, err := runHelm(t, "template", "x", chartDir(t), "--set", tc.set); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: want a refusal naming %q, got %v", tc.set, tc.want, err)
		}
	}
}

// TestDashboardConfigMap: the ConfigMap carries the sidecar's label (default
// grafana_dashboard: "1", or the configured key and value), lives where the
// sidecar looks, and holds the chart's dashboard file unchanged.
func TestDashboardConfigMap(t *testing.T) {
	file, err := os.ReadFile(filepath.Join(chartDir(t), "dashboards", "wgmesh.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s                       scenario
		namespace, label, value string
		annotations             map[string]string
	}{
		{monitoringOn, "kube-system", "grafana_dashboard", "1", nil},
		{monitoringCustom, "grafana", "example.com/dashboard", "wgmesh", map[string]string{"grafana_folder": "Networking"}},
	} {
		cm := find(t, render(t, "wgmesh", "kube-system", tc.s), "ConfigMap", "-dashboard")
		if cm.GetNamespace() != tc.namespace || cm.GetLabels()[tc.label] != tc.value {
			t.Errorf("scenario %s: ConfigMap %s/%s labels %v; want namespace %s and label %s=%q", tc.s.name, cm.GetNamespace(), cm.GetName(), cm.GetLabels(), tc.namespace, tc.label, tc.value)
		}
		if tc.annotations != nil && !maps.Equal(cm.GetAnnotations(), tc.annotations) {
			t.Errorf("scenario %s: annotations %v, want %v", tc.s.name, cm.GetAnnotations(), tc.annotations)
		}
		data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
		if len(data) != 1 || strings.TrimSpace(data["wgmesh.json"]) != strings.TrimSpace(string(file)) {
			t.Errorf("scenario %s: ConfigMap data keys %v; want wgmesh.json holding dashboards/wgmesh.json", tc.s.name, slices.Sorted(maps.Keys(data)))
		}
		if !json.Valid([]byte(data["wgmesh.json"])) {
			t.Errorf("scenario %s: wgmesh.json is not valid JSON", tc.s.name)
		}
	}
}

// TestPodMonitor: the PodMonitor selects the agent and operator pods (and
// no other), scrapes the port their containers name metrics, and adds the
// node and component labels the dashboard and the alerts use.
func TestPodMonitor(t *testing.T) {
	objs := render(t, "wgmesh", "kube-system", monitoringCustom, "--set", "agent.wireguardMode=userspace")
	pm := find(t, objs, "PodMonitor", "wgmesh")
	if pm.GetAPIVersion() != "monitoring.coreos.com/v1" || pm.GetNamespace() != "kube-system" || pm.GetLabels()["release"] != "kube-prometheus" {
		t.Errorf("PodMonitor %s %s/%s labels %v; want monitoring.coreos.com/v1 in the release namespace with monitoring.podMonitor.labels", pm.GetAPIVersion(), pm.GetNamespace(), pm.GetName(), pm.GetLabels())
	}
	sel := podMonitorSelector(t, pm)
	for _, w := range []struct {
		kind, suffix string
		scraped      bool
	}{{"DaemonSet", "-agent", true}, {"Deployment", "-operator", true}, {"DaemonSet", "-wireguard", false}, {"Job", "-uninstall", false}} {
		o := find(t, objs, w.kind, w.suffix)
		podLabels, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
		if got := sel.Matches(labels.Set(podLabels)); got != w.scraped {
			t.Errorf("PodMonitor selector %s matches %s %s pods: %v, want %v", sel, w.kind, o.GetName(), got, w.scraped)
		}
		if w.scraped && !hasPort(t, o, "metrics") {
			t.Errorf("%s %s: no container port named metrics for the PodMonitor", w.kind, o.GetName())
		}
	}
	eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(eps) != 1 {
		t.Fatalf("PodMonitor podMetricsEndpoints %v, want one", eps)
	}
	ep := eps[0].(map[string]any)
	if ep["port"] != "metrics" || ep["path"] != "/metrics" || ep["interval"] != "15s" {
		t.Errorf("PodMonitor endpoint %v; want port metrics, path /metrics, interval 15s", ep)
	}
	targets := map[string]string{}
	relabel, _, _ := unstructured.NestedSlice(ep, "relabelings")
	for _, r := range relabel {
		r := r.(map[string]any)
		src, _, _ := unstructured.NestedStringSlice(r, "sourceLabels")
		targets[r["targetLabel"].(string)] = strings.Join(src, ",")
	}
	want := map[string]string{"node": "__meta_kubernetes_pod_node_name", "component": "__meta_kubernetes_pod_label_app_kubernetes_io_component"}
	if !maps.Equal(targets, want) {
		t.Errorf("PodMonitor relabelings set %v, want %v", targets, want)
	}
}

func podMonitorSelector(t *testing.T, pm *unstructured.Unstructured) labels.Selector {
	t.Helper()
	match, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	sel := labels.SelectorFromSet(match)
	exprs, _, _ := unstructured.NestedSlice(pm.Object, "spec", "selector", "matchExpressions")
	for _, e := range exprs {
		e := e.(map[string]any)
		values, _, _ := unstructured.NestedStringSlice(e, "values")
		if e["operator"] != "In" {
			t.Fatalf("PodMonitor matchExpression %v: the test knows only In", e)
		}
		req, err := labels.NewRequirement(e["key"].(string), "in", values)
		if err != nil {
			t.Fatal(err)
		}
		sel = sel.Add(*req)
	}
	return sel
}

func hasPort(t *testing.T, o *unstructured.Unstructured, name string) bool {
	t.Helper()
	list, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	for _, c := range list {
		ports, _, _ := unstructured.NestedSlice(c.(map[string]any), "ports")
		for _, p := range ports {
			if p.(map[string]any)["name"] == name {
				return true
			}
		}
	}
	return false
}

// TestPrometheusRuleObject: the PrometheusRule holds the chart's rules file
// with monitoring.prometheusRule.alertLabels on every alert (overriding the
// alert's own label of the same name) and its labels on the object.
func TestPrometheusRuleObject(t *testing.T) {
	plain := ruleGroups(t, find(t, render(t, "wgmesh", "kube-system", monitoringOn), "PrometheusRule", "wgmesh"))
	pr := find(t, render(t, "wgmesh", "kube-system", monitoringCustom), "PrometheusRule", "wgmesh")
	if pr.GetAPIVersion() != "monitoring.coreos.com/v1" || pr.GetLabels()["release"] != "kube-prometheus" {
		t.Errorf("PrometheusRule %s labels %v; want monitoring.coreos.com/v1 with monitoring.prometheusRule.labels", pr.GetAPIVersion(), pr.GetLabels())
	}
	custom := ruleGroups(t, pr)
	if len(plain) == 0 || len(plain) != len(custom) {
		t.Fatalf("rule groups: %d plain, %d with alertLabels", len(plain), len(custom))
	}
	n := 0
	for gi, g := range custom {
		for ri, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			orig := plain[gi].Rules[ri]
			if orig.Labels["severity"] == "" {
				t.Errorf("alert %s has no severity label", orig.Alert)
			}
			if r.Labels["team"] != "network" || r.Labels["severity"] != "page" || r.Expr != orig.Expr || r.For != orig.For {
				t.Errorf("alert %s with alertLabels {team: network, severity: page}: labels %v, expr %q for %q; want those labels on the alert's own", r.Alert, r.Labels, r.Expr, r.For)
			}
		}
	}
	if n == 0 {
		t.Error("the PrometheusRule has no alerts")
	}
}

// rule and ruleGroup are the parts of a Prometheus rules file the tests read.
type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ruleGroup struct {
	Name  string `json:"name"`
	Rules []rule `json:"rules"`
}

func ruleGroups(t *testing.T, pr *unstructured.Unstructured) []ruleGroup {
	t.Helper()
	raw, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var groups []ruleGroup
	if err := json.Unmarshal(b, &groups); err != nil {
		t.Fatalf("PrometheusRule %s spec.groups: %v", pr.GetName(), err)
	}
	return groups
}

// TestAPIServerAcceptsDashboardConfigMap: a real API server takes the
// dashboard ConfigMap as rendered (its size, the sidecar label's key and
// value, the annotations), in the release namespace or another one.
func TestAPIServerAcceptsDashboardConfigMap(t *testing.T) {
	needAPI(t)
	for _, s := range []scenario{monitoringOn, monitoringCustom} {
		cm := find(t, render(t, "wgmesh", "wgmesh-monitoring", s), "ConfigMap", "-dashboard")
		ensureNamespace(t, cm.GetNamespace())
		if err := apiClient.Create(context.Background(), cm); err != nil {
			t.Errorf("scenario %s: the API server refused ConfigMap %s/%s: %v", s.name, cm.GetNamespace(), cm.GetName(), err)
			continue
		}
		t.Cleanup(func() { _ = apiClient.Delete(context.Background(), cm) })
	}
	if w := warnings.take(); len(w) > 0 {
		t.Errorf("the API server warned:\n%s", strings.Join(w, "\n"))
	}
}
