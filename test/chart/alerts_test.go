package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// promtoolRun runs promtool in dir and returns its output, failing the
// test when it exits non-zero.
func promtoolRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(promtoolDir(t), "promtool"), args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// unitTests is the part of a promtool unit test file that tells which alerts
// are expected to fire and which to stay quiet.
type unitTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestAlertRules: the rules as the chart renders them into the
// PrometheusRule pass `promtool check rules` (syntax, PromQL, templates,
// lint) and the unit tests in testdata/alerts_test.yaml, which show every
// alert firing on the series it is about and staying quiet on healthy ones.
func TestAlertRules(t *testing.T) {
	dir := t.TempDir()
	groups := ruleGroups(t, find(t, render(t, "wgmesh", "kube-system", monitoringOn), "PrometheusRule", "wgmesh"))
	rules, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	promtoolRun(t, dir, "check", "rules", "--lint=all", "--lint-fatal", "rules.yaml")
	promtoolRun(t, dir, "test", "rules", "alerts_test.yaml")

	var ut unitTests
	if err := yaml.Unmarshal(tests, &ut); err != nil {
		t.Fatalf("testdata/alerts_test.yaml: %v", err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range ut.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: testdata/alerts_test.yaml has a case where it fires: %v, where it stays quiet: %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: labels %v, annotations %v; want a severity, a summary and a description", r.Alert, r.Labels, r.Annotations)
			}
		}
	}
	for _, want := range []string{"WgmeshPeersUnreachable", "WgmeshHandshakeStale", "WgmeshReconcileErrors", "WgmeshCIDRPoolNearlyExhausted", "WgmeshServiceSyncErrors", "WgmeshNetworkPolicyNotReady", "WgmeshNetworkPolicySyncErrors"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("the chart has no alert %s (it has %v)", want, alerts)
		}
	}
}
