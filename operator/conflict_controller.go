package operator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

const conflictControllerName = "meshpeer-conflicts"

// Condition reasons written by the conflict controller.
const (
	ReasonKeyConflict        = "DuplicatePublicKey"
	ReasonAllowedIPsConflict = "OverlapsNodePodCIDR"
	reasonNoKeyConflict      = "UniquePublicKey"
	reasonNoAllowedIPsIssue  = "NoOverlap"
)

// meshKey is the single work item: conflicts are a property of the whole
// set of peers, so every change recomputes them all (changes coalesce in
// the work queue).
var meshKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "mesh"}}

// ConflictReconciler marks MeshPeers that share a public key (KeyConflict)
// and non-node MeshPeers whose allowedIPs overlap a node's pod CIDRs
// (AllowedIPsConflict). Agents leave such peers out (MeshPeer.Excluded).
// It never changes a spec.
type ConflictReconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	Metrics  *Metrics
	Now      func() time.Time
	// ClusterCIDRs are --cluster-cidrs; APIServer the API server's
	// addresses (see ConflictInput).
	ClusterCIDRs []netip.Prefix
	APIServer    []netip.Addr

	// lastPass is when the last full pass began (one worker: no lock).
	lastPass time.Time
}

// SetupWithManager registers the controller (leader-elected).
func (r *ConflictReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toMesh := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{meshKey}
	})
	// One check at start, so conditions and gauges are right even when
	// nothing changes.
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &wgv1.MeshPeer{}}
	return ctrl.NewControllerManagedBy(mgr).
		Named(conflictControllerName).
		WatchesRawSource(source.Channel[client.Object](start, toMesh)).
		Watches(&wgv1.MeshPeer{}, toMesh, builder.WithPredicates(peerInputsChanged())).
		Watches(&corev1.Node{}, toMesh, builder.WithPredicates(nodeConflictInputsChanged())).
		Complete(r)
}

// nodeConflictInputsChanged lets through Node updates that change a
// conflict: pod CIDRs, identity, the Node's own addresses and the
// annotations that say which endpoint is its own.
func nodeConflictInputsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			return !ok1 || !ok2 || podCIDRsChanged().Update(e) || !slices.Equal(wgv1.NodeAddrs(o), wgv1.NodeAddrs(n)) ||
				o.Annotations[wgv1.AnnotationForceEndpoint] != n.Annotations[wgv1.AnnotationForceEndpoint] ||
				o.Annotations[wgv1.AnnotationEndpoint] != n.Annotations[wgv1.AnnotationEndpoint]
		},
	}
}

// peerInputsChanged ignores status-only MeshPeer updates other than to the
// operator's own conditions and the learned endpoints (an agent's connected
// count changes nothing here).
func peerInputsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*wgv1.MeshPeer)
			n, ok2 := e.ObjectNew.(*wgv1.MeshPeer)
			if !ok1 || !ok2 || o.Generation != n.Generation || !slices.Equal(o.OwnerReferences, n.OwnerReferences) ||
				!slices.Equal(o.Status.LearnedEndpoints, n.Status.LearnedEndpoints) {
				return true
			}
			for _, t := range []string{wgv1.ConditionKeyConflict, wgv1.ConditionAllowedIPsConflict} {
				a, b := meta.FindStatusCondition(o.Status.Conditions, t), meta.FindStatusCondition(n.Status.Conditions, t)
				if (a == nil) != (b == nil) || (a != nil && (a.Status != b.Status || a.Message != b.Message)) {
					return true
				}
			}
			return false
		},
	}
}

// conflictPassInterval is the least time between two full passes: changes
// meanwhile coalesce into the next (its single work item is already queued
// or is requeued). A thousand nodes joining is then a pass a second, not a
// pass of every peer per join. Agents drop duplicate keys and overlapping
// ranges themselves at once (agent/mesh); these conditions tell the user.
const conflictPassInterval = time.Second

// Reconcile implements reconcile.Reconciler.
func (r *ConflictReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	if wait := time.Until(r.lastPass.Add(conflictPassInterval)); !r.lastPass.IsZero() && wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	r.lastPass = time.Now()
	err := r.reconcile(ctx)
	if err != nil {
		r.Metrics.ReconcileErrors.WithLabelValues(conflictControllerName).Inc()
	}
	return ctrl.Result{}, err
}

func (r *ConflictReconciler) reconcile(ctx context.Context) error {
	// Read-only: the cache's objects, not copies (a full pass per change).
	var peers wgv1.MeshPeerList
	if err := r.Client.List(ctx, &peers, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list MeshPeers: %w", err)
	}
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	problems := FindConflicts(ConflictInput{Peers: peers.Items, Nodes: nodes.Items, ClusterCIDRs: r.ClusterCIDRs, Protected: r.APIServer})
	uids := nodeUIDs(nodes.Items)

	now := metav1.NewTime(r.now())
	var errs []error
	managed, keyConflicts, ipConflicts := 0, 0, 0
	for i := range peers.Items {
		mp := &peers.Items[i]
		if wgv1.IsNodePeer(mp, uids) {
			managed++
		}
		p := problems[mp.Name]
		if p.KeyConflict != "" {
			keyConflicts++
		}
		if p.AllowedIPsConflict != "" {
			ipConflicts++
		}
		want := []wantCondition{
			{Type: wgv1.ConditionKeyConflict, Reason: ReasonKeyConflict, Message: p.KeyConflict,
				OKReason: reasonNoKeyConflict, OKMessage: "no other MeshPeer has this public key"},
			{Type: wgv1.ConditionAllowedIPsConflict, Reason: ReasonAllowedIPsConflict, Message: p.AllowedIPsConflict,
				OKReason: reasonNoAllowedIPsIssue, OKMessage: "allowedIPs are clear of other peers' ranges and of underlay addresses"},
		}
		conds := desiredConditions(mp.Status.Conditions, mp.Generation, want, now)
		if !conditionsChanged(mp.Status.Conditions, conds) {
			continue
		}
		r.eventTransitions(ctx, mp, conds)
		if err := applyConditions(ctx, r.Client, mp, fieldManagerConflicts, conds); err != nil {
			errs = append(errs, err)
		}
	}
	r.Metrics.MeshPeersManaged.Set(float64(managed))
	r.Metrics.KeyConflicts.Set(float64(keyConflicts))
	r.Metrics.AllowedIPsConflicts.Set(float64(ipConflicts))
	r.setEndpointMetrics(peers.Items, nodes.Items)
	return errors.Join(errs...)
}

// setEndpointMetrics counts the learned endpoints nodes report, protected
// or not (one report alone), and the Nodes whose agent announces an address
// that is not theirs.
func (r *ConflictReconciler) setEndpointMetrics(peers []wgv1.MeshPeer, nodes []corev1.Node) {
	protected, single := 0, 0
	for _, l := range LearnedReports(peers, nodes) {
		if len(l.Reporters) >= LearnedQuorum {
			protected++
		} else {
			single++
		}
	}
	r.Metrics.LearnedEndpoints.WithLabelValues("true").Set(float64(protected))
	r.Metrics.LearnedEndpoints.WithLabelValues("false").Set(float64(single))
	foreign := 0
	for i := range nodes {
		if AnnouncesForeignEndpoint(&nodes[i]) {
			foreign++
		}
	}
	r.Metrics.ForeignEndpoints.Set(float64(foreign))
}

// eventTransitions records an Event when a conflict condition appears or
// clears.
func (r *ConflictReconciler) eventTransitions(ctx context.Context, mp *wgv1.MeshPeer, conds []metav1.Condition) {
	for _, c := range conds {
		old := meta.FindStatusCondition(mp.Status.Conditions, c.Type)
		wasTrue := old != nil && old.Status == metav1.ConditionTrue
		switch {
		case c.Status == metav1.ConditionTrue && (!wasTrue || old.Message != c.Message):
			r.Recorder.Eventf(mp, nil, corev1.EventTypeWarning, c.Reason, "CheckConflicts", "MeshPeer %s is left out of the mesh: %s", mp.Name, c.Message)
		case c.Status == metav1.ConditionFalse && wasTrue:
			r.Recorder.Eventf(mp, nil, corev1.EventTypeNormal, c.Reason, "CheckConflicts", "MeshPeer %s: %s resolved: %s", mp.Name, c.Type, c.Message)
		}
		log.FromContext(ctx).Info("MeshPeer condition changed", "meshpeer", mp.Name, "type", c.Type, "status", c.Status, "message", c.Message)
	}
}

func (r *ConflictReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}
