package kubectl

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// reporting sets what a node's agent reports: connected/total and the
// unreachable names.
func reporting(mp wgmeshv1.MeshPeer, total int32, unreachable ...string) wgmeshv1.MeshPeer {
	mp.Status.TotalPeers = total
	mp.Status.ConnectedPeers = total - int32(len(unreachable))
	mp.Status.UnreachablePeers = unreachable
	return mp
}

// graphMesh: a, b, c reach each other except a -> c (one way) and c <-> d
// (both ways); nat is behind NAT and reachable; e has not reported; f is
// NotReady; x is excluded; laptop and vm are external.
func graphMesh() []wgmeshv1.MeshPeer {
	e := meshNodePeer("e", keyN1, "198.18.0.15:51820", "198.19.5.0/24")
	e.Status.Conditions = nil
	return []wgmeshv1.MeshPeer{
		reporting(meshNodePeer("a", keyN1, "198.18.0.11:51820", "198.19.1.0/24"), 5, "c"),
		reporting(meshNodePeer("b", keyN1, "198.18.0.12:51820", "198.19.2.0/24"), 5),
		reporting(meshNodePeer("c", keyN1, "198.18.0.13:51820", "198.19.3.0/24"), 5, "d"),
		reporting(meshNodePeer("d", keyN1, "198.18.0.14:51820", "198.19.4.0/24"), 5, "c"),
		reporting(meshNodePeer("nat", keyN1, "", "198.19.9.0/24"), 5),
		reporting(withKeepalive(meshNodePeer("nat2", keyN1, "198.18.1.11:51820", "198.19.10.0/24"), 5), 5),
		e,
		withCondition(reporting(meshNodePeer("f", keyN1, "198.18.0.16:51820", "198.19.6.0/24"), 5), wgmeshv1.ConditionNodeNotReady, "Node f is not Ready"),
		withCondition(meshNodePeer("x", keyN2, "198.18.0.17:51820", "198.19.7.0/24"), wgmeshv1.ConditionKeyConflict, `the key belongs to node MeshPeer "a"`),
		{ObjectMeta: metav1.ObjectMeta{Name: "laptop"}, Spec: wgmeshv1.MeshPeerSpec{PublicKey: keyN3, AllowedIPs: []wgmeshv1.CIDR{"198.18.200.1/32"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "vm"}, Spec: wgmeshv1.MeshPeerSpec{PublicKey: keyN4, Endpoint: "vm.example.org:51820", AllowedIPs: []wgmeshv1.CIDR{"198.18.201.0/24"}}},
	}
}

func withKeepalive(mp wgmeshv1.MeshPeer, k int32) wgmeshv1.MeshPeer {
	mp.Spec.PersistentKeepalive = &k
	return mp
}

func TestBuildGraphStates(t *testing.T) {
	peers := graphMesh()
	g := buildGraph(graphInput{Peers: peers, NodeUIDs: nodeUIDsOf(peers)})
	state := map[string]pairState{}
	for _, e := range g.Edges {
		state[e.A+"-"+e.B] = e.State
	}
	for pair, want := range map[string]pairState{
		"a-b": pairOK, "a-c": pairBad, "c-d": pairBad, "a-nat": pairOK, "b-c": pairOK,
		"a-e": pairPartial, // e has not reported; a reaches it
		"a-f": pairUnknown, // f is NotReady: nobody expects it, its own view is stale
	} {
		if state[pair] != want {
			t.Errorf("pair %s: state %d, want %d", pair, state[pair], want)
		}
	}
	if _, ok := state["a-x"]; ok {
		t.Errorf("excluded node x has edges")
	}
	// 8 drawable nodes (x excluded): 28 pairs.
	if len(g.Edges) != 28 || g.Counts[pairBad] != 2 {
		t.Errorf("%d edges, %d unreachable; want 28 and 2", len(g.Edges), g.Counts[pairBad])
	}
	if len(g.Externals) != 2 || len(g.Nodes) != 9 {
		t.Errorf("%d externals, %d nodes", len(g.Externals), len(g.Nodes))
	}
}

// The capped list: a node reporting more unreachable peers than it names
// does not vouch for the unnamed ones.
func TestBuildGraphPartialList(t *testing.T) {
	a := meshNodePeer("a", keyN1, "198.18.0.11:51820", "198.19.1.0/24")
	a.Status.TotalPeers, a.Status.ConnectedPeers, a.Status.UnreachablePeers = 40, 5, []string{"b"}
	peers := []wgmeshv1.MeshPeer{a, reporting(meshNodePeer("b", keyN1, "", "198.19.2.0/24"), 40), reporting(meshNodePeer("c", keyN1, "", "198.19.3.0/24"), 40)}
	g := buildGraph(graphInput{Peers: peers, NodeUIDs: nodeUIDsOf(peers)})
	for _, e := range g.Edges {
		if e.A == "a" && e.B == "c" && (e.AB != viewUnknown || e.State != pairPartial) {
			t.Errorf("a-c: a's view %d, state %d; want unknown, partial", e.AB, e.State)
		}
		if e.A == "a" && e.B == "b" && e.AB != viewBad {
			t.Errorf("a-b: a's view %d, want bad", e.AB)
		}
	}
}

func TestRenderDOTGolden(t *testing.T) {
	peers := graphMesh()
	in := graphInput{Peers: peers, NodeUIDs: nodeUIDsOf(peers),
		RTT:   map[string]map[string]float64{"a": {"b": 0.0008, "c": 0.5}, "b": {"a": 0.0012}, "d": {"c": 0.020}},
		Notes: []string{"RTT unavailable from 1 of 5 agents: e (pod wgmesh/agent-e port 9472): timeout"}}
	golden(t, "mesh.dot", renderDOT(in))
}

// More than largeMesh nodes: only the unreachable pairs and their nodes are
// drawn, with the counts in the label; --all-edges draws everything.
func TestRenderDOTLarge(t *testing.T) {
	var peers []wgmeshv1.MeshPeer
	const n = 1000
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("node-%04d", i)
		var bad []string
		if i == 7 {
			bad = []string{"node-0500"}
		}
		peers = append(peers, reporting(meshNodePeer(name, keyN1, fmt.Sprintf("198.18.%d.%d:51820", i/250, i%250+1), fmt.Sprintf("198.19.%d.%d/30", i/64, i%64*4)), n-1, bad...))
	}
	in := graphInput{Peers: peers, NodeUIDs: nodeUIDsOf(peers)}
	dot := renderDOT(in)
	if got := strings.Count(dot, " -- "); got != 1 {
		t.Errorf("%d edges drawn, want the one unreachable pair", got)
	}
	for _, want := range []string{`"node-0007" -- "node-0500" [color=red penwidth=2 dir=forward label="node-0007 cannot reach node-0500"]`,
		"499500 node pairs: 499499 reachable, 0 reachable by one side's report, 1 unreachable, 0 unknown",
		"more than 40 nodes: only unreachable pairs and nodes with problems are drawn (--all-edges draws all)"} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %q", want)
		}
	}
	if got := strings.Count(dot, "shape=box"); got != 2 {
		t.Errorf("%d nodes drawn, want the 2 of the unreachable pair", got)
	}
	in.Peers, in.AllEdges = peers[:largeMesh+1], true
	if got, want := strings.Count(renderDOT(in), " -- "), (largeMesh+1)*largeMesh/2; got != want {
		t.Errorf("--all-edges: %d edges, want %d", got, want)
	}
}

func TestDotQuote(t *testing.T) {
	if got := dotQuote("a \"b\" \\c\nd"); got != `"a \"b\" \\c\nd"` {
		t.Errorf("dotQuote = %s", got)
	}
}

func TestParseDropped(t *testing.T) {
	text := `# TYPE wgmesh_peer_metrics_dropped gauge
wgmesh_peer_metrics_dropped_total 9
wgmesh_peer_metrics_dropped 750
`
	if got := parseDropped(text); got != 750 {
		t.Errorf("parseDropped = %v, want 750", got)
	}
	if got := parseDropped("wgmesh_peers 3\n"); got != 0 {
		t.Errorf("parseDropped without the gauge = %v, want 0", got)
	}
}

func TestParseRTT(t *testing.T) {
	text := `# HELP wgmesh_peer_rtt_seconds Round trip of the last answered probe.
# TYPE wgmesh_peer_rtt_seconds gauge
wgmesh_peer_rtt_seconds{peer="wgm-n2"} 0.000812
wgmesh_peer_rtt_seconds{node="x",peer="wgm-n3"} 1.5e-03 1732579200000
wgmesh_peer_rtt_seconds{peer="we\"ird"} 0.1
wgmesh_peer_rtt_seconds_total{peer="wgm-n9"} 3
wgmesh_peer_reachable{peer="wgm-n2"} 1
wgmesh_peer_rtt_seconds{peer="bad"} NaNx
`
	got := parseRTT(text)
	want := map[string]float64{"wgm-n2": 0.000812, "wgm-n3": 0.0015, `we"ird`: 0.1}
	if len(got) != len(want) {
		t.Fatalf("parseRTT = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("parseRTT[%s] = %v, want %v", k, got[k], v)
		}
	}
}
