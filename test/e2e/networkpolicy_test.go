package e2e

// NetworkPolicy end to end (issue 21): the agents' network policy
// (--network-policy) on the local cluster, modelled on the upstream
// "[sig-network] Netpol" specs that matter most: default deny ingress,
// an allow rule by podSelector, through a Service, deletion, and new pods
// judged from their first packet.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/wait"
)

// policyTimeout bounds the wait for a policy change to show in traffic:
// the agents program one within a second; a denied probe takes its 3 s
// dial timeout.
const policyTimeout = 30 * time.Second

// TestNetworkPolicy: with --network-policy on every agent, a
// default-deny-ingress policy in the server's namespace stops a client pod
// on another node and one on the server's own node (bridged, through
// br_netfilter), by pod address and by ClusterIP; an allow rule by
// podSelector lets one client through, also through the Service; the
// server's own node still reaches it; deleting the policies restores
// traffic; a new pod under a deny-all policy is dropped both ways from its
// first connection while an unselected new pod's first connections pass
// (the CNI hook). The agents report ready, the isolated pod, the drops and
// the CNI requests.
func TestNetworkPolicy(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := startCluster(ctx, t, cluster.Options{Nodes: 2, AgentArgs: []string{"--network-policy"}})
	n1, n2 := c.Nodes[0], c.Nodes[1]

	const srv, cli = "np-server", "np-client"
	for _, ns := range []string{srv, cli} {
		if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	type podSpec struct {
		ns, name string
		node     *cluster.Node
		labels   map[string]string
	}
	specs := []podSpec{
		{srv, "web", n1, map[string]string{"app": "web"}},
		{cli, "local", n1, map[string]string{"app": "client"}},  // the server's node, another namespace
		{cli, "remote", n2, map[string]string{"app": "client"}}, // another node and namespace
		{srv, "friend", n2, map[string]string{"role": "friend"}},
	}
	for _, p := range specs {
		if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Namespace: p.ns, Name: p.name, Node: p.node, Labels: p.labels, Ports: []int32{podPort}}); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]*corev1.Pod{}
	for _, p := range specs {
		pod, err := c.WaitPodReady(ctx, p.ns, p.name, readyTimeout)
		if err != nil {
			t.Fatal(err)
		}
		pods[p.name] = pod
	}
	if !meshConverged(ctx, t, c, []*corev1.Pod{pods["web"], pods["remote"]}) {
		t.FailNow()
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: srv, Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(podPort)}}}}
	if err := c.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	webIP, clusterIP := pods["web"].Status.PodIP, svc.Spec.ClusterIP
	for _, n := range c.Nodes {
		if err := wait.Poll(ctx, readyTimeout, func() error {
			if v := metricValue(agentMetrics(ctx, t, n), "wgmesh_policy_ready"); v != 1 {
				return fmt.Errorf("wgmesh_policy_ready = %v", v)
			}
			if code, body, err := agentGet(ctx, n, agentHealthPort, "/readyz"); err != nil || code != http.StatusOK {
				return fmt.Errorf("/readyz: %d %s %v", code, body, err)
			}
			return nil
		}); err != nil {
			t.Fatalf("agent of %s: %v", n.Name, err)
		}
	}

	// targets are the server by pod address and by ClusterIP.
	type target struct {
		what, host string
		port       int
	}
	targets := []target{{"pod", webIP, podPort}, {"ClusterIP", clusterIP, 80}}
	dial := func(from string, to target) error {
		_, err := c.PodDial(ctx, pods[from], "tcp", to.host, to.port, "hostname")
		return err
	}
	// expect waits until from reaches (or no longer reaches) every target,
	// and returns when the first attempt that did began (a denied attempt
	// takes its 3 s dial timeout). A denied connection must be dropped (a
	// dial timeout), never refused or failing otherwise.
	expect := func(t *testing.T, from string, reach bool) time.Time {
		t.Helper()
		var first time.Time
		for _, to := range targets {
			var began time.Time
			err := wait.Poll(ctx, policyTimeout, func() error {
				began = time.Now()
				err := dial(from, to)
				switch {
				case reach && err != nil:
					return err
				case !reach && err == nil:
					return errors.New("answered")
				case !reach && !strings.Contains(err.Error(), "timeout"):
					return fmt.Errorf("failed, but not dropped: %w", err)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s -> web by %s (%s:%d), want reached=%v: %v", from, to.what, to.host, to.port, reach, err)
			}
			if first.IsZero() {
				first = began
			}
		}
		return first
	}
	nodeReaches := func(t *testing.T) {
		t.Helper()
		if err := wait.Poll(ctx, retryTimeout, func() error {
			_, err := n1.Dial(ctx, "tcp", fmt.Sprintf("%s:%d", webIP, podPort), "hostname")
			return err
		}); err != nil {
			t.Errorf("the server's own node does not reach it: %v", err)
		}
	}

	t.Run("no policy", func(t *testing.T) {
		for _, from := range []string{"local", "remote", "friend"} {
			expect(t, from, true)
		}
	})

	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: srv, Name: "default-deny-ingress"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	t.Run("default deny ingress", func(t *testing.T) {
		created := time.Now()
		if err := c.Client.Create(ctx, deny); err != nil {
			t.Fatal(err)
		}
		denied := expect(t, "remote", false)
		t.Logf("another node's pod denied by a connection begun %s after the policy's creation", denied.Sub(created).Round(time.Millisecond))
		expect(t, "local", false)
		expect(t, "friend", false)
		nodeReaches(t)
		out := agentMetrics(ctx, t, n1)
		if v := metricValue(out, `wgmesh_policy_isolated_pods{direction="ingress"}`); v != 1 {
			t.Errorf("node %s: wgmesh_policy_isolated_pods{direction=\"ingress\"} = %v, want 1 (web)", n1.Name, v)
		}
		if v := metricValue(out, "wgmesh_policy_policies"); v != 1 {
			t.Errorf("node %s: wgmesh_policy_policies = %v, want 1", n1.Name, v)
		}
		// The counters are read every sync period (10 s).
		if err := wait.Poll(ctx, policyTimeout, func() error {
			if v := metricValue(agentMetrics(ctx, t, n1), `wgmesh_policy_denied_packets_total{direction="ingress"}`); v <= 0 {
				return fmt.Errorf("wgmesh_policy_denied_packets_total{direction=\"ingress\"} = %v", v)
			}
			return nil
		}); err != nil {
			t.Errorf("node %s: %v", n1.Name, err)
		}
	})

	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(podPort)
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: srv, Name: "allow-friend"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "friend"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}}}}
	t.Run("allow by podSelector", func(t *testing.T) {
		created := time.Now()
		if err := c.Client.Create(ctx, allow); err != nil {
			t.Fatal(err)
		}
		allowed := expect(t, "friend", true)
		t.Logf("the friend reaches web by a connection begun %s after the allow rule's creation", allowed.Sub(created).Round(time.Millisecond))
		// The friend's answer shows the rule is programmed on web's node:
		// the others are judged by the same table.
		for _, from := range []string{"remote", "local"} {
			for _, to := range targets {
				if err := dial(from, to); err == nil || !strings.Contains(err.Error(), "timeout") {
					t.Errorf("%s -> web by %s: %v, want dropped", from, to.what, err)
				}
			}
		}
		nodeReaches(t)
	})

	t.Run("policies deleted", func(t *testing.T) {
		deleted := time.Now()
		for _, np := range []*networkingv1.NetworkPolicy{deny, allow} {
			if err := c.Client.Delete(ctx, np); err != nil {
				t.Fatal(err)
			}
		}
		reached := expect(t, "remote", true)
		t.Logf("another node's pod reaches web again by a connection begun %s after the deletion", reached.Sub(deleted).Round(time.Millisecond))
		expect(t, "local", true)
		expect(t, "friend", true)
	})

	// No window: a new pod is judged before its CNI ADD returns (the
	// agent's CNI hook), and its addresses pass nothing through the node
	// until then. Each new pod's first connection, begun as soon as its
	// status has an address, is judged by its own policies: one attempt
	// each, no retries.
	t.Run("new pods from their first packet", func(t *testing.T) {
		denyNew := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: cli, Name: "deny-new"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "new-denied"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
		if err := c.Client.Create(ctx, denyNew); err != nil {
			t.Fatal(err)
		}
		// The policy must be in every agent's index before the pods exist
		// (a policy's own arrival is eventually consistent; the pod's is
		// what this checks).
		for _, n := range c.Nodes {
			if err := wait.Poll(ctx, policyTimeout, func() error {
				if v := metricValue(agentMetrics(ctx, t, n), "wgmesh_policy_policies"); v != 1 {
					return fmt.Errorf("wgmesh_policy_policies = %v", v)
				}
				return nil
			}); err != nil {
				t.Fatalf("agent of %s: %v", n.Name, err)
			}
		}
		news := []podSpec{
			{cli, "new-denied", n1, map[string]string{"app": "new-denied"}},   // web's node: bridged
			{cli, "new-denied-2", n2, map[string]string{"app": "new-denied"}}, // across the mesh
			{cli, "new-allowed", n2, map[string]string{"app": "new-allowed"}},
			{cli, "new-allowed-2", n1, map[string]string{"app": "new-allowed"}},
		}
		for _, p := range news {
			if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Namespace: p.ns, Name: p.name, Node: p.node, Labels: p.labels, Ports: []int32{podPort}}); err != nil {
				t.Fatal(err)
			}
		}
		once := func(from *corev1.Pod, host string) error {
			_, err := c.PodDial(ctx, from, "tcp", host, podPort, "hostname")
			return err
		}
		for _, p := range news {
			pod, err := c.WaitPodReady(ctx, p.ns, p.name, readyTimeout)
			if err != nil {
				t.Fatal(err)
			}
			pods[p.name] = pod
			denied := p.labels["app"] == "new-denied"
			// Its first connection out, then the first one in.
			out, in := once(pod, webIP), once(pods["web"], pod.Status.PodIP)
			for _, conn := range []struct {
				what string
				err  error
			}{{p.name + " -> web", out}, {"web -> " + p.name, in}} {
				switch {
				case denied && conn.err == nil:
					t.Errorf("%s: the first connection was answered; want it dropped (deny-new selects %s)", conn.what, p.name)
				case denied && !strings.Contains(conn.err.Error(), "timeout"):
					t.Errorf("%s: %v, want dropped (a dial timeout)", conn.what, conn.err)
				case !denied && conn.err != nil:
					t.Errorf("%s: the first connection failed: %v; want it through at once (no policy selects %s)", conn.what, conn.err, p.name)
				}
			}
			// Its node still reaches it (kubelet probes).
			if _, err := p.node.Dial(ctx, "tcp", fmt.Sprintf("%s:%d", pod.Status.PodIP, podPort), "hostname"); err != nil {
				t.Errorf("%s's node does not reach it: %v", p.name, err)
			}
		}
		for _, n := range c.Nodes {
			out := agentMetrics(ctx, t, n)
			if v := metricValue(out, `wgmesh_policy_cni_requests_total{result="programmed"}`); v < 2 {
				t.Errorf("node %s: wgmesh_policy_cni_requests_total{result=\"programmed\"} = %v, want at least its 2 new pods", n.Name, v)
			}
			for _, r := range []string{"refused", "failed"} {
				if v := metricValue(out, fmt.Sprintf(`wgmesh_policy_cni_requests_total{result=%q}`, r)); v != 0 {
					t.Errorf("node %s: wgmesh_policy_cni_requests_total{result=%q} = %v, want 0", n.Name, r, v)
				}
			}
		}
		if err := c.Client.Delete(ctx, denyNew); err != nil {
			t.Fatal(err)
		}
	})
}
