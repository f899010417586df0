package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/endpoint"
	"github.com/wgmesh/wgmesh/agent/keyrotation"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/wait"
)

const (
	policyName = "wgmesh-agent-own-node"
	keyA       = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	keyB       = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA="
)

// agentClientOnNode returns a client that authenticates exactly as the agent
// pod on node does: a TokenRequest for the chart's agent ServiceAccount,
// bound to a Pod scheduled on that node, so the token carries the node in
// authentication.kubernetes.io/node-name.
func agentClientOnNode(t *testing.T, ns, node string) client.Client {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-" + node, Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: "wgmesh-agent",
			NodeName:           node,
			Containers:         []corev1.Container{{Name: "agent", Image: "wgmesh:test"}},
		},
	}
	if err := apiClient.Create(ctx, pod); err != nil {
		t.Fatalf("creating the agent pod on node %s: %v", node, err)
	}
	t.Cleanup(func() { _ = apiClient.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
	cs, err := kubernetes.NewForConfig(apiConfig)
	if err != nil {
		t.Fatal(err)
	}
	exp := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "wgmesh-agent", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest bound to pod %s/%s: %v", ns, pod.Name, err)
	}
	cfg := rest.AnonymousClientConfig(apiConfig)
	cfg.BearerToken = tr.Status.Token
	c, err := client.New(cfg, client.Options{Scheme: agent.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// The token's identity, as the API server sees it.
	review := &authnv1.SelfSubjectReview{}
	if err := c.Create(ctx, review); err != nil {
		t.Fatalf("SelfSubjectReview with the agent token: %v", err)
	}
	if got := review.Status.UserInfo.Extra["authentication.kubernetes.io/node-name"]; len(got) != 1 || got[0] != node {
		t.Fatalf("the pod-bound token carries node-name %v, want [%s] (user %s, extra %v)", got, node, review.Status.UserInfo.Username, review.Status.UserInfo.Extra)
	}
	return c
}

func mergePatch(t *testing.T, v any) client.Patch {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return client.RawPatch(types.MergePatchType, b)
}

func annotationsPatch(t *testing.T, ann map[string]any) client.Patch {
	return mergePatch(t, map[string]any{"metadata": map[string]any{"annotations": ann}})
}

// TestAgentOwnNodePolicy proves against the real API server that the chart's
// ValidatingAdmissionPolicy holds an agent to its own node: with a real
// pod-bound token of node A, every write to node B, to B's MeshPeer status,
// to A's own spec, labels or other annotations is refused with the policy's
// message, and the writes the agent really does (its two annotations via
// endpoint.Publish, its MeshPeer status via agent.ApplyStatus, the record of
// a key rotation via keyrotation.ClientAPI) pass.
func TestAgentOwnNodePolicy(t *testing.T) {
	needAPI(t)
	helmBinary(t)
	const ns = "wgmesh-vap"
	install(t, "wgmesh", ns, scenarios[0])
	ctx := context.Background()

	for _, name := range []string{"vap-node-a", "vap-node-b"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"role": "worker"},
			Annotations: map[string]string{"other.example/keep": "1"}}}
		if name == "vap-node-b" {
			n.Spec.PodCIDRs = []string{"198.19.2.0/24"}
			n.Spec.PodCIDR = "198.19.2.0/24"
		} else {
			// As its kubelet reports it: the endpoint the agent announces
			// below is this address.
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}}
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
	for _, p := range []struct{ name, key string }{{"vap-node-a", keyA}, {"vap-node-b", keyB}} {
		mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: p.name}, Spec: wgv1.MeshPeerSpec{NodeName: p.name, PublicKey: wgv1.PublicKey(p.key)}}
		if err := admin.Create(ctx, mp); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.Delete(context.Background(), mp) })
	}

	a := agentClientOnNode(t, ns, "vap-node-a")

	// The policy takes effect once the API server has loaded it: wait for
	// the first refusal (a dry run, so nothing is written meanwhile).
	nodeB := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "vap-node-b"}}
	wait.For(t, 30*time.Second, "the policy "+policyName+" to refuse node A's agent writing node B's key", func() error {
		err := a.Patch(ctx, nodeB, annotationsPatch(t, map[string]any{wgv1.AnnotationPublicKey: keyA}), client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), policyName) {
			return nil
		}
		return fmt.Errorf("last result: %v", err)
	})

	nodeA := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "vap-node-a"}}
	status := wgv1.MeshPeerStatus{Connected: "9/9", ConnectedPeers: 9, TotalPeers: 9, Conditions: []metav1.Condition{{
		Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "LinkConfigured", Message: "forged", LastTransitionTime: metav1.Now()}}}
	attacks := []struct {
		name string
		do   func() error
		want string
	}{
		{"announce its key on node B (capture B's traffic)", func() error {
			return a.Patch(ctx, nodeB, annotationsPatch(t, map[string]any{wgv1.AnnotationPublicKey: keyA}))
		}, "may write only its own Node vap-node-a, not Node vap-node-b"},
		{"set force-endpoint on node B", func() error {
			return a.Patch(ctx, nodeB, annotationsPatch(t, map[string]any{wgv1.AnnotationForceEndpoint: "198.18.0.66:51820"}))
		}, "not Node vap-node-b"},
		{"write node B's MeshPeer status", func() error {
			return agent.ApplyStatus(ctx, a, "vap-node-b", status)
		}, "may write only its own MeshPeer vap-node-a, not MeshPeer vap-node-b"},
		{"set its own podCIDRs", func() error {
			return a.Patch(ctx, nodeA, mergePatch(t, map[string]any{"spec": map[string]any{"podCIDRs": []string{"198.19.2.0/24"}, "podCIDR": "198.19.2.0/24"}}))
		}, "not its spec, labels"},
		{"taint itself away", func() error {
			return a.Patch(ctx, nodeA, mergePatch(t, map[string]any{"spec": map[string]any{"taints": []map[string]string{{"key": "x", "effect": "NoSchedule"}}}}))
		}, "not its spec, labels"},
		{"relabel itself", func() error {
			return a.Patch(ctx, nodeA, mergePatch(t, map[string]any{"metadata": map[string]any{"labels": map[string]any{"role": "control-plane"}}}))
		}, "not its spec, labels"},
		{"set its own force-endpoint (a user setting)", func() error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationForceEndpoint: "198.18.0.66:51820"}))
		}, "not wgmesh.io/force-endpoint"},
		{"request its own key rotation (the user's annotation)", func() error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationRotateKey: "forged"}))
		}, "not wgmesh.io/rotate-key"},
		{"record a key rotation on node B", func() error {
			return a.Patch(ctx, nodeB, annotationsPatch(t, map[string]any{wgv1.AnnotationKeyRotated: "t1"}))
		}, "not Node vap-node-b"},
		{"remove another annotation from itself", func() error {
			return a.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{"other.example/keep": nil}))
		}, "not other.example/keep"},
		{"delete node B", func() error { return a.Delete(ctx, nodeB) }, ""},
		{"clear the operator's KeyConflict on its own MeshPeer", func() error {
			st := status
			st.Conditions = append(st.Conditions, metav1.Condition{Type: wgv1.ConditionKeyConflict, Status: metav1.ConditionFalse, Reason: "Forged", LastTransitionTime: metav1.Now()})
			return agent.ApplyStatus(ctx, a, "vap-node-a", st)
		}, "may not change the conditions the operator writes"},
	}
	// The operator's condition the last attack tries to clear.
	mpA := &wgv1.MeshPeer{}
	if err := admin.Get(ctx, client.ObjectKey{Name: "vap-node-a"}, mpA); err != nil {
		t.Fatal(err)
	}
	mpA.Status.Conditions = []metav1.Condition{{Type: wgv1.ConditionKeyConflict, Status: metav1.ConditionTrue, Reason: "DuplicatePublicKey", Message: "test", LastTransitionTime: metav1.Now()}}
	if err := admin.Status().Update(ctx, mpA); err != nil {
		t.Fatal(err)
	}
	for _, at := range attacks {
		err := at.do()
		switch {
		case err == nil:
			t.Errorf("attack %q: the API server accepted it", at.name)
		case !strings.Contains(err.Error(), policyName) && at.want != "":
			t.Errorf("attack %q: refused, but not by %s: %v", at.name, policyName, err)
		case !strings.Contains(err.Error(), at.want):
			t.Errorf("attack %q: refused with %q, want a message containing %q", at.name, err, at.want)
		default:
			t.Logf("attack %q refused: %v", at.name, err)
		}
	}

	// Node B is untouched.
	var b corev1.Node
	if err := apiClient.Get(ctx, client.ObjectKey{Name: "vap-node-b"}, &b); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Annotations[wgv1.AnnotationPublicKey]; ok {
		t.Errorf("node B got a public-key annotation: %v", b.Annotations)
	}

	// What the agent really writes passes.
	var own corev1.Node
	if err := a.Get(ctx, client.ObjectKey{Name: "vap-node-a"}, &own); err != nil {
		t.Fatal(err)
	}
	if _, err := endpoint.Publish(ctx, a, &own, endpoint.Announcement{PublicKey: keyA, Endpoint: "198.18.0.11:51820"}); err != nil {
		t.Errorf("the agent's own announcement was refused: %v", err)
	}
	if err := agent.ApplyStatus(ctx, a, "vap-node-a", status); err != nil {
		t.Errorf("the agent's own MeshPeer status was refused: %v", err)
	}
	// A key rotation: the user's request, then the agent's record of it
	// through the API the rotation uses.
	if err := apiClient.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationRotateKey: "t1"})); err != nil {
		t.Fatal(err)
	}
	rot := keyrotation.ClientAPI{NodeName: "vap-node-a", Reader: a, Client: a}
	token := "t1"
	if err := rot.PatchNodeAnnotations(ctx, map[string]*string{wgv1.AnnotationKeyRotated: &token}); err != nil {
		t.Errorf("the agent's record of a key rotation was refused: %v", err)
	}
	if mp, err := rot.OwnMeshPeer(ctx); err != nil || mp == nil {
		t.Errorf("the agent reading its own MeshPeer for a rotation: %v %v", mp, err)
	}
	if err := endpoint.Withdraw(ctx, a, "vap-node-a"); err != nil {
		t.Errorf("the agent's own withdrawal (uninstall, --cleanup-on-exit) was refused: %v", err)
	}
	// As it stops, the agent reads its own DaemonSet (installed above).
	if deleted, why, err := agent.DaemonSetDeleted(ctx, a, types.NamespacedName{Namespace: ns, Name: "wgmesh-agent"}); err != nil || deleted {
		t.Errorf("the agent reading its own DaemonSet: deleted=%v (%s), %v; want present", deleted, why, err)
	}

	// A token of the agent's ServiceAccount that is not bound to a pod
	// (no node) may write nothing.
	cs, err := kubernetes.NewForConfig(apiConfig)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "wgmesh-agent", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(apiConfig)
	cfg.BearerToken = tr.Status.Token
	unbound, err := client.New(cfg, client.Options{Scheme: agent.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	err = unbound.Patch(ctx, nodeA, annotationsPatch(t, map[string]any{wgv1.AnnotationPublicKey: keyB}))
	if err == nil || !strings.Contains(err.Error(), "carries no node") {
		t.Errorf("an unbound agent token patched a Node: %v", err)
	}
}
