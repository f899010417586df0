package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent/endpoint"
	"github.com/wgmesh/wgmesh/agent/kube"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/apiserver"
)

func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	_, cfg := apiserver.StartForTest(t)
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStatusAndAnnotationsAgainstAPIServer checks, against a real API
// server, that the agent's status apply coexists with the operator's
// conditions and that annotation publishing touches only its own keys.
func TestStatusAndAnnotationsAgainstAPIServer(t *testing.T) {
	c := startAPIServer(t)
	ctx := context.Background()

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wgm-node-1", Annotations: map[string]string{"other": "keep"}}}
	if err := c.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	ann := endpoint.Announcement{PublicKey: mustKey(t).String(), Endpoint: "198.18.0.11:51820"}
	if wrote, err := endpoint.Publish(ctx, c, node, ann); err != nil || !wrote {
		t.Fatalf("publish: %v %v", wrote, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
		t.Fatal(err)
	}
	if node.Annotations[wgv1.AnnotationEndpoint] != ann.Endpoint || node.Annotations[wgv1.AnnotationPublicKey] != ann.PublicKey || node.Annotations["other"] != "keep" {
		t.Fatalf("annotations = %v", node.Annotations)
	}
	rv := node.ResourceVersion
	if wrote, err := endpoint.Publish(ctx, c, node, ann); err != nil || wrote {
		t.Fatalf("unchanged publish wrote: %v %v", wrote, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil || node.ResourceVersion != rv {
		t.Fatalf("unchanged publish changed the Node (rv %s -> %s): %v", rv, node.ResourceVersion, err)
	}
	// The key alone (an endpoint the agent may not announce): the endpoint
	// annotation goes, the rest stays; again, nothing is written.
	keyOnly := endpoint.Announcement{PublicKey: ann.PublicKey}
	if wrote, err := endpoint.Publish(ctx, c, node, keyOnly); err != nil || !wrote {
		t.Fatalf("publish the key alone: %v %v", wrote, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
		t.Fatal(err)
	}
	if _, has := node.Annotations[wgv1.AnnotationEndpoint]; has || node.Annotations[wgv1.AnnotationPublicKey] != ann.PublicKey || node.Annotations["other"] != "keep" {
		t.Fatalf("annotations after publishing the key alone = %v", node.Annotations)
	}
	if wrote, err := endpoint.Publish(ctx, c, node, keyOnly); err != nil || wrote {
		t.Fatalf("unchanged key-only publish wrote: %v %v", wrote, err)
	}
	if _, err := endpoint.Publish(ctx, c, node, ann); err != nil {
		t.Fatal(err)
	}
	// Candidates: written with the rest, then withdrawn alone.
	withCands := ann
	withCands.Candidates = "private=198.18.0.11:51820"
	if wrote, err := endpoint.Publish(ctx, c, node, withCands); err != nil || !wrote {
		t.Fatalf("publish candidates: %v %v", wrote, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil || node.Annotations[wgv1.AnnotationCandidates] != withCands.Candidates {
		t.Fatalf("annotations after publishing candidates = %v (%v)", node.Annotations, err)
	}
	if wrote, err := endpoint.Publish(ctx, c, node, ann); err != nil || !wrote {
		t.Fatalf("withdraw candidates: %v %v", wrote, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
		t.Fatal(err)
	}
	if _, has := node.Annotations[wgv1.AnnotationCandidates]; has || node.Annotations[wgv1.AnnotationEndpoint] != ann.Endpoint {
		t.Fatalf("annotations after withdrawing candidates = %v", node.Annotations)
	}

	mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-node-1"}, Spec: wgv1.MeshPeerSpec{NodeName: "wgm-node-1", PublicKey: wgv1.PublicKey(ann.PublicKey)}}
	if err := c.Create(ctx, mp); err != nil {
		t.Fatal(err)
	}
	// The operator's condition, with its own field manager.
	opCond := metav1.Condition{Type: wgv1.ConditionKeyConflict, Status: metav1.ConditionFalse, Reason: "UniqueKey", Message: "ok", LastTransitionTime: metav1.Now()}
	cm, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&opCond)
	opApply := func() *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": wgv1.GroupVersion.String(), "kind": "MeshPeer",
			"metadata": map[string]any{"name": mp.Name}, "status": map[string]any{"conditions": []any{cm}}}}
	}
	if err := c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(opApply()), client.FieldOwner("wgmesh-operator"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}

	status := &kube.StatusWriter{Client: c, Name: mp.Name}
	st := DesiredStatus(StatusInput{Generation: 1, MTU: 1420, Now: time.Now()}, wgv1.MeshPeerStatus{})
	if err := applyStatus(ctx, status, st); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mp), mp); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{wgv1.ConditionKeyConflict, wgv1.ConditionReady, wgv1.ConditionDegraded} {
		if meta.FindStatusCondition(mp.Status.Conditions, typ) == nil {
			t.Fatalf("condition %s missing after agent status apply: %+v", typ, mp.Status.Conditions)
		}
	}
	if mp.Status.Connected != "0/0" || mp.Status.MTU != 1420 || mp.Status.ObservedGeneration != 1 {
		t.Fatalf("status = %+v", mp.Status)
	}
	// The operator re-applies its condition: the agent's stay.
	if err := c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(opApply()), client.FieldOwner("wgmesh-operator"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mp), mp); err != nil {
		t.Fatal(err)
	}
	if meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionReady) == nil || mp.Status.MTU != 1420 {
		t.Fatalf("operator apply clobbered the agent's status: %+v", mp.Status)
	}
	if classifyStatus(mp.Status, DesiredStatus(StatusInput{Generation: 1, MTU: 1420, Now: time.Now()}, mp.Status)) != statusSame {
		t.Fatal("status read back from the API server differs from what was applied")
	}
	// Unreachable peers are written, and removed once reachable again.
	down := DesiredStatus(StatusInput{Generation: 1, MTU: 1420, Now: time.Now(), Expected: []string{"wgm-node-2"},
		Handshakes: map[string]time.Time{}}, mp.Status)
	if err := applyStatus(ctx, status, down); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mp), mp); err != nil {
		t.Fatal(err)
	}
	if mp.Status.Connected != "0/1" || len(mp.Status.UnreachablePeers) != 1 || mp.Status.UnreachablePeers[0] != "wgm-node-2" {
		t.Fatalf("unreachable status = %+v", mp.Status)
	}
	up := DesiredStatus(StatusInput{Generation: 1, MTU: 1420, Now: time.Now(), Expected: []string{"wgm-node-2"},
		Handshakes: map[string]time.Time{"wgm-node-2": time.Now()}}, mp.Status)
	if err := applyStatus(ctx, status, up); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mp), mp); err != nil {
		t.Fatal(err)
	}
	if mp.Status.Connected != "1/1" || len(mp.Status.UnreachablePeers) != 0 {
		t.Fatalf("reachable again, status = %+v", mp.Status)
	}

	if err := withdrawAnnotations(ctx, c, node.Name); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
		t.Fatal(err)
	}
	if _, ok := node.Annotations[wgv1.AnnotationPublicKey]; ok || node.Annotations["other"] != "keep" {
		t.Fatalf("after withdraw: %v", node.Annotations)
	}
}

// TestRefusesDisagreeingClusterCIDRs: an agent whose --cluster-cidrs do not
// contain its own Node's podCIDRs stops with a message naming the node, the
// CIDR and the flag (and a Warning Event), before it touches the kernel.
func TestRefusesDisagreeingClusterCIDRs(t *testing.T) {
	_, cfg := apiserver.StartForTest(t)
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wgm-mismatch"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.99.0/24", PodCIDRs: []string{"198.18.99.0/24"}}}
	if err := c.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{NodeName: node.Name, StateDir: t.TempDir(), MetricsBindAddress: "0", HealthProbeAddress: "0",
		LinkName: "wgm-never0", BridgeName: "wgm-neverbr0", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")}}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(ctx, cfg)
	if err == nil || !errors.Is(err, errRefuseToRun) || !strings.Contains(err.Error(), "Node wgm-mismatch spec.podCIDRs 198.18.99.0/24 lies outside --cluster-cidrs [198.19.0.0/16]") {
		t.Fatalf("Run = %v, want a refusal naming the node, the CIDR and --cluster-cidrs", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the agent ran until the timeout instead of refusing")
	}
	found := false
	for deadline := time.Now().Add(10 * time.Second); !found && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var evs eventsv1.EventList
		if err := c.List(context.Background(), &evs); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			found = found || (e.Reason == ReasonClusterCIDRMismatch && e.Regarding.Name == node.Name)
		}
	}
	if !found {
		t.Error("no ClusterCIDRMismatch Event on the Node")
	}
}
