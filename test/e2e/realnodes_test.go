package e2e

// Installed the way users install it (issue 9): real kubelets and containerd in every node
// namespace (the NAT node's too), wgmesh from `helm install` of charts/wgmesh with the image
// from `make image`, pods scheduled by the real scheduler. Then the Helm lifecycle: an
// upgrade that rolls the agents loses no packet of a 10 ms ping across nodes, and an
// uninstall leaves nothing of wgmesh on the nodes.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

func needRealNodes(t *testing.T) {
	t.Helper()
	needCluster(t)
	for _, v := range []string{"WGMESH_NODE_PARTS", "WGMESH_IMAGE", "WGMESH_HELM"} {
		if os.Getenv(v) == "" {
			skip.Unless(t, "real nodes: "+v+" is unset (make test sets it: hack/node-parts.sh, make image, hack/helm.sh)")
		}
	}
}

func TestRealNodes(t *testing.T) {
	needRealNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	began := time.Now()
	// graph --rtt reads each pair's round trip, a per-peer series the agents
	// export only when asked (agent.perPeerMetrics).
	c := startCluster(ctx, t, cluster.Options{Nodes: 3, NATNodes: 1, RealNodes: true, HelmValues: []string{"agent.perPeerMetrics=true"}})
	t.Logf("3 real nodes (1 behind NAT) with wgmesh installed by helm: %s", time.Since(began).Round(time.Second))
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("kubelet log of %s: %s", n.Name, n.KubeletLog())
			}
		}
	})

	setNATKeepalive(ctx, t, c)

	t.Run("chart identities", func(t *testing.T) {
		pods := &corev1.PodList{}
		if err := c.Client.List(ctx, pods, client.InNamespace(cluster.HelmNamespace), client.MatchingLabels{"app.kubernetes.io/name": "wgmesh"}); err != nil {
			t.Fatal(err)
		}
		agents := 0
		for _, p := range pods.Items {
			if p.Labels["app.kubernetes.io/component"] == "agent" {
				agents++
			}
			// Pods that talk to the API server do so as the chart's ServiceAccounts (its
			// RBAC is all they have: no identity here is in system:masters but the
			// test's admin); the others get no token at all.
			noToken := p.Spec.AutomountServiceAccountToken != nil && !*p.Spec.AutomountServiceAccountToken
			if !noToken && (p.Spec.ServiceAccountName == "" || p.Spec.ServiceAccountName == "default") {
				t.Errorf("pod %s runs with a token of ServiceAccount %q, want the chart's own", p.Name, p.Spec.ServiceAccountName)
			}
		}
		if agents != len(c.Nodes) {
			t.Errorf("%d agent pods, want one per node (%d)", agents, len(c.Nodes))
		}
	})

	t.Run("meshpeers", func(t *testing.T) {
		wait.For(t, 2*time.Minute, "a MeshPeer per node, each with every other peer connected", func() error {
			list := &wgv1.MeshPeerList{}
			if err := c.Client.List(ctx, list); err != nil {
				return err
			}
			if len(list.Items) != len(c.Nodes) {
				return fmt.Errorf("%d MeshPeers, want %d", len(list.Items), len(c.Nodes))
			}
			for _, mp := range list.Items {
				if mp.Spec.PublicKey == "" || len(mp.Spec.AllowedIPs) == 0 {
					return fmt.Errorf("MeshPeer %s: spec incomplete: %+v", mp.Name, mp.Spec)
				}
			}
			return nil
		})
		out, err := exec.CommandContext(ctx, kubectlPath(t), "--kubeconfig", c.Kubeconfig, "get", "meshpeers", "-o", "wide").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl get meshpeers: %v: %s", err, out)
		}
		t.Logf("kubectl get meshpeers:\n%s", out)
	})

	// CONNECTED from the probes on an idle mesh; kubectl wgmesh status and
	// graph --rtt through the API server's pod proxy to the agents' metrics
	// (the NAT node's agent is out of the API server's reach: noted).
	t.Run("reachability and graph", func(t *testing.T) {
		want := fmt.Sprintf("%d/%d", len(c.Nodes)-1, len(c.Nodes)-1)
		wait.For(t, time.Minute, "every MeshPeer connected "+want, func() error {
			list := &wgv1.MeshPeerList{}
			if err := c.Client.List(ctx, list); err != nil {
				return err
			}
			for _, mp := range list.Items {
				if mp.Status.Connected != want {
					return fmt.Errorf("MeshPeer %s connected %q", mp.Name, mp.Status.Connected)
				}
			}
			return nil
		})
		plugin := filepath.Join(c.Options().BinDir, "kubectl-wgmesh")
		out, err := exec.CommandContext(ctx, plugin, "status", "--kubeconfig", c.Kubeconfig).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "every node reaches every peer it expects") {
			t.Fatalf("kubectl wgmesh status: %v\n%s", err, out)
		}
		a, b := c.Nodes[0].Name, c.Nodes[1].Name // neither behind the NAT
		if a > b {
			a, b = b, a
		}
		edge := regexp.MustCompile(`"` + regexp.QuoteMeta(a) + `" -- "` + regexp.QuoteMeta(b) + `" \[[^]]*label="[0-9.]+ ms"`)
		var dot []byte
		wait.For(t, time.Minute, "graph --rtt labels the "+a+" -- "+b+" edge with a round trip", func() error {
			dot, err = exec.CommandContext(ctx, plugin, "graph", "--rtt", "--kubeconfig", c.Kubeconfig).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, dot)
			}
			if !edge.Match(dot) {
				return fmt.Errorf("no RTT on the edge:\n%s", dot)
			}
			return nil
		})
		t.Logf("kubectl wgmesh graph --rtt:\n%s", dot)
	})

	// One agnhost pod per node, placed by the scheduler.
	var pods []*corev1.Pod
	for i, n := range c.Nodes {
		name := fmt.Sprintf("real-%d", i)
		if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: name, Node: n, Labels: map[string]string{"app": "real"}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.Nodes {
		p, err := c.WaitPodReady(ctx, "default", fmt.Sprintf("real-%d", i), 3*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if p.Spec.NodeName != c.Nodes[i].Name {
			t.Fatalf("pod %s scheduled on %s, want %s", p.Name, p.Spec.NodeName, c.Nodes[i].Name)
		}
		pods = append(pods, p)
	}

	t.Run("pod matrix encrypted", func(t *testing.T) {
		stop := captureUnderlays(ctx, t, c, "net "+cluster.PodCIDR)
		for _, from := range pods {
			for _, to := range pods {
				for _, proto := range []string{"http", "udp"} {
					var got string
					err := wait.Poll(ctx, 30*time.Second, func() error {
						var err error
						got, err = c.PodDial(ctx, from, proto, to.Status.PodIP, cluster.DefaultWorkloadPort, "hostname")
						return err
					})
					if err != nil || got != to.Name {
						t.Errorf("%s %s (%s) -> %s (%s): got %q, %v", proto, from.Name, from.Spec.NodeName, to.Name, to.Spec.NodeName, got, err)
					}
				}
			}
		}
		under, nat := stop()
		if len(under)+len(nat) > 0 {
			t.Errorf("pod addresses seen in the clear: %d packets on the underlay, %d behind the NAT; first: %v", len(under), len(nat), append(under, nat...)[0])
		}
	})

	t.Run("service and DNS", func(t *testing.T) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "real"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "real"}, Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(cluster.DefaultWorkloadPort), Protocol: corev1.ProtocolTCP}}},
		}
		if err := c.Client.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		for _, from := range pods {
			// Create filled in the ClusterIP the API server allocated.
			for _, host := range []string{svc.Spec.ClusterIP, "real.default.svc.cluster.local"} {
				err := wait.Poll(ctx, 30*time.Second, func() error {
					_, err := c.PodDial(ctx, from, "http", host, 80, "hostname")
					return err
				})
				if err != nil {
					t.Errorf("%s (%s) -> %s:80: %v", from.Name, from.Spec.NodeName, host, err)
				}
			}
		}
	})

	t.Logf("memory:\n%s", c.Memory())

	t.Run("upgrade without loss", func(t *testing.T) {
		before := agentPodUIDs(ctx, t, c)
		// From the pod on the first node to the pod behind the NAT, every 10 ms,
		// two seconds of replies before the upgrade and two after it.
		began := time.Now()
		ping := startPodPing(ctx, t, c, pods[0], pods[len(pods)-1].Status.PodIP)
		if err := ping.awaitReplies(2*pingBarrier, began); err != nil {
			t.Errorf("before the upgrade: %v", err)
		}
		if err := c.HelmUpgrade(ctx, "agent.serviceSyncPeriod=45s"); err != nil {
			ping.stop()
			t.Fatal(err)
		}
		if err := ping.awaitReplies(2*pingBarrier, time.Now()); err != nil {
			t.Errorf("after the upgrade: %v", err)
		}
		sent, received, gap := ping.stop()
		after := agentPodUIDs(ctx, t, c)
		for node, uid := range before {
			if after[node] == uid {
				t.Errorf("agent pod on %s was not replaced by the upgrade", node)
			}
		}
		t.Logf("ping every 10 ms across the upgrade: %d sent, %d received, %d lost, longest time without a reply %s", sent, received, sent-received, gap.Round(time.Millisecond))
		if sent < 100 || received != sent {
			t.Errorf("ping across the upgrade: %d sent, %d received: want no loss", sent, received)
		}
	})

	t.Run("uninstall leaves nothing", func(t *testing.T) {
		for _, p := range pods {
			c.DeletePod(ctx, p.Namespace, p.Name, time.Minute)
		}
		if err := c.HelmUninstall(ctx); err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes {
			var left []string
			if out, _ := n.Exec(ctx, "ip", "link", "show", "wgmesh0"); !strings.Contains(string(out), "does not exist") {
				left = append(left, "link wgmesh0")
			}
			for _, fam := range []string{"-4", "-6"} {
				if out, _ := n.Exec(ctx, "ip", fam, "route", "show", "dev", "wgmesh0"); strings.TrimSpace(string(out)) != "" && !strings.Contains(string(out), "Cannot find device") {
					left = append(left, "routes "+strings.TrimSpace(string(out)))
				}
			}
			for _, fam := range []string{"ip", "ip6"} {
				if _, err := n.Exec(ctx, "nft", "list", "table", fam, "wgmesh"); err == nil {
					left = append(left, "nftables table "+fam+" wgmesh")
				}
			}
			if _, err := os.Stat(n.HostPath("/etc/cni/net.d/10-wgmesh.conflist")); err == nil {
				left = append(left, "/etc/cni/net.d/10-wgmesh.conflist")
			}
			if len(left) > 0 {
				t.Errorf("node %s after helm uninstall still has: %s", n.Name, strings.Join(left, "; "))
			}
		}
	})
}

func kubectlPath(t *testing.T) string {
	t.Helper()
	return os.Getenv("KUBEBUILDER_ASSETS") + "/kubectl"
}

// agentPodUIDs maps node name to the UID of its agent pod.
func agentPodUIDs(ctx context.Context, t *testing.T, c *cluster.Cluster) map[string]string {
	t.Helper()
	pods := &corev1.PodList{}
	if err := c.Client.List(ctx, pods, client.InNamespace(cluster.HelmNamespace),
		client.MatchingLabels{"app.kubernetes.io/name": "wgmesh", "app.kubernetes.io/component": "agent"}); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = string(p.UID)
		}
	}
	return out
}

// startPodPing pings dst every 10 ms from inside pod's network namespace on
// a real node.
func startPodPing(ctx context.Context, t *testing.T, c *cluster.Cluster, pod *corev1.Pod, dst string) *pingStream {
	t.Helper()
	pid, err := c.Node(pod.Spec.NodeName).PodPID(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	return startPing(t, exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(pid), "-n", "ping", "-n", "-D", "-i", "0.01", "-W", "1", dst))
}
