package chart

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestNodeRelayLabelPolicy: a node (its kubelet's identity, which a
// compromised node holds) may not make itself a preferred relay, the one
// label that would draw other nodes' traffic to it in clear; it may say it
// never relays, set its location, and keep what an administrator set. The
// control: without the policy's binding the attack passes (dry run).
func TestNodeRelayLabelPolicy(t *testing.T) {
	needAPI(t)
	helmBinary(t)
	const ns = "wgmesh-vap-relay"
	install(t, "wgmesh", ns, scenarios[0])
	ctx := context.Background()
	for _, name := range []string{"rl-node-a", "rl-node-b"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := apiClient.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = apiClient.Delete(context.Background(), n) })
	}
	// The node's kubelet: system:nodes (system:masters only so that the test
	// does not depend on the Node authorizer; admission policies hold for
	// every user).
	cfg := rest.CopyConfig(apiConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:node:rl-node-a", Groups: []string{"system:nodes", "system:masters", "system:authenticated"}}
	kubelet, err := client.New(cfg, client.Options{Scheme: agent.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	labels := func(l map[string]any) client.Patch {
		return mergePatch(t, map[string]any{"metadata": map[string]any{"labels": l}})
	}
	nodeA := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "rl-node-a"}}
	const refused = "wgmesh-node-relay-label"
	attacks := []struct {
		name string
		do   func(dryRun) error
	}{
		{"prefer itself as a relay", func(d dryRun) error {
			return kubelet.Patch(ctx, nodeA, labels(map[string]any{wgv1.LabelRelay: "true"}), d.patch()...)
		}},
		{"prefer itself through nodes/status (where the kubelet writes labels)", func(d dryRun) error {
			opts := []client.SubResourcePatchOption{}
			if d {
				opts = append(opts, client.DryRunAll)
			}
			return kubelet.Status().Patch(ctx, nodeA, labels(map[string]any{wgv1.LabelRelay: "true"}), opts...)
		}},
		{"register a new Node as a preferred relay", func(d dryRun) error {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "rl-node-c", Labels: map[string]string{wgv1.LabelRelay: "true"}}}
			return kubelet.Create(ctx, n, d.create()...)
		}},
	}
	// A new policy takes a moment to be enforced.
	wait.For(t, 30*time.Second, "the policy enforced (the first attack refused)", func() error {
		if err := attacks[0].do(true); err == nil {
			return fmt.Errorf("accepted")
		}
		return nil
	})
	for _, at := range attacks {
		err := at.do(true)
		if err == nil || !strings.Contains(err.Error(), refused) || !strings.Contains(err.Error(), "may not set label wgmesh.io/relay=true") {
			t.Errorf("attack %q: %v, want the policy's refusal", at.name, err)
		}
	}
	legit := []struct {
		name string
		do   func() error
	}{
		{"say it never relays", func() error {
			return kubelet.Patch(ctx, nodeA, labels(map[string]any{wgv1.LabelRelay: "false"}), client.DryRunAll)
		}},
		{"set its location", func() error {
			return kubelet.Patch(ctx, nodeA, labels(map[string]any{"wgmesh.io/location": "office-c"}), client.DryRunAll)
		}},
		{"an administrator prefers node B", func() error {
			return apiClient.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "rl-node-b"}}, labels(map[string]any{wgv1.LabelRelay: "true"}))
		}},
		{"node B keeps the administrator's value while changing another label", func() error {
			return kubelet.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "rl-node-b"}}, labels(map[string]any{"example.com/rack": "r1"}))
		}},
	}
	for _, l := range legit {
		if err := l.do(); err != nil {
			t.Errorf("%s: refused: %v", l.name, err)
		}
	}

	binding := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: "wgmesh-node-relay-label"}}
	if err := apiClient.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the policy's binding to be gone (the attack accepted in a dry run)", func() error { return attacks[0].do(true) })
	for _, at := range attacks {
		if err := at.do(true); err != nil {
			t.Errorf("control: without the policy, attack %q is still refused: %v", at.name, err)
		}
	}
}
