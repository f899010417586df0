package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/wgmesh/wgmesh/agent/kube"
	"github.com/wgmesh/wgmesh/test/apiserver"
)

func testDaemonSet(ns, name string) *appsv1.DaemonSet {
	labels := map[string]string{"app.kubernetes.io/component": "agent"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "wgmesh:test"}}},
			},
		},
	}
}

// TestExitCleanupFollowsTheDaemonSet: against the real API server, the
// stopping agent keeps the data plane while its DaemonSet exists (a restart,
// an upgrade) and removes wgmesh when the DaemonSet is being deleted with
// foreground propagation (what `wgmesh-operator uninstall` does: the
// DaemonSet stays, with a deletionTimestamp, until its pods are gone) or is
// gone; an agent that cannot read it keeps the data plane.
func TestExitCleanupFollowsTheDaemonSet(t *testing.T) {
	env, cfg := apiserver.StartForTest(t)
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ds := testDaemonSet("default", "wgmesh-agent")
	if err := c.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(ds)
	o := Options{DaemonSet: key}

	check := func(step string, o Options, r client.Reader, wantClean bool, wantWhy string) {
		t.Helper()
		clean, why := exitCleanup(ctx, o, r)
		if clean != wantClean || !strings.Contains(why, wantWhy) {
			t.Errorf("%s: clean=%v (%s), want %v and a reason containing %q", step, clean, why, wantClean, wantWhy)
		}
	}
	check("DaemonSet present", o, c, false, "DaemonSet default/wgmesh-agent exists and is not being deleted: a restart or an upgrade")
	check("no --daemonset-name", Options{}, c, false, "only --cleanup-on-exit removes it")
	check("--cleanup-on-exit", Options{CleanupOnExit: true, DaemonSet: key}, c, true, "--cleanup-on-exit")

	// A user the API server refuses (RBAC without the chart's Role): no
	// decision, the data plane stays.
	user, err := env.AddUser(envtest.User{Name: "wgmesh-test-nobody"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nobody, err := client.New(user.Config(), client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	check("DaemonSet unreadable", o, nobody, false, "forbidden")
	check("API server unreachable", o, unreachable(t), false, "cannot tell an uninstall from a restart")

	// helm uninstall: foreground deletion. No garbage collector runs here,
	// so the DaemonSet keeps its foregroundDeletion finalizer.
	if err := c.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
		t.Fatal(err)
	}
	check("DaemonSet being deleted", o, c, true, "DaemonSet default/wgmesh-agent is being deleted (since ")

	// The garbage collector's last step: the finalizer goes, so does the
	// DaemonSet.
	if err := c.Get(ctx, key, ds); err != nil {
		t.Fatal(err)
	}
	ds.Finalizers = nil
	if err := c.Update(ctx, ds); err != nil {
		t.Fatal(err)
	}
	check("DaemonSet gone", o, c, true, "DaemonSet default/wgmesh-agent no longer exists")
}

// unreachable is a client of an API server that does not exist.
func unreachable(t *testing.T) client.Reader {
	t.Helper()
	c, err := client.New(&rest.Config{Host: "https://198.18.255.254:1", Timeout: 200 * time.Millisecond}, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNodeEventAsTheAgentStops: the uninstall Events are written at once
// (the manager is stopped by then) and are found on the Node.
func TestNodeEventAsTheAgentStops(t *testing.T) {
	c := startAPIServer(t)
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wgm-uninstall-1"}}
	if err := c.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	a := &Agent{o: Options{NodeName: node.Name}, client: c, apiReader: c, log: testr.New(t),
		events: kube.NewEvents(c, Scheme(), node.Name, testr.New(t)).For(FieldManager)}
	a.nodeEvent(corev1.EventTypeNormal, ReasonUninstalled, "removed wgmesh from node wgm-uninstall-1 (DaemonSet x/y no longer exists)")

	var list eventsv1.EventList
	if err := c.List(ctx, &list, client.InNamespace(metav1.NamespaceDefault)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range list.Items {
		if ev.Regarding.Kind == "Node" && ev.Regarding.Name == node.Name && ev.Regarding.UID == node.UID && ev.Reason == ReasonUninstalled &&
			ev.Type == corev1.EventTypeNormal && strings.Contains(ev.Note, "removed wgmesh") && ev.ReportingController == FieldManager {
			return
		}
	}
	t.Errorf("no %s Event regarding Node %s (uid %s) among %d Events: %+v", ReasonUninstalled, node.Name, node.UID, len(list.Items), list.Items)
}
