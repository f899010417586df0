package kube

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func listEvents(t *testing.T, c client.Client) []eventsv1.Event {
	t.Helper()
	var l eventsv1.EventList
	if err := c.List(context.Background(), &l); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// TestEventsWrittenAtOnceRepeatsCounted: an Event is in the API when Eventf
// returns; a repeat is the first Event's series, not a new Event; another
// note, another object or a repeat after the window is a new Event.
func TestEventsWrittenAtOnceRepeatsCounted(t *testing.T) {
	s := Scheme()
	c := fake.NewClientBuilder().WithScheme(s).Build()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	e := NewEvents(c, s, "node-a", testr.New(t))
	e.now = func() time.Time { return now }
	agent, nat := e.For("wgmesh-agent"), e.For("wgmesh-service-nat")
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", UID: "uid-a"}}

	agent.Eventf(node, nil, corev1.EventTypeWarning, "EgressMasqueradeFailed", "ConfigureDataplane", "table %s: %s", "wgmesh", "busy")
	evs := listEvents(t, c)
	if len(evs) != 1 {
		t.Fatalf("%d Events after one Eventf, want 1", len(evs))
	}
	ev := evs[0]
	if ev.Namespace != metav1.NamespaceDefault || ev.Regarding.Kind != "Node" || ev.Regarding.Name != "node-a" || ev.Regarding.UID != "uid-a" ||
		ev.Note != "table wgmesh: busy" || ev.ReportingController != "wgmesh-agent" || ev.ReportingInstance != "wgmesh-agent-node-a" ||
		ev.Action != "ConfigureDataplane" || ev.Type != corev1.EventTypeWarning || ev.Series != nil {
		t.Fatalf("Event %+v", ev)
	}

	for i := 0; i < 3; i++ {
		now = now.Add(10 * time.Second)
		agent.Eventf(node, nil, corev1.EventTypeWarning, "EgressMasqueradeFailed", "ConfigureDataplane", "table %s: %s", "wgmesh", "busy")
	}
	evs = listEvents(t, c)
	if len(evs) != 1 || evs[0].Series == nil || evs[0].Series.Count != 2 {
		t.Fatalf("after 3 repeats: %d Events, series %+v; want 1 Event whose series counts the first repeat (later ones wait for the refresh)", len(evs), evs[0].Series)
	}
	// Every 5 minutes (within the window) for half an hour: the count is
	// written again once the refresh is due.
	for i := 0; i < 6; i++ {
		now = now.Add(5 * time.Minute)
		agent.Eventf(node, nil, corev1.EventTypeWarning, "EgressMasqueradeFailed", "ConfigureDataplane", "table wgmesh: busy")
	}
	if evs = listEvents(t, c); len(evs) != 1 || evs[0].Series.Count != 10 {
		t.Fatalf("after the refresh: %d Events, series %+v; want the count 10 written", len(evs), evs[0].Series)
	}

	// New Events: another note, another part, another object, and the same
	// one again after the window.
	agent.Eventf(node, nil, corev1.EventTypeWarning, "EgressMasqueradeFailed", "ConfigureDataplane", "table wgmesh: gone")
	nat.Eventf(&corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: "node-a"}, nil, corev1.EventTypeWarning, "KubeProxyDetected", "DetectKubeProxy", "kube-proxy")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	nat.Eventf(svc, nil, corev1.EventTypeWarning, "InvalidServiceField", "ProgramService", "%s", strings.Repeat("x", 2000))
	now = now.Add(seriesWindow + time.Second)
	agent.Eventf(node, nil, corev1.EventTypeWarning, "EgressMasqueradeFailed", "ConfigureDataplane", "table wgmesh: busy")
	evs = listEvents(t, c)
	if len(evs) != 5 {
		t.Fatalf("%d Events, want 5: %+v", len(evs), evs)
	}
	for _, ev := range evs {
		if ev.Regarding.Kind == "Service" {
			if ev.Namespace != "shop" || len(ev.Note) != noteLimit || ev.ReportingInstance != "wgmesh-service-nat-node-a" {
				t.Errorf("Event about a Service: namespace %s, note of %d bytes, instance %s", ev.Namespace, len(ev.Note), ev.ReportingInstance)
			}
		}
	}
}

// TestEventRelated: the related object is on the Event.
func TestEventRelated(t *testing.T) {
	s := Scheme()
	c := fake.NewClientBuilder().WithScheme(s).Build()
	e := NewEvents(c, s, "node-a", testr.New(t))
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p"}}
	e.For("wgmesh-agent").Eventf(pod, node, corev1.EventTypeNormal, "Why", "Act", "n")
	evs := listEvents(t, c)
	if len(evs) != 1 || evs[0].Related == nil || evs[0].Related.Kind != "Node" || evs[0].Related.Name != "node-a" {
		t.Fatalf("Events %+v", evs)
	}
}

// TestEventsHeldWhileUnreachable: a write the API server does not answer
// holds the next writes off for unreachableHold (each would make its caller
// wait), then they are tried again; a write refused for the Event itself
// holds nothing off.
func TestEventsHeldWhileUnreachable(t *testing.T) {
	s := Scheme()
	var creates int
	var fail error
	c := fake.NewClientBuilder().WithScheme(s).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			creates++
			if fail != nil {
				return fail
			}
			return c.Create(ctx, obj, opts...)
		}}).Build()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	e := NewEvents(c, s, "node-a", testr.New(t))
	e.now = func() time.Time { return now }
	rec := e.For("wgmesh-agent")
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	event := func(note string) { rec.Eventf(node, nil, corev1.EventTypeWarning, "Why", "Act", "%s", note) }

	fail = errors.New("dial tcp 198.18.0.1:6443: connect: connection refused")
	event("one")
	event("two")
	if creates != 1 {
		t.Fatalf("%d writes tried while the API server did not answer, want 1", creates)
	}
	now = now.Add(unreachableHold)
	fail = nil
	event("three")
	if creates != 2 || len(listEvents(t, c)) != 1 {
		t.Fatalf("after the hold: %d writes tried, %d Events; want the write tried and done", creates, len(listEvents(t, c)))
	}
	fail = apierrors.NewInvalid(schema.GroupKind{Group: "events.k8s.io", Kind: "Event"}, "x", nil)
	event("four")
	fail = nil
	event("five")
	if creates != 4 || len(listEvents(t, c)) != 2 {
		t.Fatalf("after a refused Event: %d writes tried, %d Events; want the next one tried and done", creates, len(listEvents(t, c)))
	}
}
