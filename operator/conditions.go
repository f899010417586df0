package operator

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Field managers for the operator's status conditions. Each owns its own
// condition types through server-side apply, so neither removes the other's
// conditions nor the agent's Ready condition.
const (
	FieldManager            = "wgmesh-operator"
	fieldManagerAnnotations = "wgmesh-operator-annotations"
	fieldManagerConflicts   = "wgmesh-operator-conflicts"
)

// wantCondition is one operator-owned condition type and its problem message
// ("" = no problem).
type wantCondition struct {
	Type, Reason, Message string
	// OKReason and OKMessage describe the resolved state.
	OKReason, OKMessage string
}

// desiredConditions turns problems into the conditions a field manager
// should own: True while there is a problem; False once resolved if the
// condition had been set; absent if it never was. Transition times are kept
// when the status does not change.
func desiredConditions(current []metav1.Condition, generation int64, wants []wantCondition, now metav1.Time) []metav1.Condition {
	var out []metav1.Condition
	for _, w := range wants {
		existing := meta.FindStatusCondition(current, w.Type)
		c := metav1.Condition{Type: w.Type, ObservedGeneration: generation, LastTransitionTime: now}
		switch {
		case w.Message != "":
			c.Status, c.Reason, c.Message = metav1.ConditionTrue, w.Reason, w.Message
		case existing != nil:
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, w.OKReason, w.OKMessage
		default:
			continue
		}
		if existing != nil && existing.Status == c.Status {
			c.LastTransitionTime = existing.LastTransitionTime
		}
		out = append(out, c)
	}
	return out
}

// conditionsChanged reports whether applying want would change current.
func conditionsChanged(current, want []metav1.Condition) bool {
	for _, w := range want {
		e := meta.FindStatusCondition(current, w.Type)
		if e == nil || e.Status != w.Status || e.Reason != w.Reason || e.Message != w.Message || e.ObservedGeneration != w.ObservedGeneration {
			return true
		}
	}
	return false
}

// applyConditions server-side-applies a field manager's conditions to a
// MeshPeer's status (wgv1.ApplyConditions).
func applyConditions(ctx context.Context, c client.Client, mp *wgv1.MeshPeer, manager string, conds []metav1.Condition) error {
	return wgv1.ApplyConditions(ctx, c, mp.Name, manager, conds)
}
