package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/noderuntime"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestReachability: CONNECTED means reachable now. An idle mesh shows every
// peer connected (the probes, not pod traffic, keep it so); a node whose
// WireGuard traffic is cut is named unreachable by the others, in metrics at
// once and in their MeshPeer status after the hold-down, and by `kubectl
// wgmesh status`; once its Node is not Ready it is left out of the counts;
// everything recovers. Status-only MeshPeer writes wake no agent.
func TestReachability(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	// Probes every second: hold-down 3 s. Per-peer metrics on, to see each
	// pair beside the counts every agent exports.
	c := startAgentCluster(ctx, t, cluster.Options{Nodes: 3, AgentArgs: []string{
		"--probe-interval=1s", "--probe-timeout=300ms", "--status-min-interval=1s", "--status-membership-delay=2s", "--per-peer-metrics"}})
	nodes := slices.Clone(c.Nodes)
	waitFullMesh(ctx, t, c, nodes)
	a, b, x := nodes[0], nodes[1], nodes[2]

	// Idle mesh: every node connected to both others, from probes alone.
	// The status counts a peer until probes have failed for the hold-down,
	// so 2/2 can show before the first probe ends; the metrics wait for it
	// (a probe is up to 3 echoes, the first of which may wait for the
	// handshake).
	waitStatus(ctx, t, c, map[string]string{a.Name: "2/2", b.Name: "2/2", x.Name: "2/2"}, nil)
	if err := wait.Poll(ctx, 20*time.Second, func() error {
		m := agentMetrics(ctx, t, a)
		if v, w := metricValue(m, "wgmesh_peers_connected"), metricValue(m, "wgmesh_peers_unreachable"); v != 2 || w != 0 {
			return fmt.Errorf("%s: wgmesh_peers_connected = %v, wgmesh_peers_unreachable = %v; want 2 and 0", a.Name, v, w)
		}
		if v := metricValue(m, "wgmesh_peer_probe_rtt_seconds_count"); v < 2 {
			return fmt.Errorf("%s: wgmesh_peer_probe_rtt_seconds_count = %v, want an answer from each peer", a.Name, v)
		}
		for _, peer := range []string{b.Name, x.Name} {
			if v := metricValue(m, fmt.Sprintf(`wgmesh_peer_reachable{peer=%q}`, peer)); v != 1 {
				return fmt.Errorf("%s: wgmesh_peer_reachable{peer=%s} = %v, want 1", a.Name, peer, v)
			}
			if v := metricValue(m, fmt.Sprintf(`wgmesh_peer_rtt_seconds{peer=%q}`, peer)); v <= 0 || v > 1 {
				return fmt.Errorf("%s: wgmesh_peer_rtt_seconds{peer=%s} = %v", a.Name, peer, v)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// Status-only writes (another agent's counts, a foreign condition) wake
	// no agent: with N nodes each would otherwise be N reconciles.
	const woke = `wgmesh_watch_events_total{effect="reconcile",kind="MeshPeer"}`
	before := agentMetrics(ctx, t, b)
	watchBefore, wokeBefore := metricValue(before, `wgmesh_reconciles_total{trigger="watch"}`), metricValue(before, woke)
	for i := 0; i < 10; i++ {
		cond := map[string]any{"type": "E2EStatusNoise", "status": "True", "reason": "Noise", "message": strconv.Itoa(i),
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": wgv1.GroupVersion.String(), "kind": "MeshPeer",
			"metadata": map[string]any{"name": a.Name}, "status": map[string]any{"conditions": []any{cond}}}}
		if err := c.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("e2e-noise"), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
	}
	// The barrier: a MeshPeer created after the noise wakes b, and b's watch
	// delivers events in order, so once b has counted it, it has judged all
	// ten status writes too.
	barrier := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-e2e-barrier"}, Spec: wgv1.MeshPeerSpec{
		PublicKey: wgv1.PublicKey(newKey(t).String()), AllowedIPs: []wgv1.CIDR{"198.18.252.1/32"}}}
	if err := c.Client.Create(ctx, barrier); err != nil {
		t.Fatal(err)
	}
	var after string
	if err := wait.Poll(ctx, agentMeshTimeout, func() error {
		after = agentMetrics(ctx, t, b)
		if v := metricValue(after, woke); v < wokeBefore+1 {
			return fmt.Errorf("%s has not seen MeshPeer %s (%s = %v)", b.Name, barrier.Name, woke, v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(after, woke) - wokeBefore; got != 1 {
		t.Errorf("10 status-only MeshPeer writes and one new MeshPeer woke %s %v times, want 1 (the new MeshPeer)", b.Name, got)
	}
	if got := metricValue(after, `wgmesh_reconciles_total{trigger="watch"}`) - watchBefore; got > 1 {
		t.Errorf("10 status-only MeshPeer writes caused %v watch reconciles on %s, want at most 1 (the new MeshPeer's)", got, b.Name)
	}
	if err := c.Client.Delete(ctx, barrier); err != nil {
		t.Fatal(err)
	}

	// Cut x's WireGuard traffic (both directions, on x only).
	block := "add table inet wgm-e2e-cut\n" +
		"add chain inet wgm-e2e-cut in { type filter hook input priority -300; }\n" +
		"add chain inet wgm-e2e-cut out { type filter hook output priority -300; }\n" +
		"add rule inet wgm-e2e-cut in udp dport 51820 drop\n" +
		"add rule inet wgm-e2e-cut out udp dport 51820 drop\n"
	nft := x.Command(ctx, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(block)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft on %s: %v\n%s", x.Name, err, out)
	}
	unblock := func() { _, _ = x.Exec(context.WithoutCancel(ctx), "nft", "delete", "table", "inet", "wgm-e2e-cut") }
	defer unblock()
	cut := time.Now()
	if err := wait.Poll(ctx, 20*time.Second, func() error {
		m := agentMetrics(ctx, t, a)
		if v := metricValue(m, fmt.Sprintf(`wgmesh_peer_reachable{peer=%q}`, x.Name)); v != 0 {
			return fmt.Errorf("%s: wgmesh_peer_reachable{peer=%s} = %v", a.Name, x.Name, v)
		}
		if v := metricValue(m, "wgmesh_peers_unreachable"); v != 1 {
			return fmt.Errorf("%s: wgmesh_peers_unreachable = %v, want 1", a.Name, v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("metrics: %s unreachable after %s", x.Name, time.Since(cut).Round(100*time.Millisecond))
	waitStatus(ctx, t, c, map[string]string{a.Name: "1/2", b.Name: "1/2", x.Name: "0/2"},
		map[string][]string{a.Name: {x.Name}, b.Name: {x.Name}, x.Name: {a.Name, b.Name}})
	held := time.Since(cut)
	if held < 3*time.Second {
		t.Errorf("status named %s unreachable %s after the cut, before the 3 s hold-down", x.Name, held)
	}
	t.Logf("status: %s unreachable after %s", x.Name, held.Round(100*time.Millisecond))

	// kubectl wgmesh status names the pairs.
	plugin := filepath.Join(c.Options().BinDir, "kubectl-wgmesh")
	out, err := exec.CommandContext(ctx, plugin, "status", "--kubeconfig", c.Kubeconfig).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl wgmesh status: %v\n%s", err, out)
	}
	for _, want := range []string{a.Name + " -> " + x.Name, b.Name + " -> " + x.Name, x.Name + " -> " + a.Name, "unreachable node pairs"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kubectl wgmesh status lacks %q:\n%s", want, out)
		}
	}

	// The node lifecycle controller's verdict: x not Ready. The others stop
	// counting it (one operator write, not one per node).
	setNodeReady(ctx, t, c, x.Name, corev1.ConditionUnknown, "NodeStatusUnknown")
	waitStatus(ctx, t, c, map[string]string{a.Name: "1/1", b.Name: "1/1"}, map[string][]string{a.Name: nil, b.Name: nil})
	out, _ = exec.CommandContext(ctx, plugin, "status", "--kubeconfig", c.Kubeconfig).CombinedOutput()
	if !strings.Contains(string(out), "Nodes not Ready") || !strings.Contains(string(out), x.Name) {
		t.Errorf("kubectl wgmesh status does not name the node not Ready:\n%s", out)
	}

	// Recovery.
	unblock()
	setNodeReady(ctx, t, c, x.Name, corev1.ConditionTrue, "KubeletReady")
	waitStatus(ctx, t, c, map[string]string{a.Name: "2/2", b.Name: "2/2", x.Name: "2/2"}, map[string][]string{a.Name: nil, b.Name: nil, x.Name: nil})
}

// waitStatus waits until each named MeshPeer shows the CONNECTED value and
// (when given) exactly these unreachable peers.
func waitStatus(ctx context.Context, t *testing.T, c *cluster.Cluster, connected map[string]string, unreachable map[string][]string) {
	t.Helper()
	err := wait.Poll(ctx, 45*time.Second, func() error {
		for name, want := range connected {
			mp := &wgv1.MeshPeer{}
			if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, mp); err != nil {
				return err
			}
			if mp.Status.Connected != want {
				return fmt.Errorf("MeshPeer %s connected %q, want %q (unreachable %v)", name, mp.Status.Connected, want, mp.Status.UnreachablePeers)
			}
			if u, ok := unreachable[name]; ok && !slices.Equal(mp.Status.UnreachablePeers, u) {
				return fmt.Errorf("MeshPeer %s unreachablePeers %v, want %v", name, mp.Status.UnreachablePeers, u)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func setNodeReady(ctx context.Context, t *testing.T, c *cluster.Cluster, name string, status corev1.ConditionStatus, reason string) {
	t.Helper()
	n := &corev1.Node{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			n.Status.Conditions[i].Status, n.Status.Conditions[i].Reason = status, reason
			n.Status.Conditions[i].LastHeartbeatTime, n.Status.Conditions[i].LastTransitionTime = now, now
		}
	}
	if err := c.Client.Status().Update(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// The agent's ports on the node's loopback: metrics and health (/readyz).
const (
	agentMetricsPort = 9472
	agentHealthPort  = 9473
)

// agentGet is an HTTP GET of the node agent's loopback port, from inside
// the node's network namespace: the status code and the body.
func agentGet(ctx context.Context, n *cluster.Node, port int, path string) (int, string, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: noderuntime.NSDialer(n.NetNS), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s on node %s: %w", req.URL, n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// agentMetrics is the node agent's /metrics text.
func agentMetrics(ctx context.Context, t *testing.T, n *cluster.Node) string {
	t.Helper()
	_, out, err := agentGet(ctx, n, agentMetricsPort, "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", n.Name, err)
	}
	return out
}

// metricValue is the value of the series (name with labels, as exposed), or
// -1 when absent.
func metricValue(metrics, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(metrics)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}
