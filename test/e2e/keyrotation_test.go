package e2e

// Key rotation without downtime (issue 11): `kubectl wgmesh rotate-key`, the
// plugin binary as a user runs it, rotates a node's WireGuard key while pods
// ping each other every 10 ms; the interruption stays under a second, the
// old key is gone from every node's device, and an agent killed half-way
// finishes the rotation when it comes back.

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/keyrotation"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/wait"
)

// maxRotationLoss is the most 10 ms pings one rotation may lose: an
// interruption under one second.
const maxRotationLoss = 100

// TestKeyRotation: on three nodes, one behind NAT, with a pod each.
func TestKeyRotation(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	c := startAgentCluster(ctx, t, cluster.Options{Nodes: 3, NATNodes: 1})
	setNATKeepalive(ctx, t, c)
	nodes := slices.Clone(c.Nodes)
	waitFullMesh(ctx, t, c, nodes)
	var public []*cluster.Node
	var natted *cluster.Node
	for _, n := range nodes {
		if n.NATted {
			natted = n
		} else {
			public = append(public, n)
		}
	}
	if len(public) != 2 || natted == nil {
		t.Fatalf("want two public nodes and one behind NAT, have %d and %v", len(public), natted)
	}
	a, b := public[0], public[1]
	pods := map[string]*corev1.Pod{}
	for _, n := range nodes {
		p, err := c.CreatePod(ctx, n, "rot-"+n.Name, podPort)
		if err != nil {
			t.Fatal(err)
		}
		if pods[n.Name], err = c.WaitPodReady(ctx, "default", p.Name, readyTimeout); err != nil {
			t.Fatal(err)
		}
	}
	// Every pod reaches every other (the node behind NAT included) before
	// the first rotation, so that what follows measures the rotation only.
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			if err := wait.Poll(ctx, meshTimeout, func() error {
				_, err := c.PodDial(ctx, pods[from.Name], "tcp", pods[to.Name].Status.PodIP, podPort, "hostname")
				return err
			}); err != nil {
				t.Fatalf("before any rotation, %s's pod cannot reach %s's: %v", from.Name, to.Name, err)
			}
		}
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("WGM_ROTATION_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}

	var losses []string
	t.Run("public node, pings running", func(t *testing.T) {
		for i := range rounds {
			losses = append(losses, rotateUnderPing(ctx, t, c, nodes, a, pods, [][2]*cluster.Node{{a, b}, {b, a}, {natted, a}}, i))
		}
	})
	t.Run("node behind NAT, pings running", func(t *testing.T) {
		for i := range rounds {
			losses = append(losses, rotateUnderPing(ctx, t, c, nodes, natted, pods, [][2]*cluster.Node{{natted, a}, {a, natted}, {b, natted}}, i))
		}
	})
	t.Logf("10 ms pings lost per rotation:\n%s", strings.Join(losses, "\n"))
	t.Run("agent killed half-way", func(t *testing.T) { rotationKilledHalfway(ctx, t, c, nodes, b, pods) })
	t.Run("metrics", func(t *testing.T) {
		m := agentMetrics(ctx, t, a)
		if v := metricValue(m, `wgmesh_key_rotations_total{result="completed"}`); v != float64(rounds) {
			t.Errorf("%s: wgmesh_key_rotations_total{result=\"completed\"} = %v, want %d", a.Name, v, rounds)
		}
		created := metricValue(m, `wgmesh_key_created_timestamp_seconds`)
		if age := time.Since(time.UnixMilli(int64(created * 1000))); created <= 0 || age < 0 || age > 10*time.Minute {
			t.Errorf("%s: wgmesh_key_created_timestamp_seconds = %v (age %s), want the last rotation's time", a.Name, created, age)
		}
	})
}

// rotateUnderPing rotates node's key with the plugin while each pair of
// nodes' pods pings the other's every 10 ms; it returns the losses.
func rotateUnderPing(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node, node *cluster.Node,
	pods map[string]*corev1.Pod, pairs [][2]*cluster.Node, round int) string {
	t.Helper()
	infos := waitFullMesh(ctx, t, c, nodes)
	old := infos[node.Name]
	var pings []*pingStream
	began := time.Now()
	for _, p := range pairs {
		pings = append(pings, startNodePing(ctx, t, p[0], pods[p[0].Name], pods[p[1].Name].Status.PodIP))
	}
	// A second of replies on every pair before the rotation, and again
	// after it: the barriers that frame what the ping counts.
	awaitReplies := func(when string, since time.Time) {
		for i, p := range pings {
			if err := p.awaitReplies(pingBarrier, since); err != nil {
				t.Errorf("ping %s->%s %s the rotation of %s: %v", pairs[i][0].Name, pairs[i][1].Name, when, node.Name, err)
			}
		}
	}
	awaitReplies("before", began)
	out := runPlugin(ctx, t, c, "rotate-key", node.Name, "--wait", "--timeout=2m")
	t.Logf("kubectl wgmesh rotate-key %s --wait:\n%s", node.Name, out)
	awaitReplies("after", time.Now())
	var parts []string
	for i, p := range pings {
		sent, got, gap := p.stop()
		pair := pairs[i][0].Name + "->" + pairs[i][1].Name
		if sent == 0 || got == 0 {
			t.Fatalf("ping %s: %d sent, %d received\n%s", pair, sent, got, p.output())
		}
		if sent-got >= maxRotationLoss || gap >= time.Second {
			t.Errorf("ping %s across the rotation of %s: %d of %d lost, %s without an answer; want fewer than %d lost and under 1 s",
				pair, node.Name, sent-got, sent, gap.Round(time.Millisecond), maxRotationLoss)
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d lost, longest silence %s", pair, sent-got, sent, gap.Round(time.Millisecond)))
	}
	summary := fmt.Sprintf("rotate %s #%d: %s", node.Name, round+1, strings.Join(parts, ", "))
	t.Log(summary)

	// The new key everywhere, the old one nowhere.
	fresh, err := infoOf(ctx, c, node)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.keyHex == old.keyHex {
		t.Fatalf("%s still announces its old key", node.Name)
	}
	checkRotated(ctx, t, c, nodes, node, old, fresh)
	if !strings.Contains(out, "key rotated in") || !strings.Contains(out, "all 2 node peers connected before handshook with it") {
		t.Errorf("rotate-key --wait does not report a confirmed rotation:\n%s", out)
	}
	return summary
}

// checkRotated: every other node has node's new key with its pod CIDRs and
// not the old one; node's device, private.key and MeshPeer have the new one;
// no private.key.next is left.
func checkRotated(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node, node *cluster.Node, old, fresh nodeInfo) {
	t.Helper()
	err := wait.Poll(ctx, 10*time.Second, func() error {
		for _, n := range nodes {
			if n == node {
				continue
			}
			peers, err := wgPeers(n)
			if err != nil {
				return err
			}
			if peers[old.keyHex] != nil {
				return fmt.Errorf("%s's wgmesh0 still has %s's old key", n.Name, node.Name)
			}
			if err := hasPeer(ctx, n, fresh); err != nil {
				return err
			}
		}
		dev, err := devicePublicKeyHex(node)
		if err != nil {
			return err
		}
		if dev != fresh.keyHex {
			return fmt.Errorf("%s's wgmesh0 uses public key %s, announced %s", node.Name, dev, fresh.keyHex)
		}
		b, err := os.ReadFile(node.HostPath(filepath.Join(agent.DefaultStateDir, "private.key")))
		if err != nil {
			return err
		}
		k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return err
		}
		if pub := k.PublicKey(); hex.EncodeToString(pub[:]) != fresh.keyHex {
			return fmt.Errorf("%s's private.key is not the new key", node.Name)
		}
		if _, err := os.Stat(node.HostPath(filepath.Join(agent.DefaultStateDir, keyrotation.NextFileName))); err == nil {
			return fmt.Errorf("%s still has %s", node.Name, keyrotation.NextFileName)
		}
		mp := &wgv1.MeshPeer{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: node.Name}, mp); err != nil {
			return err
		}
		if k, _ := wgtypes.ParseKey(string(mp.Spec.PublicKey)); hex.EncodeToString(k[:]) != fresh.keyHex {
			return fmt.Errorf("MeshPeer %s spec.publicKey %s is not the new key", node.Name, mp.Spec.PublicKey)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rotationKilledHalfway: the operator is stopped, so the rotation waits
// after announcing the new key. The agent is killed there and restarted:
// it resumes the same rotation (same new key). Killed again, the operator
// comes back and publishes the key while the agent is down: the others
// switch, the node cannot (the mesh to it is broken now). The agent comes
// back, switches and records: the mesh works, the old key is gone.
func rotationKilledHalfway(ctx context.Context, t *testing.T, c *cluster.Cluster, nodes []*cluster.Node, node *cluster.Node, pods map[string]*corev1.Pod) {
	infos := waitFullMesh(ctx, t, c, nodes)
	old := infos[node.Name]
	c.StopOperator()
	operatorUp := false
	defer func() {
		if !operatorUp {
			_ = c.StartOperator(context.WithoutCancel(ctx))
		}
	}()
	out := runPlugin(ctx, t, c, "rotate-key", node.Name)
	t.Logf("kubectl wgmesh rotate-key %s:\n%s", node.Name, out)
	m := regexp.MustCompile(`rotate-key=(\S+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no token in the plugin's output:\n%s", out)
	}
	token := m[1]
	var announced string
	if err := wait.Poll(ctx, 30*time.Second, func() error {
		n := &corev1.Node{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: node.Name}, n); err != nil {
			return err
		}
		announced = n.Annotations[wgv1.AnnotationPublicKey]
		if k, _ := wgtypes.ParseKey(announced); hex.EncodeToString(k[:]) == old.keyHex {
			return fmt.Errorf("%s has not announced a new key", node.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := node.KillAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := node.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	// The barrier: the restarted agent has finished a reconcile, whose
	// first stage announces the key.
	if err := wait.Poll(ctx, agentMeshTimeout, func() error {
		_, out, err := agentGet(ctx, node, agentMetricsPort, "/metrics")
		if err != nil {
			return err
		}
		if v := metricValue(out, "wgmesh_reconcile_duration_seconds_count"); v < 1 {
			return fmt.Errorf("the restarted agent of %s has not finished a reconcile", node.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n := &corev1.Node{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: node.Name}, n); err != nil {
		t.Fatal(err)
	}
	if got := n.Annotations[wgv1.AnnotationPublicKey]; got != announced {
		t.Fatalf("after a restart while waiting, %s announces %s, want the same next key %s (resumed from %s)", node.Name, got, announced, keyrotation.NextFileName)
	}
	if err := node.KillAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := c.StartOperator(ctx); err != nil {
		t.Fatal(err)
	}
	operatorUp = true
	if err := wait.Poll(ctx, 30*time.Second, func() error {
		mp := &wgv1.MeshPeer{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: node.Name}, mp); err != nil {
			return err
		}
		if string(mp.Spec.PublicKey) != announced {
			return fmt.Errorf("MeshPeer %s publishes %s, not yet %s", node.Name, mp.Spec.PublicKey, announced)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var other *cluster.Node
	for _, o := range nodes {
		if o != node && !o.NATted {
			other = o
		}
	}
	fresh, err := infoOf(ctx, c, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.Poll(ctx, 10*time.Second, func() error { return hasPeer(ctx, other, fresh) }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PodDial(ctx, pods[other.Name], "tcp", pods[node.Name].Status.PodIP, podPort, "hostname"); err == nil {
		t.Logf("note: %s reached %s's pod while its agent was down after the publication (an old session still up)", other.Name, node.Name)
	} else {
		t.Logf("while %s's agent is down after the publication, %s cannot reach it (expected): %v", node.Name, other.Name, err)
	}
	down := time.Now()
	if err := node.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wait.Poll(ctx, 60*time.Second, func() error {
		n := &corev1.Node{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: node.Name}, n); err != nil {
			return err
		}
		if got := n.Annotations[wgv1.AnnotationKeyRotated]; got != token {
			return fmt.Errorf("%s records %q, want %s", node.Name, got, token)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the restarted agent completed rotation %s %s after it started", token, time.Since(down).Round(10*time.Millisecond))
	checkRotated(ctx, t, c, nodes, node, old, fresh)
	for _, o := range nodes {
		if o == node {
			continue
		}
		if err := wait.Poll(ctx, 10*time.Second, func() error {
			got, err := c.PodDial(ctx, pods[o.Name], "tcp", pods[node.Name].Status.PodIP, podPort, "hostname")
			if err == nil && got != pods[node.Name].Name {
				err = fmt.Errorf("answer %q", got)
			}
			return err
		}); err != nil {
			t.Errorf("after the completed rotation %s cannot reach %s's pod: %v", o.Name, node.Name, err)
		}
	}
	checkNodeEvent(ctx, t, c, node.Name, keyrotation.ReasonKeyRotated)
}

// runPlugin runs the kubectl-wgmesh binary the way a user does.
func runPlugin(ctx context.Context, t *testing.T, c *cluster.Cluster, args ...string) string {
	t.Helper()
	bin := filepath.Join(c.Options().BinDir, "kubectl-wgmesh")
	out, err := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", c.Kubeconfig)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl wgmesh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// devicePublicKeyHex is the public key of the node's wgmesh0.
func devicePublicKeyHex(n *cluster.Node) (string, error) {
	kernel, err := kernelLink(n)
	if err != nil {
		return "", err
	}
	if kernel {
		var pub wgtypes.Key
		err := withWgctrl(n, func(c *wgctrl.Client) error {
			d, err := c.Device(agent.DefaultLinkName)
			if err == nil {
				pub = d.PublicKey
			}
			return err
		})
		return hex.EncodeToString(pub[:]), err
	}
	out, err := uapi(n, "get=1\n\n")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "private_key="); ok {
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != wgtypes.KeyLen {
				return "", fmt.Errorf("%s: UAPI private_key is not 32 hex bytes", n.Name)
			}
			pub := wgtypes.Key(b).PublicKey()
			return hex.EncodeToString(pub[:]), nil
		}
	}
	return "", fmt.Errorf("%s: UAPI get has no private_key", n.Name)
}

// startNodePing pings dst every 10 ms from a pod's network namespace on a
// node of the node runtime.
func startNodePing(ctx context.Context, t *testing.T, n *cluster.Node, pod *corev1.Pod, dst string) *pingStream {
	t.Helper()
	return startPing(t, n.Command(ctx, "nsenter", "--net=/run/netns/wgm-pod-"+string(pod.UID), "ping", "-n", "-D", "-i", "0.01", "-W", "1", dst))
}
