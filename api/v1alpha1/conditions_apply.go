package v1alpha1

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ApplyConditions server-side-applies one field manager's conditions to a
// MeshPeer's status: each writer (operator parts, agent, service NAT) owns
// its own condition types, so none removes another's. A MeshPeer that is
// gone is not an error.
func ApplyConditions(ctx context.Context, c client.Client, name, manager string, conds []metav1.Condition) error {
	list := make([]any, 0, len(conds))
	for _, cond := range conds {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cond)
		if err != nil {
			return err
		}
		list = append(list, m)
	}
	return ApplyStatus(ctx, c, name, manager, map[string]any{"conditions": list})
}

// ApplyStatus server-side-applies the status fields one field manager owns
// (status, as unstructured: only the fields it sets) to a MeshPeer, taking
// them over from any other manager; the fields it leaves out stay their
// owners'. Every MeshPeer status write goes through here. A MeshPeer that
// is gone is not an error.
func ApplyStatus(ctx context.Context, c client.Client, name, manager string, status map[string]any) error {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": GroupVersion.String(),
		"kind":       "MeshPeer",
		"metadata":   map[string]any{"name": name},
		"status":     status,
	}}
	err := c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(manager), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("MeshPeer %s: applying status as %s: %w", name, manager, err)
	}
	return nil
}

// ConditionKubeProxyConflict is written by the node's service NAT (field
// manager wgmesh-service-nat): True while kube-proxy's rules are on the node
// beside wgmesh's, so that both answer for every Service.
const ConditionKubeProxyConflict = "KubeProxyConflict"
