package meshsim

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/proc"
)

func agentAt(reconciles, watch, meshPeerWoke, meshPeerIgnored, status float64, cpu time.Duration) AgentSnapshot {
	return AgentSnapshot{
		Reconciles:   reconciles,
		ByTrigger:    map[string]float64{"watch": watch, "resync": reconciles - watch},
		WatchEvents:  map[string]float64{"MeshPeer/reconcile": meshPeerWoke, "MeshPeer/ignored": meshPeerIgnored, "Node/ignored": 100},
		StatusWrites: status,
		Writes:       status + 1,
		Agent:        proc.Stat{CPU: cpu},
		WireGuard:    proc.Stat{CPU: 2 * cpu},
	}
}

func TestSince(t *testing.T) {
	t0 := time.Now()
	a := Snapshot{At: t0, APIAll: 100, OperatorWrites: 10, Operator: proc.Stat{CPU: time.Second},
		API:    map[string]float64{"PATCH nodes": 5, "GET nodes": 50, "POST meshpeers": 1},
		Agents: []AgentSnapshot{agentAt(10, 2, 1, 5, 1, time.Second), agentAt(20, 4, 1, 5, 1, time.Second)},
		Own:    map[string]int64{"POST nodes": 3}}
	b := Snapshot{At: t0.Add(12 * time.Second), APIAll: 130, OperatorWrites: 14, Operator: proc.Stat{CPU: 3 * time.Second},
		API:    map[string]float64{"PATCH nodes": 8, "GET nodes": 70, "POST meshpeers": 1, "PATCH meshpeers/status": 2},
		Agents: []AgentSnapshot{agentAt(13, 3, 2, 17, 2, 2*time.Second), agentAt(22, 4, 1, 17, 1, time.Second)},
		Own:    map[string]int64{"POST nodes": 4, "PATCH nodes": 2}}
	d := b.Since(a)
	if d.D != 12*time.Second || d.APIAll != 30 || d.OperatorWrites != 4 || d.OperatorCPU != 2*time.Second {
		t.Errorf("totals: %+v", d)
	}
	if len(d.APIWrites) != 2 || d.APIWrites["PATCH nodes"] != 3 || d.APIWrites["PATCH meshpeers/status"] != 2 || d.APIWriteTotal != 5 {
		t.Errorf("API writes %v (total %v), want PATCH nodes 3 and PATCH meshpeers/status 2: reads and unchanged counts left out", d.APIWrites, d.APIWriteTotal)
	}
	for _, c := range []struct {
		name      string
		got, want []float64
	}{
		{"reconciles", d.Reconciles, []float64{3, 2}},
		{"watch reconciles", d.WatchReconciles, []float64{1, 0}},
		{"MeshPeer events", d.MeshPeerEvents, []float64{13, 12}},
		{"MeshPeer wakes", d.MeshPeerWakes, []float64{1, 0}},
		{"status writes", d.StatusWrites, []float64{1, 0}},
		{"agent writes", d.AgentWrites, []float64{1, 0}},
	} {
		if len(c.got) != len(c.want) || c.got[0] != c.want[0] || c.got[1] != c.want[1] {
			t.Errorf("%s per agent: %v, want %v", c.name, c.got, c.want)
		}
	}
	if d.ByTrigger["watch"] != 1 || d.ByTrigger["resync"] != 4 {
		t.Errorf("by trigger, all agents: %v", d.ByTrigger)
	}
	if d.AgentCPU[0] != time.Second || d.WireGuardCPU[0] != 2*time.Second || d.AgentCPU[1] != 0 {
		t.Errorf("CPU: agents %v, WireGuard %v", d.AgentCPU, d.WireGuardCPU)
	}
	if d.OwnTotal != 3 || d.Own["POST nodes"] != 1 || d.Own["PATCH nodes"] != 2 {
		t.Errorf("own writes %v (total %d)", d.Own, d.OwnTotal)
	}
	if d.StatusChanges[0] != "-" {
		t.Errorf("status change %q, want none", d.StatusChanges[0])
	}
}

func TestSinceWithAnAgentMore(t *testing.T) {
	a := Snapshot{Agents: []AgentSnapshot{agentAt(1, 0, 0, 0, 0, 0)}}
	b := Snapshot{Agents: []AgentSnapshot{agentAt(2, 0, 0, 0, 0, 0), agentAt(9, 0, 0, 0, 0, 0)}}
	if d := b.Since(a); len(d.Reconciles) != 1 || d.Reconciles[0] != 1 {
		t.Errorf("reconciles %v, want the one agent in both", d.Reconciles)
	}
}

func TestStatusChange(t *testing.T) {
	ready := metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Message: "all good"}
	a := wgv1.MeshPeerStatus{Connected: "2/3", UnreachablePeers: []string{"x"}, Conditions: []metav1.Condition{ready}}
	if got := statusChange(a, a); got != "-" {
		t.Errorf("no change: %q", got)
	}
	b := a
	b.Connected, b.UnreachablePeers = "3/3", nil
	b.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Message: strings.Repeat("m", 100)}}
	got := statusChange(a, b)
	for _, want := range []string{"connected 2/3->3/3", "unreachablePeers changed (1->0 names)", "Ready=False (" + strings.Repeat("m", 80) + "...)"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
}

func TestRates(t *testing.T) {
	got := Rates(map[string]float64{"POST events": 4, "PATCH nodes": 8, "GET nodes": 4}, 2)
	if want := "PATCH nodes 4.0, GET nodes 2.0, POST events 2.0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := Rates(nil, 1); got != "" {
		t.Errorf("none: %q", got)
	}
}
