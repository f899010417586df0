package e2e

// The local cluster end to end (issue 4): the harness with the real operator, agents and
// CNI plugins. Uses only its own helpers so it does not depend on the other e2e files.

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/wait"
)

type clusterTestLog struct{ t *testing.T }

func (l clusterTestLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestLocalCluster: 3 nodes (1 behind NAT) come up with the real product; Nodes are Ready
// and get pod CIDRs; pods on every node get addresses from their node's CIDR and become
// Ready; the real EndpointSlice controller publishes them behind a Service; deleting a Node
// garbage-collects its MeshPeer; Stop leaves nothing behind.
func TestLocalCluster(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 3, NATNodes: 1, Log: clusterTestLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			if t.Failed() {
				for _, n := range c.Nodes {
					t.Logf("--- %s runtime log ---\n%s", n.Name, cluster.Tail(filepath.Join(n.Dir, "runtime.log"), 15))
					t.Logf("--- %s agent log ---\n%s", n.Name, cluster.Tail(n.AgentLog(), 15))
				}
			}
			c.Stop()
		}
	}()
	if len(c.Missing) > 0 {
		t.Fatalf("product binaries not started: %v", c.Missing)
	}
	t.Logf("cluster up in %s", time.Since(began).Round(time.Millisecond))

	// Nodes: registered, Ready, a /24 from the cluster CIDR each (the operator's work).
	podCIDR := map[string]netip.Prefix{}
	for _, n := range c.Nodes {
		wait.For(t, 60*time.Second, "Node "+n.Name+" Ready with a podCIDR", func() error {
			node := &corev1.Node{}
			if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
				return err
			}
			ready := false
			for _, cond := range node.Status.Conditions {
				ready = ready || (cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue)
			}
			if !ready {
				return fmt.Errorf("not Ready")
			}
			if len(node.Spec.PodCIDRs) == 0 {
				return fmt.Errorf("no podCIDRs yet")
			}
			p, err := netip.ParsePrefix(node.Spec.PodCIDRs[0])
			if err != nil {
				return err
			}
			if p.Bits() != 24 || !netip.MustParsePrefix(cluster.PodCIDR).Contains(p.Addr()) {
				return fmt.Errorf("podCIDR %s: want a /24 of %s", p, cluster.PodCIDR)
			}
			podCIDR[n.Name] = p
			return nil
		})
	}

	// Pods: two per node, each with an address of its node's podCIDR, Ready.
	var names []string
	for _, n := range c.Nodes {
		for i := 1; i <= 2; i++ {
			name := fmt.Sprintf("%s-pod-%d", n.Name, i)
			if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: name, Node: n, Labels: map[string]string{"app": "matrix"}}); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
	}
	podIP := map[string]string{}
	for _, name := range names {
		pod, err := c.WaitPodReady(ctx, "default", name, 90*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ip := netip.MustParseAddr(pod.Status.PodIP)
		if cidr := podCIDR[pod.Spec.NodeName]; !cidr.Contains(ip) {
			t.Errorf("pod %s on %s has IP %s outside its node's podCIDR %s", name, pod.Spec.NodeName, ip, cidr)
		}
		podIP[name] = pod.Status.PodIP
	}

	// Service -> EndpointSlice from the real controller, with every pod Ready in it.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "matrix"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "matrix"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 60*time.Second, "EndpointSlice of service matrix with all 6 pods ready", func() error {
		sl := &discoveryv1.EndpointSliceList{}
		if err := c.Client.List(ctx, sl, client.InNamespace("default"), client.MatchingLabels{discoveryv1.LabelServiceName: "matrix"}); err != nil {
			return err
		}
		ready := map[string]bool{}
		for _, s := range sl.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					for _, a := range e.Addresses {
						ready[a] = true
					}
				}
			}
		}
		for name, ip := range podIP {
			if !ready[ip] {
				return fmt.Errorf("pod %s (%s) not a ready endpoint; have %v", name, ip, ready)
			}
		}
		return nil
	})

	// A Node's MeshPeer is owned by it: deleting the Node garbage-collects the MeshPeer.
	victim := c.Node("wgm-node-2")
	wait.For(t, 60*time.Second, "MeshPeer wgm-node-2 owned by its Node", func() error {
		mp := &wgv1.MeshPeer{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: victim.Name}, mp); err != nil {
			return err
		}
		for _, o := range mp.OwnerReferences {
			if o.Kind == "Node" && o.Name == victim.Name {
				return nil
			}
		}
		return fmt.Errorf("owner references %v", mp.OwnerReferences)
	})
	if err := c.RemoveNode(ctx, victim); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 90*time.Second, "MeshPeer wgm-node-2 garbage-collected after its Node was deleted", func() error {
		err := c.Client.Get(ctx, client.ObjectKey{Name: victim.Name}, &wgv1.MeshPeer{})
		if err == nil {
			return fmt.Errorf("still there")
		}
		return client.IgnoreNotFound(err)
	})

	t.Logf("resident memory with 6 pods:\n%s", c.Memory())

	// Teardown leaves no namespace, link, mount or process with the prefix.
	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	lo, err := cluster.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(lo) > 0 {
		t.Fatalf("left behind after Stop: %v", lo)
	}
}
