package chart

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/endpoint"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/wait"
)

// dryRun turns an attack into a dry run (the control phase writes nothing).
type dryRun bool

func (d dryRun) create() []client.CreateOption {
	if d {
		return []client.CreateOption{client.DryRunAll}
	}
	return nil
}

func (d dryRun) patch() []client.PatchOption {
	if d {
		return []client.PatchOption{client.DryRunAll}
	}
	return nil
}

func (d dryRun) statusPatch() []client.SubResourcePatchOption {
	if d {
		return []client.SubResourcePatchOption{client.DryRunAll}
	}
	return nil
}

// newEvent is an events.k8s.io/v1 Event as client-go's recorder makes it.
func newEvent(ns string, regarding corev1.ObjectReference, related *corev1.ObjectReference) *eventsv1.Event {
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "attack-", Namespace: ns},
		EventTime:  metav1.NowMicro(), ReportingController: "wgmesh-agent", ReportingInstance: "wgmesh-agent-pa-node-a",
		Action: "ConfigurePeer", Reason: "Test", Type: corev1.EventTypeWarning, Note: "test", Regarding: regarding, Related: related,
	}
}

// TestAgentPolicyAttacks proves against the real API server, with a real
// pod-bound token of node A's agent, that the chart's policy refuses what a
// compromised agent would use to hurt others, and that each refusal is the
// policy's: with the policy's binding removed, the same requests pass (dry
// run), as they did before. Attacks: announcing another machine's address as
// its wgmesh.io/endpoint (every node's endpoint is protected from external
// MeshPeers, so an external peer at that address would be evicted from
// every node); changing the operator's NodeNotReady on its own MeshPeer (so
// that every other node counts it as expected again); Events about other
// nodes, pods, or in other namespaces. What the agent really writes passes:
// its own address, a force-endpoint a user set, no endpoint at all, its
// status with learned endpoints, and the Events agent/ and the service NAT
// emit.
func TestAgentPolicyAttacks(t *testing.T) {
	needAPI(t)
	helmBinary(t)
	const ns = "wgmesh-vap-attacks"
	start := time.Now()
	install(t, "wgmesh", ns, scenarios[0])
	ctx := context.Background()
	for _, n := range []string{"kube-system", "wgmesh-vap-team"} {
		ensureNamespace(t, n)
	}
	for name, addr := range map[string]string{"pa-node-a": "198.18.0.11", "pa-node-b": "198.18.0.12"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: addr}, {Type: corev1.NodeHostName, Address: "198.18.0.99"}}}}
		if name == "pa-node-a" {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "2001:db8::11"})
		}
		if err := apiClient.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = apiClient.Delete(context.Background(), n) })
	}
	admin, err := client.New(apiConfig, client.Options{Scheme: agent.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]string{"pa-node-a": keyA, "pa-node-b": keyB} {
		mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: wgv1.MeshPeerSpec{NodeName: name, PublicKey: wgv1.PublicKey(key)}}
		if err := admin.Create(ctx, mp); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.Delete(context.Background(), mp) })
	}
	// The operator has marked node A NodeNotReady.
	mpA := &wgv1.MeshPeer{}
	if err := admin.Get(ctx, client.ObjectKey{Name: "pa-node-a"}, mpA); err != nil {
		t.Fatal(err)
	}
	mpA.Status.Conditions = []metav1.Condition{{Type: wgv1.ConditionNodeNotReady, Status: metav1.ConditionTrue, Reason: "NodeNotReady", Message: "test", LastTransitionTime: metav1.Now()}}
	if err := admin.Status().Update(ctx, mpA); err != nil {
		t.Fatal(err)
	}

	a := agentClientOnNode(t, ns, "pa-node-a")
	nodeA := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "pa-node-a"}}
	nodeRef := func(name string) corev1.ObjectReference {
		return corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: name}
	}
	peerRef := func(name string) corev1.ObjectReference {
		return corev1.ObjectReference{APIVersion: wgv1.GroupVersion.String(), Kind: "MeshPeer", Name: name}
	}
	ownNode := nodeRef("pa-node-a")

	const refused = "wgmesh-agent-own-node: the agent of node pa-node-a may "
	attacks := []struct {
		name string
		do   func(dryRun) error
		want string
	}{
		{"announce an external peer's address as its endpoint (evicts that peer)", func(d dryRun) error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationEndpoint: "198.18.200.5:51820"}), d.patch()...)
		}, refused + "announce in wgmesh.io/endpoint only one of Node pa-node-a's own addresses (status.addresses InternalIP or ExternalIP: 198.18.0.11, 2001:db8::11) or its wgmesh.io/force-endpoint, as host:port, not 198.18.200.5:51820"},
		{"announce another IPv6 address", func(d dryRun) error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationEndpoint: "[2001:db8::12]:51820"}), d.patch()...)
		}, "not [2001:db8::12]:51820"},
		{"announce node B's address as its endpoint", func(d dryRun) error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationEndpoint: "198.18.0.12:51820"}), d.patch()...)
		}, "not 198.18.0.12:51820"},
		{"announce its Hostname-type address (not InternalIP/ExternalIP)", func(d dryRun) error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationEndpoint: "198.18.0.99:51820"}), d.patch()...)
		}, "not 198.18.0.99:51820"},
		{"publish candidates for node B (on node B's Node)", func(d dryRun) error {
			return a.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "pa-node-b"}},
				annotationsPatch(t, map[string]any{wgv1.AnnotationCandidates: "public=198.18.200.5:51820"}), d.patch()...)
		}, refused + "write only its own Node pa-node-a, not Node pa-node-b"},
		{"publish node B's address among its own candidates (pulls B's traffic)", func(d dryRun) error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationCandidates: "private=198.18.0.11:51820,public=198.18.0.12:51820"}), d.patch()...)
		}, refused + "announce in wgmesh.io/candidates only kind=host:port entries (at most 8, kind private or public) with one of Node pa-node-a's own addresses (status.addresses InternalIP or ExternalIP: 198.18.0.11, 2001:db8::11) or its wgmesh.io/force-endpoint, not private=198.18.0.11:51820,public=198.18.0.12:51820"},
		{"claim an observed endpoint for itself (only other nodes observe)", func(d dryRun) error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationCandidates: "observed=198.18.0.11:40000"}), d.patch()...)
		}, "not observed=198.18.0.11:40000"},
		{"clear the operator's NodeNotReady on its own MeshPeer", func(d dryRun) error {
			return a.Status().Patch(ctx, &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "pa-node-a"}}, mergePatch(t, map[string]any{"status": map[string]any{
				"conditions": []map[string]any{{"type": wgv1.ConditionNodeNotReady, "status": "False", "reason": "Forged", "message": "", "lastTransitionTime": metav1.Now()}}}}),
				d.statusPatch()...)
		}, refused + "not change the conditions the operator writes (KeyConflict, AllowedIPsConflict, InvalidAnnotation, NodeNotReady) of MeshPeer pa-node-a"},
		{"an Event about node B", func(d dryRun) error {
			return a.Create(ctx, newEvent("default", nodeRef("pa-node-b"), nil), d.create()...)
		}, refused + "write Events only about its own Node or MeshPeer pa-node-a"},
		{"an Event about its own Node in kube-system", func(d dryRun) error {
			return a.Create(ctx, newEvent("kube-system", ownNode, nil), d.create()...)
		}, "about Node pa-node-a"},
		{"an Event about a Pod in kube-system", func(d dryRun) error {
			return a.Create(ctx, newEvent("kube-system", corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kube-system", Name: "kube-apiserver-x"}, nil), d.create()...)
		}, "about Pod kube-system/kube-apiserver-x"},
		{"node B's report about a MeshPeer (related: Node pa-node-b)", func(d dryRun) error {
			related := nodeRef("pa-node-b")
			return a.Create(ctx, newEvent("default", peerRef("pa-node-b"), &related), d.create()...)
		}, "about MeshPeer pa-node-b"},
		{"an Event about a Service outside the Service's namespace", func(d dryRun) error {
			return a.Create(ctx, newEvent("default", corev1.ObjectReference{APIVersion: "v1", Kind: "Service", Namespace: "wgmesh-vap-team", Name: "web"}, nil), d.create()...)
		}, "about Service wgmesh-vap-team/web"},
		{"an Event about a NetworkPolicy outside its namespace", func(d dryRun) error {
			return a.Create(ctx, newEvent("default", corev1.ObjectReference{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy", Namespace: "wgmesh-vap-team", Name: "deny"}, nil), d.create()...)
		}, "about NetworkPolicy wgmesh-vap-team/deny"},
	}

	// The policy takes effect once the API server has loaded it.
	wait.For(t, 30*time.Second, "the policy to refuse an attack (dry run)", func() error {
		if err := attacks[0].do(true); err == nil || !strings.Contains(err.Error(), policyName) {
			return fmt.Errorf("the policy does not refuse yet: %v", err)
		}
		return nil
	})
	for _, at := range attacks {
		err := at.do(false)
		switch {
		case err == nil:
			t.Errorf("attack %q: the API server accepted it", at.name)
		case !strings.Contains(err.Error(), policyName):
			t.Errorf("attack %q: refused, but not by %s: %v", at.name, policyName, err)
		case !strings.Contains(err.Error(), at.want):
			t.Errorf("attack %q: refused with %q, want a message containing %q", at.name, err, at.want)
		default:
			t.Logf("attack %q refused: %v", at.name, err)
		}
	}

	// What the agent really writes passes.
	own := func() *corev1.Node {
		n := &corev1.Node{}
		if err := a.Get(ctx, client.ObjectKey{Name: "pa-node-a"}, n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	legit := []struct {
		name string
		do   func() error
	}{
		{"its key and own address", func() error {
			_, err := endpoint.Publish(ctx, a, own(), endpoint.Announcement{PublicKey: keyA, Endpoint: "198.18.0.11:51820"})
			return err
		}},
		{"its own IPv6 address, written another way", func() error {
			_, err := endpoint.Publish(ctx, a, own(), endpoint.Announcement{PublicKey: keyA, Endpoint: "[2001:db8:0::11]:51820"})
			return err
		}},
		{"its candidates: its own addresses", func() error {
			_, err := endpoint.Publish(ctx, a, own(), endpoint.Announcement{PublicKey: keyA, Endpoint: "198.18.0.11:51820",
				Candidates: "private=198.18.0.11:51820,public=[2001:db8::11]:51820"})
			return err
		}},
		{"its key alone (an endpoint it may not announce withdrawn)", func() error {
			_, err := endpoint.Publish(ctx, a, own(), endpoint.Announcement{PublicKey: keyA})
			return err
		}},
		{"the force-endpoint a user set, copied", func() error {
			if err := apiClient.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationForceEndpoint: "gw.example.org:4500"})); err != nil {
				t.Fatal(err)
			}
			_, err := endpoint.Publish(ctx, a, own(), endpoint.Announcement{PublicKey: keyA, Endpoint: "gw.example.org:4500"})
			return err
		}},
		{"its status with learned endpoints, the operator's condition untouched", func() error {
			return agent.ApplyStatus(ctx, a, "pa-node-a", wgv1.MeshPeerStatus{Connected: "1/1", ConnectedPeers: 1, TotalPeers: 1,
				LearnedEndpoints: []wgv1.LearnedEndpoint{{Peer: "pa-node-b", Address: "198.18.100.1", Port: 40001}},
				Conditions:       []metav1.Condition{{Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "LinkConfigured", Message: "ok", LastTransitionTime: metav1.Now()}}})
		}},
		{"an Event about its Node", func() error { return a.Create(ctx, newEvent("default", ownNode, nil)) }},
		{"an Event about its MeshPeer", func() error { return a.Create(ctx, newEvent("default", peerRef("pa-node-a"), nil)) }},
		{"its report about another MeshPeer", func() error {
			return a.Create(ctx, newEvent("default", peerRef("pa-node-b"), &ownNode))
		}},
		{"the service NAT's Event about a Service", func() error {
			return a.Create(ctx, newEvent("wgmesh-vap-team", corev1.ObjectReference{APIVersion: "v1", Kind: "Service", Namespace: "wgmesh-vap-team", Name: "web"}, nil))
		}},
		{"the network policy's Event about a NetworkPolicy", func() error {
			return a.Create(ctx, newEvent("wgmesh-vap-team", corev1.ObjectReference{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy", Namespace: "wgmesh-vap-team", Name: "deny"}, nil))
		}},
		{"an Event in the release namespace", func() error {
			return a.Create(ctx, newEvent(ns, corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: ns, Name: "wgmesh-agent-x"}, nil))
		}},
	}
	for _, l := range legit {
		if err := l.do(); err != nil {
			t.Errorf("the agent's own write %q was refused: %v", l.name, err)
		}
	}
	var mp wgv1.MeshPeer
	if err := admin.Get(ctx, client.ObjectKey{Name: "pa-node-a"}, &mp); err != nil {
		t.Fatal(err)
	}
	if c := mp.Status.Conditions; len(c) != 2 || c[0].Type != wgv1.ConditionNodeNotReady || c[0].Status != metav1.ConditionTrue {
		t.Errorf("the operator's NodeNotReady changed: %+v", c)
	}

	// The control: without the policy's binding the same attacks pass (a
	// dry run): the agent's RBAC alone allows every one of them.
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: policyName}}
	if err := apiClient.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the policy's binding to be gone (an attack accepted in a dry run)", func() error { return attacks[0].do(true) })
	for _, at := range attacks {
		if err := at.do(true); err != nil {
			t.Errorf("control: without the policy, attack %q is still refused: %v", at.name, err)
		}
	}
	t.Logf("%d attacks refused by the policy and accepted without it; %d writes of the agent accepted (%s)", len(attacks), len(legit), time.Since(start).Round(time.Millisecond))
}
