package kube

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// StatusWriter writes this node's MeshPeer status for every part of the
// agent (the mesh's counts and conditions, the service NAT's
// KubeProxyConflict): each applies only its own fields under its own field
// manager (server-side apply), so none removes another's, and the
// operator's conditions stay. A MeshPeer the operator has not created yet
// is not an error: its creation wakes the agent.
type StatusWriter struct {
	Client client.Client
	// Name is the node's MeshPeer (the node's name).
	Name string
}

// Apply applies the status fields manager owns (unstructured: exactly the
// fields it sets; see wgv1.ApplyStatus).
func (w *StatusWriter) Apply(ctx context.Context, manager string, status map[string]any) error {
	return wgv1.ApplyStatus(ctx, w.Client, w.Name, manager, status)
}

// ApplyConditions applies manager's conditions.
func (w *StatusWriter) ApplyConditions(ctx context.Context, manager string, conds []metav1.Condition) error {
	return wgv1.ApplyConditions(ctx, w.Client, w.Name, manager, conds)
}
