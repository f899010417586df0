package kubectl

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func statusNodePeer(name string, connected, total int32, unreachable []string, conds ...metav1.Condition) wgmeshv1.MeshPeer {
	conds = append(conds, metav1.Condition{Type: wgmeshv1.ConditionReady, Status: metav1.ConditionTrue})
	return wgmeshv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: wgmeshv1.MeshPeerSpec{NodeName: name},
		Status: wgmeshv1.MeshPeerStatus{ConnectedPeers: connected, TotalPeers: total, Connected: fmt.Sprintf("%d/%d", connected, total),
			UnreachablePeers: unreachable, Conditions: conds}}
}

func TestReachabilityMatrix(t *testing.T) {
	notReady := metav1.Condition{Type: wgmeshv1.ConditionNodeNotReady, Status: metav1.ConditionTrue, Message: "Node d is not Ready (Ready=Unknown, NodeStatusUnknown)"}
	peers := []wgmeshv1.MeshPeer{
		statusNodePeer("c", 1, 2, []string{"a"}),
		statusNodePeer("a", 1, 2, []string{"c"}),
		statusNodePeer("b", 2, 2, nil),
		statusNodePeer("d", 0, 0, nil, notReady),
		{ObjectMeta: metav1.ObjectMeta{Name: "e"}, Spec: wgmeshv1.MeshPeerSpec{NodeName: "e"}}, // no status yet
		{ObjectMeta: metav1.ObjectMeta{Name: "laptop"}},                                        // external: not in the matrix
	}
	r := reachability(peers)
	if strings.Join(r.Nodes, ",") != "a,b,c,d,e" {
		t.Fatalf("nodes = %v", r.Nodes)
	}
	if len(r.Unreachable) != 2 || r.Unreachable[0] != (Pair{"a", "c"}) || r.Unreachable[1] != (Pair{"c", "a"}) {
		t.Fatalf("unreachable = %v", r.Unreachable)
	}
	var out bytes.Buffer
	if err := writeReachability(&out, r); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"2 unreachable node pairs", "a -> c", "c -> a", "Nodes not Ready", "Node d is not Ready"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// Row d (not Ready, its report may be stale): unknown.
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) == 6 && f[0] == "d" && strings.Join(f[1:], " ") != "? ? ? - ?" {
			t.Errorf("row d (not Ready) = %q", line)
		}
	}
	// An empty condition message still counts.
	peers[3].Status.Conditions[0].Message = ""
	if r := reachability(peers); r.cell("a", "d", nil) != "n/r" {
		t.Error("a NodeNotReady condition without a message is not shown")
	}
	// Row a: self, b ok, c NO, d not Ready, e ok.
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) == 6 && f[0] == "a" {
			if strings.Join(f[1:], " ") != "- ok NO n/r ok" {
				t.Errorf("row a = %q", line)
			}
		}
		if f := strings.Fields(line); len(f) == 6 && f[0] == "e" && strings.Join(f[1:], " ") != "? ? ? ? -" {
			t.Errorf("row e (no status) = %q", line)
		}
	}
}

func TestReachabilityLargeMesh(t *testing.T) {
	var peers []wgmeshv1.MeshPeer
	for i := 0; i < 40; i++ {
		peers = append(peers, statusNodePeer(fmt.Sprintf("n%02d", i), 39, 39, nil))
	}
	// n00 cannot reach 35 peers; its status names 32 of them.
	var names []string
	for i := 1; i <= 32; i++ {
		names = append(names, fmt.Sprintf("n%02d", i))
	}
	peers[0] = statusNodePeer("n00", 4, 39, names)
	var out bytes.Buffer
	if err := writeReachability(&out, reachability(peers)); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.Contains(s, "FROM") {
		t.Error("a 40-node mesh printed the matrix")
	}
	for _, want := range []string{"35 unreachable node pairs (one direction each) among 40 nodes", "n00 -> n32", "n00 -> 3 more"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// All healthy: one line says so.
	out.Reset()
	_ = writeReachability(&out, reachability(peers[1:]))
	if !strings.Contains(out.String(), "every node reaches every peer it expects (39 nodes") {
		t.Errorf("healthy mesh:\n%s", out.String())
	}
}
