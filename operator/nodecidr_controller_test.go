package operator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/wait"
)

// waitPodCIDRs waits until the node has n podCIDRs and returns them.
func waitPodCIDRs(t *testing.T, name string, n int) []string {
	t.Helper()
	var got []string
	wait.For(t, 30*time.Second, "node "+name+"'s pod CIDRs", func() error {
		got = getNode(t, name).Spec.PodCIDRs
		if len(got) != n {
			return fmt.Errorf("node %s has podCIDRs %v, want %d", name, got, n)
		}
		return nil
	})
	return got
}

func TestNodeCIDRAllocateOnCreate(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	createNode(t, "wgm-alloc-1", nil)
	createNode(t, "wgm-alloc-2", nil)
	a := waitPodCIDRs(t, "wgm-alloc-1", 1)
	b := waitPodCIDRs(t, "wgm-alloc-2", 1)
	if a[0] == b[0] || !strings.HasPrefix(a[0], "198.19.") || !strings.HasSuffix(a[0], "/24") {
		t.Fatalf("podCIDRs %v and %v", a, b)
	}
	if n := getNode(t, "wgm-alloc-1"); n.Spec.PodCIDR != a[0] {
		t.Fatalf("spec.podCIDR = %q, want %q", n.Spec.PodCIDR, a[0])
	}
	wait.For(t, 10*time.Second, "a PodCIDRAssigned Event naming "+a[0], func() error {
		if e := findEvent(t, "Node", "wgm-alloc-1", ReasonPodCIDRAssigned); e == nil || !strings.Contains(e.Note, a[0]) {
			return errors.New("no PodCIDRAssigned event naming " + a[0])
		}
		return nil
	})
}

func TestNodeCIDRDualStackAndPreset(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	// Pre-set before the operator starts: counted as used by the rebuild.
	createNode(t, "wgm-preset-1", nil, "198.19.0.0/24", "2001:db8:100::/64")
	// Outside the pool: left alone, ignored gracefully.
	createNode(t, "wgm-preset-2", nil, "198.18.64.0/24")
	op := startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16,2001:db8:100::/56", name: "op"})
	createNode(t, "wgm-ds-1", nil)
	got := waitPodCIDRs(t, "wgm-ds-1", 2)
	if got[0] != "198.19.1.0/24" || got[1] != "2001:db8:100:1::/64" {
		t.Fatalf("podCIDRs = %v, want the first free of each family (198.19.1.0/24, 2001:db8:100:1::/64)", got)
	}
	// Pre-set after start: counted too.
	createNode(t, "wgm-preset-3", nil, "198.19.2.0/24", "2001:db8:100:2::/64")
	// Wait until the operator counts it as used (both families: preset-1,
	// ds-1, preset-3), not for a guessed time.
	wait.For(t, 10*time.Second, "wgmesh_operator_cidr_pool_used 6", func() error {
		if got := op.metric(t, "wgmesh_operator_cidr_pool_used"); got != 6 {
			return fmt.Errorf("wgmesh_operator_cidr_pool_used = %v, want 6", got)
		}
		return nil
	})
	createNode(t, "wgm-ds-2", nil)
	got2 := waitPodCIDRs(t, "wgm-ds-2", 2)
	if got2[0] == "198.19.2.0/24" || got2[1] == "2001:db8:100:2::/64" {
		t.Fatalf("wgm-ds-2 got a pre-set CIDR: %v", got2)
	}
	for name, want := range map[string]string{"wgm-preset-1": "198.19.0.0/24,2001:db8:100::/64", "wgm-preset-2": "198.18.64.0/24", "wgm-preset-3": "198.19.2.0/24,2001:db8:100:2::/64"} {
		if got := strings.Join(getNode(t, name).Spec.PodCIDRs, ","); got != want {
			t.Errorf("pre-set node %s podCIDRs changed to %s, want %s", name, got, want)
		}
	}
}

func TestNodeCIDRRestartNoDuplicates(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	op := startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op1"})
	for i := 0; i < 5; i++ {
		createNode(t, fmt.Sprintf("wgm-restart-%d", i), nil)
	}
	for i := 0; i < 5; i++ {
		waitPodCIDRs(t, fmt.Sprintf("wgm-restart-%d", i), 1)
	}
	op.stop(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op2"})
	for i := 5; i < 10; i++ {
		createNode(t, fmt.Sprintf("wgm-restart-%d", i), nil)
	}
	seen := map[string]string{}
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("wgm-restart-%d", i)
		c := waitPodCIDRs(t, name, 1)[0]
		if other, dup := seen[c]; dup {
			t.Fatalf("%s given to both %s and %s after a restart", c, other, name)
		}
		seen[c] = name
	}
}

func TestNodeCIDRReleaseAndExhaustion(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	// Two /24s only.
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/23", name: "op"})
	createNode(t, "wgm-ex-1", nil)
	createNode(t, "wgm-ex-2", nil)
	first := waitPodCIDRs(t, "wgm-ex-1", 1)[0]
	waitPodCIDRs(t, "wgm-ex-2", 1)
	createNode(t, "wgm-ex-3", nil)
	wait.For(t, 30*time.Second, "a PodCIDRPoolExhausted Event on wgm-ex-3 naming the pool", func() error {
		e := findEvent(t, "Node", "wgm-ex-3", ReasonPodCIDRPoolExhausted)
		if e == nil {
			return errors.New("no PodCIDRPoolExhausted event on wgm-ex-3")
		}
		if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Note, "198.19.0.0/23") {
			return fmt.Errorf("event %s %q does not name the pool", e.Type, e.Note)
		}
		return nil
	})
	if got := getNode(t, "wgm-ex-3").Spec.PodCIDRs; len(got) != 0 {
		t.Fatalf("exhausted pool still gave %v", got)
	}
	// Freeing a CIDR lets the waiting node have it (without waiting for the periodic retry).
	if err := testClient.Delete(context.Background(), getNode(t, "wgm-ex-1")); err != nil {
		t.Fatal(err)
	}
	if got := waitPodCIDRs(t, "wgm-ex-3", 1)[0]; got != first {
		t.Fatalf("wgm-ex-3 got %s, want the released %s", got, first)
	}
	// The operator still works for everything else: a node with a pre-set CIDR is untouched.
	createNode(t, "wgm-ex-4", nil, "198.18.64.0/24")
}

// TestNodeCIDRTwoOperatorsManyNodes runs two operator replicas with leader
// election, creates 200 Nodes concurrently, stops the leader midway, and
// checks that every node got exactly one CIDR and none was given twice.
func TestNodeCIDRTwoOperatorsManyNodes(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	const nodes = 200
	start := time.Now()
	opA := startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16,2001:db8:100::/48", leaderElect: true, name: "replica-a"})
	// Make sure replica A leads first, so stopping it is a real failover.
	func() {
		createNode(t, "wgm-many-probe", nil)
		defer testClient.Delete(context.Background(), getNode(t, "wgm-many-probe")) //nolint:errcheck
		wait.For(t, 30*time.Second, "the probe node's pod CIDRs (replica A leads)", func() error {
			if len(getNode(t, "wgm-many-probe").Spec.PodCIDRs) != 2 {
				return errors.New("probe node not allocated")
			}
			return nil
		})
	}()
	opB := startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16,2001:db8:100::/48", leaderElect: true, name: "replica-b"})

	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	for i := 0; i < nodes; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			n := &corev1.Node{}
			n.Name = fmt.Sprintf("wgm-many-%03d", i)
			if err := testClient.Create(context.Background(), n); err != nil {
				errs <- err
			}
		}(i)
	}
	// Stop the leader once it has handed out some CIDRs: replica B must
	// take over, rebuild from the nodes, and finish without duplicates.
	wait.For(t, 60*time.Second, "replica A to assign 20 CIDRs", func() error {
		if got := opA.metric(t, "wgmesh_operator_podcidrs_assigned_total"); got < 20 {
			return fmt.Errorf("replica A assigned %v CIDRs so far", got)
		}
		return nil
	})
	opA.stop(t)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create node: %v", err)
	}

	var list corev1.NodeList
	wait.For(t, 120*time.Second, "two pod CIDRs on every node", func() error {
		if err := testClient.List(context.Background(), &list); err != nil {
			return err
		}
		missing := 0
		for _, n := range list.Items {
			if strings.HasPrefix(n.Name, "wgm-many-") && n.Name != "wgm-many-probe" && len(n.Spec.PodCIDRs) != 2 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d nodes still without two podCIDRs", missing, nodes)
		}
		return nil
	})
	t.Logf("200 nodes allocated by two replicas with a leader failover in %s", time.Since(start).Round(time.Millisecond))

	owner := map[string]string{}
	count := 0
	for _, n := range list.Items {
		if !strings.HasPrefix(n.Name, "wgm-many-") || n.Name == "wgm-many-probe" {
			continue
		}
		count++
		c := n.Spec.PodCIDRs
		if len(c) != 2 || !strings.Contains(c[0], ".") || !strings.Contains(c[1], ":") || n.Spec.PodCIDR != c[0] {
			t.Errorf("node %s: podCIDRs %v podCIDR %q, want one IPv4 then one IPv6", n.Name, c, n.Spec.PodCIDR)
		}
		for _, x := range c {
			if other, dup := owner[x]; dup {
				t.Errorf("CIDR %s given to both %s and %s", x, other, n.Name)
			}
			owner[x] = n.Name
		}
	}
	if count != nodes {
		t.Fatalf("found %d nodes, want %d", count, nodes)
	}
	a, b := opA.metric(t, "wgmesh_operator_podcidrs_assigned_total"), opB.metric(t, "wgmesh_operator_podcidrs_assigned_total")
	t.Logf("replica A assigned %v, replica B %v (A also did the probe node)", a, b)
	// A's last writes may land after its context was cancelled (it then
	// counts them as failed), so the sum can be below 201, never above.
	if b == 0 || a+b > nodes+1 {
		t.Fatalf("replica A assigned %v and B %v; want B to take over and at most %d in all (200 nodes + probe)", a, b, nodes+1)
	}
}

func TestNodeCIDRPodCIDRsNotRewritten(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	// The API server itself refuses changing podCIDRs once set; the operator
	// relies on that and on resourceVersion preconditions.
	n := createNode(t, "wgm-immut-1", nil, "198.19.7.0/24")
	n.Spec.PodCIDRs = []string{"198.19.8.0/24"}
	n.Spec.PodCIDR = "198.19.8.0/24"
	err := testClient.Update(context.Background(), n)
	if err == nil || !apierrors.IsInvalid(err) {
		t.Fatalf("changing podCIDRs: err = %v, want Invalid", err)
	}
	// A stale write is refused.
	fresh := getNode(t, "wgm-immut-1")
	stale := fresh.DeepCopy()
	fresh.Labels = map[string]string{"x": "y"}
	if err := testClient.Update(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFromWithOptions(stale.DeepCopy(), client.MergeFromWithOptimisticLock{})
	stale.Labels = map[string]string{"x": "z"}
	if err := testClient.Patch(context.Background(), stale, patch); !apierrors.IsConflict(err) {
		t.Fatalf("stale patch: err = %v, want Conflict", err)
	}
}
