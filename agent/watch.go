package agent

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// meshPeerInputConditions are the MeshPeer conditions a reconcile reads: the
// operator's exclusions, and NodeNotReady (who counts as expected).
var meshPeerInputConditions = append(slices.Clone(wgv1.ExclusionConditions), wgv1.ConditionNodeNotReady)

// meshPeerChanged reports whether a MeshPeer update changes what the agent
// makes of it: spec (generation), owner, deletion, or the status of an
// exclusion or NodeNotReady condition. Status written by agents (counts,
// Ready, handshakes) and the operator's other conditions do not count: with
// N nodes each such write would otherwise be N reconciles.
func meshPeerChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*wgv1.MeshPeer)
	n, ok2 := newObj.(*wgv1.MeshPeer)
	if !ok1 || !ok2 {
		return true
	}
	if o.Generation != n.Generation || o.UID != n.UID || !equality.Semantic.DeepEqual(o.Spec, n.Spec) ||
		!equality.Semantic.DeepEqual(o.OwnerReferences, n.OwnerReferences) ||
		(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) {
		return true
	}
	for _, t := range meshPeerInputConditions {
		if conditionStatus(o, t) != conditionStatus(n, t) {
			return true
		}
	}
	return false
}

func conditionStatus(mp *wgv1.MeshPeer, t string) string {
	if c := meta.FindStatusCondition(mp.Status.Conditions, t); c != nil {
		return string(c.Status)
	}
	return ""
}

// ownNodeChanged reports whether an update of the agent's own Node changes
// a reconcile's inputs (annotations, pod CIDRs, addresses), not the
// kubelet's status heartbeats.
func ownNodeChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*corev1.Node)
	n, ok2 := newObj.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	return o.UID != n.UID || !maps.Equal(o.Annotations, n.Annotations) || !slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) ||
		o.Spec.PodCIDR != n.Spec.PodCIDR || !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses)
}

// isNamed selects the object named name (the agent's own Node among all),
// deletions whose final state is unknown included.
func isNamed(name string) func(obj any) bool {
	return func(obj any) bool {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			return d.Key == name
		}
		m, err := meta.Accessor(obj)
		return err == nil && m.GetName() == name
	}
}
