package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/apiserver"
)

// uninstallRig is a real API server with an admin kubeconfig for the
// command and a client for the test.
type uninstallRig struct {
	c          client.Client
	kubeconfig string
	ns         string
}

func newUninstallRig(t *testing.T, ns string) *uninstallRig {
	t.Helper()
	env, cfg := apiserver.StartForTest(t)
	r := &uninstallRig{kubeconfig: adminKubeconfig(t, env), ns: ns}
	var err error
	if r.c, err = client.New(cfg, client.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := r.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// daemonSet creates a DaemonSet and, as its controller would, one pod per
// node with a controller owner reference to it.
func (r *uninstallRig) daemonSet(t *testing.T, component string, nodes ...string) *appsv1.DaemonSet {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app.kubernetes.io/name": "wgmesh", "app.kubernetes.io/component": component}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: "wgmesh-" + component},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: component, Image: "wgmesh:test"}}},
			},
		},
	}
	if err := r.c.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	for _, node := range nodes {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: ds.Name + "-" + node, Labels: labels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID,
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: component, Image: "wgmesh:test"}}},
		}
		if err := r.c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	return ds
}

// fakeCluster plays the two parts envtest lacks: the garbage collector
// (foreground deletion: delete the dependents of a DaemonSet being deleted,
// then drop its foregroundDeletion finalizer once they are gone) and, when
// kubeletConfirms, the kubelet (a terminating pod's containers stopped:
// the pod object goes). It records the order in which DaemonSets started
// being deleted and whether another one's pods still existed then.
type fakeCluster struct {
	mu      sync.Mutex
	order   []string
	overlap []string
}

func (f *fakeCluster) run(ctx context.Context, c client.Client, ns string, kubeletConfirms bool) {
	seen := map[string]bool{}
	for ctx.Err() == nil {
		var dss appsv1.DaemonSetList
		var pods corev1.PodList
		if c.List(ctx, &dss, client.InNamespace(ns)) != nil || c.List(ctx, &pods, client.InNamespace(ns)) != nil {
			continue
		}
		owned := map[string][]corev1.Pod{}
		for _, p := range pods.Items {
			if ref := metav1.GetControllerOf(&p); ref != nil {
				owned[string(ref.UID)] = append(owned[string(ref.UID)], p)
			}
		}
		for _, ds := range dss.Items {
			if ds.DeletionTimestamp == nil {
				continue
			}
			if !seen[ds.Name] {
				seen[ds.Name] = true
				f.mu.Lock()
				f.order = append(f.order, ds.Name)
				for _, other := range dss.Items {
					if other.Name != ds.Name && other.DeletionTimestamp != nil && len(owned[string(other.UID)]) > 0 {
						f.overlap = append(f.overlap, fmt.Sprintf("%s deleted while %s still had pods", ds.Name, other.Name))
					}
				}
				f.mu.Unlock()
			}
			for _, p := range owned[string(ds.UID)] {
				switch {
				case p.DeletionTimestamp == nil: // the garbage collector
					_ = c.Delete(ctx, &p)
				case kubeletConfirms: // the kubelet, once the containers stopped
					_ = c.Delete(ctx, &p, client.GracePeriodSeconds(0))
				}
			}
			if len(owned[string(ds.UID)]) == 0 && len(ds.Finalizers) > 0 {
				ds.Finalizers = nil
				_ = c.Update(ctx, &ds)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestUninstallDeletesDaemonSetsInOrder runs `wgmesh-operator uninstall`
// against a real API server: it deletes the agent DaemonSet with foreground
// propagation (so each agent sees it being deleted as it stops), waits until
// its pods are gone, and only then deletes the userspace WireGuard
// DaemonSet; a DaemonSet that does not exist is skipped; pods it does not
// control are left alone; progress is logged as structured lines.
func TestUninstallDeletesDaemonSetsInOrder(t *testing.T) {
	r := newUninstallRig(t, "wgmesh-uninstall")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agentDS := r.daemonSet(t, "agent", "node-a", "node-b")
	r.daemonSet(t, "wireguard", "node-a", "node-b")
	// A pod with the agent's labels that the DaemonSet does not control.
	stray := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: "stray", Labels: agentDS.Spec.Selector.MatchLabels},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "x", Image: "x"}}},
	}
	if err := r.c.Create(ctx, stray); err != nil {
		t.Fatal(err)
	}

	f := &fakeCluster{}
	go f.run(ctx, r.c, r.ns, true)

	var stderr syncBuffer
	began := time.Now()
	code := run(ctx, []string{"uninstall", "--kubeconfig=" + r.kubeconfig, "--namespace=" + r.ns,
		"--daemonset=wgmesh-agent,wgmesh-wireguard,wgmesh-absent", "--timeout=60s"}, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d after %s; log:\n%s", code, time.Since(began), stderr.String())
	}
	f.mu.Lock()
	order, overlap := strings.Join(f.order, ","), f.overlap
	f.mu.Unlock()
	if order != "wgmesh-agent,wgmesh-wireguard" {
		t.Errorf("DaemonSets deleted in the order %q, want wgmesh-agent,wgmesh-wireguard", order)
	}
	if len(overlap) > 0 {
		t.Errorf("the WireGuard DaemonSet went before the agents: %v", overlap)
	}
	for _, name := range []string{"wgmesh-agent", "wgmesh-wireguard"} {
		var pods corev1.PodList
		if err := r.c.List(ctx, &pods, client.InNamespace(r.ns)); err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Name, name+"-") {
				t.Errorf("pod %s still exists after the uninstall", p.Name)
			}
		}
	}
	if err := r.c.Get(ctx, client.ObjectKeyFromObject(stray), stray); err != nil || stray.DeletionTimestamp != nil {
		t.Errorf("a pod the DaemonSet does not control was touched: %v %v", err, stray.DeletionTimestamp)
	}
	log := stderr.String()
	for _, want := range []string{
		`"msg":"deleting DaemonSet (foreground`, `"daemonSet":"wgmesh-uninstall/wgmesh-agent"`,
		`"msg":"waiting for the DaemonSet's pods to stop"`, `"msg":"DaemonSet's pods are gone"`,
		`"daemonSet":"wgmesh-uninstall/wgmesh-absent"`, `"msg":"DaemonSet not found: nothing to stop"`,
		`"msg":"uninstall done: every DaemonSet's pods are gone"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log has no %s:\n%s", want, log)
		}
	}
	// A second run (helm uninstall retried) finds nothing to do.
	stderr = syncBuffer{}
	if code := run(ctx, []string{"uninstall", "--kubeconfig=" + r.kubeconfig, "--namespace=" + r.ns,
		"--daemonset=wgmesh-agent,wgmesh-wireguard", "--timeout=10s"}, &stderr); code != 0 {
		t.Errorf("second run: exit code %d; log:\n%s", code, stderr.String())
	}
}

// TestUninstallTimesOutNamingThePods: a pod whose node never confirms its
// end (a node that is down) makes the uninstall fail after --timeout, with a
// message naming the pod, its node and what to do, instead of hanging.
func TestUninstallTimesOutNamingThePods(t *testing.T) {
	r := newUninstallRig(t, "wgmesh-uninstall-timeout")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.daemonSet(t, "agent", "node-down")
	r.daemonSet(t, "wireguard", "node-down")
	go (&fakeCluster{}).run(ctx, r.c, r.ns, false)

	var stderr syncBuffer
	began := time.Now()
	code := run(ctx, []string{"uninstall", "--kubeconfig=" + r.kubeconfig, "--namespace=" + r.ns,
		"--daemonset=wgmesh-agent,wgmesh-wireguard", "--timeout=3s"}, &stderr)
	took := time.Since(began)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; log:\n%s", code, stderr.String())
	}
	if took > 20*time.Second {
		t.Errorf("took %s with --timeout=3s", took)
	}
	want := "wgmesh-operator uninstall: timed out after 3s waiting for the pods of DaemonSet wgmesh-uninstall-timeout/wgmesh-agent to stop; still present: wgmesh-agent-node-down on node node-down (terminating since "
	if !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "helm uninstall --no-hooks") {
		t.Errorf("stderr does not contain %q and the way out:\n%s", want, stderr.String())
	}
	// The WireGuard DaemonSet was not touched: the agents still need it.
	ds := &appsv1.DaemonSet{}
	if err := r.c.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: "wgmesh-wireguard"}, ds); err != nil || ds.DeletionTimestamp != nil {
		t.Errorf("the WireGuard DaemonSet was deleted although the agents were not gone: %v", err)
	}
	if err := r.c.Get(ctx, client.ObjectKey{Namespace: r.ns, Name: "wgmesh-agent"}, ds); apierrors.IsNotFound(err) {
		t.Errorf("the agent DaemonSet is gone although its pod is not")
	}
}

func TestUninstallRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"uninstall", "--namespace=x"}, "--daemonset: no DaemonSet named"},
		{[]string{"uninstall", "--daemonset=a"}, "--namespace: empty and $POD_NAMESPACE is unset"},
		{[]string{"uninstall", "--daemonset=a", "--namespace=x", "--timeout=0s"}, "--timeout=0s: want a positive duration"},
		{[]string{"uninstall", "--daemonset=a", "--namespace=x", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"uninstall", "--timeout=soon"}, `invalid value "soon" for flag -timeout`},
	} {
		t.Setenv("POD_NAMESPACE", "")
		var stderr syncBuffer
		if code := run(context.Background(), tc.args, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit code %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
