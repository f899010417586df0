package operator

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/podnet"
)

const meshPeerControllerName = "node-meshpeer"

// podCIDRGrace is how long a new node's MeshPeer waits for its pod CIDRs
// (see reconcile).
const podCIDRGrace = 5 * time.Second

// conflictRetry is how soon a write that lost an optimistic-concurrency
// race is retried.
const conflictRetry = 200 * time.Millisecond

// Event reasons for node MeshPeers.
const (
	ReasonMeshPeerCreated   = "MeshPeerCreated"
	ReasonMeshPeerUpdated   = "MeshPeerUpdated"
	ReasonMeshPeerDeleted   = "MeshPeerDeleted"
	ReasonMeshPeerAdopted   = "MeshPeerAdopted"
	ReasonPodCIDRConflict   = "PodCIDRConflict"
	ReasonInvalidAnnotation = "InvalidAnnotation"
	reasonAnnotationsValid  = "AnnotationsValid"
	ReasonNodeNotReady      = "NodeNotReady"
	reasonNodeReady         = "NodeReady"
)

// MeshPeerReconciler keeps one MeshPeer per Node, built from the node's
// annotations and podCIDRs (see doc.go).
type MeshPeerReconciler struct {
	Client   client.Client
	Scheme   *runtime.Scheme
	Recorder recorder.EventRecorder
	Metrics  *Metrics
	// Now is the clock for condition times; time.Now when nil.
	Now func() time.Time
	// ClusterCIDRs are --cluster-cidrs: pod CIDRs outside them are never
	// published.
	ClusterCIDRs []netip.Prefix
	// Locations say where a node's location comes from.
	Locations LocationOptions
}

// SetupWithManager registers the controller (leader-elected).
func (r *MeshPeerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named(meshPeerControllerName).
		For(&corev1.Node{}, builder.WithPredicates(nodePeerInputsChanged())).
		Owns(&wgv1.MeshPeer{}).
		// A node whose pod CIDRs were withheld (they overlapped another
		// node's) gets them once that other node changes or goes.
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.overlappingNodes), builder.WithPredicates(podCIDRsChanged())).
		// A node's observed candidates come from the others' reports
		// (status.learnedEndpoints): a changed report reconciles the nodes
		// it names, before and after.
		Watches(&wgv1.MeshPeer{}, handler.EnqueueRequestsFromMapFunc(observedNodes), builder.WithPredicates(learnedEndpointsChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: 16}).
		Complete(r)
}

// learnedEndpointsChanged lets through MeshPeer events that change the
// learned endpoints nodes report.
func learnedEndpointsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*wgv1.MeshPeer)
			n, ok2 := e.ObjectNew.(*wgv1.MeshPeer)
			return !ok1 || !ok2 || !slices.Equal(o.Status.LearnedEndpoints, n.Status.LearnedEndpoints)
		},
		CreateFunc: func(e event.CreateEvent) bool {
			mp, ok := e.Object.(*wgv1.MeshPeer)
			return !ok || len(mp.Status.LearnedEndpoints) > 0
		},
		DeleteFunc: func(e event.DeleteEvent) bool {
			mp, ok := e.Object.(*wgv1.MeshPeer)
			return !ok || len(mp.Status.LearnedEndpoints) > 0
		},
	}
}

// observedNodes maps a MeshPeer to the nodes its learned endpoints name
// (for an update, controller-runtime maps the old and the new object).
func observedNodes(_ context.Context, obj client.Object) []reconcile.Request {
	mp, ok := obj.(*wgv1.MeshPeer)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	for _, n := range observedPeersOf(mp) {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: n}})
	}
	return out
}

// nodePeerInputsChanged lets through node updates that change what its
// MeshPeer says: annotations, pod CIDRs, identity, readiness, own addresses
// (which the announced endpoint must be one of), not the kubelet's periodic
// status updates.
func nodePeerInputsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			return !ok1 || !ok2 || o.UID != n.UID || !slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) ||
				o.Spec.PodCIDR != n.Spec.PodCIDR || !maps.Equal(o.Annotations, n.Annotations) ||
				nodeNotReadyMessage(o) != nodeNotReadyMessage(n) || !slices.Equal(wgv1.NodeAddrs(o), wgv1.NodeAddrs(n)) ||
				NodeLocation(o, LocationOptions{FromRegion: true}) != NodeLocation(n, LocationOptions{FromRegion: true}) ||
				o.Labels[wgv1.LabelLocation] != n.Labels[wgv1.LabelLocation] || NodeRelay(o) != NodeRelay(n)
		},
	}
}

// Reconcile implements reconcile.Reconciler.
func (r *MeshPeerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	after, err := r.reconcile(ctx, req.Name)
	if err == nil && after > 0 {
		return ctrl.Result{RequeueAfter: after}, nil
	}
	if apierrors.IsConflict(err) {
		// The cache was behind our own last write; look again shortly.
		log.FromContext(ctx).V(1).Info("MeshPeer changed meanwhile; retrying", "error", err.Error())
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	if err != nil {
		r.Metrics.ReconcileErrors.WithLabelValues(meshPeerControllerName).Inc()
	}
	return ctrl.Result{}, err
}

// reconcile syncs the MeshPeer of node name; a positive duration asks to
// look again after it.
func (r *MeshPeerReconciler) reconcile(ctx context.Context, name string) (time.Duration, error) {
	logger := log.FromContext(ctx)

	var existing *wgv1.MeshPeer
	var mp wgv1.MeshPeer
	switch err := r.Client.Get(ctx, client.ObjectKey{Name: name}, &mp); {
	case err == nil:
		existing = &mp
	case !apierrors.IsNotFound(err):
		return 0, fmt.Errorf("MeshPeer %s: %w", name, err)
	}

	var node corev1.Node
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
		if !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("node %s: %w", name, err)
		}
		// The garbage collector deletes it too (owner reference); doing it
		// here takes the peer out of the mesh without waiting for it.
		if existing != nil && ownedByNodeNamed(existing, name) {
			return 0, r.delete(ctx, existing)
		}
		return 0, nil
	}

	// A MeshPeer made in advance under the node's name (by hand, or left
	// by an older Node of that name) never locks the node out: the operator
	// takes it over, spec and owner, below.
	adopt := existing != nil && !controlledBy(existing, &node)

	ann := ParseNode(&node)
	var current *wgv1.MeshPeerSpec
	if existing != nil {
		current = &existing.Spec
	}
	spec, ok := DesiredPeerSpec(node.Name, podnet.NodeCIDRStrings(&node), ann, current)
	invalidMsg := invalidAnnotationsMessage(ann)
	if ok {
		in := PathInputs{Location: NodeLocation(&node, r.Locations), Relay: NodeRelay(&node)}
		if in.Location != "" {
			// Only a node with a location takes part in path choice: a
			// cluster without labels sees no spec change when a NAT
			// mapping moves.
			var err error
			if in.Observed, err = r.observed(ctx, node.Name, ann.Candidates); err != nil {
				return 0, err
			}
		}
		SetPaths(&spec, in, ann, current)
	}
	if ok && len(spec.AllowedIPs) > 0 {
		withheld, err := r.podCIDRConflict(ctx, node.Name)
		if err != nil {
			return 0, err
		}
		if withheld != "" {
			// Never publish two node MeshPeers whose allowedIPs overlap:
			// this node stays out (the conflict controller marks its
			// MeshPeer AllowedIPsConflict) and the others keep working.
			spec.AllowedIPs = nil
			if existing == nil || len(existing.Spec.AllowedIPs) > 0 || adopt {
				r.Recorder.Eventf(&node, nil, corev1.EventTypeWarning, ReasonPodCIDRConflict, "SyncMeshPeer", "%s", withheld)
				logger.Info("pod CIDRs withheld from the mesh", "node", node.Name, "reason", withheld)
			}
		}
	}

	if !ok {
		if invalidMsg != "" {
			r.Recorder.Eventf(&node, nil, corev1.EventTypeWarning, ReasonInvalidAnnotation, "SyncMeshPeer",
				"node %s gets no MeshPeer: %s", node.Name, invalidMsg)
		}
		if existing != nil {
			return 0, r.delete(ctx, existing)
		}
		return 0, nil
	}

	if existing == nil && len(podnet.NodeCIDRStrings(&node)) == 0 {
		// A new node gets its pod CIDRs within moments: wait for them
		// (the Node update brings this node back) rather than publish a
		// MeshPeer without allowedIPs and update it right after, a second
		// write, Event and reconcile of every agent per join. A node still
		// without CIDRs after the grace gets its MeshPeer anyway.
		if wait := podCIDRGrace - r.now().Sub(node.CreationTimestamp.Time); wait > 0 {
			logger.V(1).Info("waiting for the node's pod CIDRs before publishing its MeshPeer", "node", node.Name, "for", wait)
			return min(wait, podCIDRGrace), nil
		}
	}

	switch {
	case existing == nil:
		mp = wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: node.Name, Annotations: map[string]string{wgv1.AnnotationPublicKeySince: r.now().UTC().Format(time.RFC3339Nano)}}, Spec: spec}
		if err := controllerutil.SetControllerReference(&node, &mp, r.Scheme); err != nil {
			return 0, fmt.Errorf("MeshPeer %s: owner reference: %w", name, err)
		}
		if err := r.Client.Create(ctx, &mp); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return 0, fmt.Errorf("MeshPeer %s appeared while creating it; retrying: %w", name, err)
			}
			return 0, fmt.Errorf("MeshPeer %s: create: %w", name, err)
		}
		r.Recorder.Eventf(&mp, &node, corev1.EventTypeNormal, ReasonMeshPeerCreated, "SyncMeshPeer",
			"created MeshPeer for node %s: %s", node.Name, describeSpec(spec))
		logger.Info("created MeshPeer", "meshpeer", mp.Name, "publicKey", spec.PublicKey, "endpoint", spec.Endpoint, "allowedIPs", spec.AllowedIPs)
		existing = &mp
	case !SpecEqual(existing.Spec, spec) || adopt:
		before := describeSpec(existing.Spec)
		if adopt || existing.Spec.PublicKey != spec.PublicKey || existing.Annotations[wgv1.AnnotationPublicKeySince] == "" {
			if existing.Annotations == nil {
				existing.Annotations = map[string]string{}
			}
			existing.Annotations[wgv1.AnnotationPublicKeySince] = r.now().UTC().Format(time.RFC3339Nano)
		}
		if adopt {
			r.Recorder.Eventf(existing, &node, corev1.EventTypeWarning, ReasonMeshPeerAdopted, "SyncMeshPeer",
				"MeshPeer %s was not controlled by Node %s (UID %s); the operator takes it over: a MeshPeer named after a node is that node's (was %s)", name, name, node.UID, before)
		}
		existing.Spec = spec
		existing.OwnerReferences = nil
		if err := controllerutil.SetControllerReference(&node, existing, r.Scheme); err != nil {
			return 0, fmt.Errorf("MeshPeer %s: owner reference: %w", name, err)
		}
		// Update carries the cached resourceVersion: a stale cache gets a
		// conflict and a retry, never a lost write.
		if err := r.Client.Update(ctx, existing); err != nil {
			return 0, fmt.Errorf("MeshPeer %s: update spec: %w", name, err)
		}
		r.Recorder.Eventf(existing, &node, corev1.EventTypeNormal, ReasonMeshPeerUpdated, "SyncMeshPeer",
			"updated MeshPeer for node %s: was %s, now %s", node.Name, before, describeSpec(spec))
		logger.Info("updated MeshPeer", "meshpeer", existing.Name, "publicKey", spec.PublicKey, "endpoint", spec.Endpoint, "allowedIPs", spec.AllowedIPs)
	}

	// Both conditions come from the Node and share one field manager, so a
	// change is one write.
	want := []wantCondition{{
		Type: wgv1.ConditionInvalidAnnotation, Reason: ReasonInvalidAnnotation, Message: invalidMsg,
		OKReason: reasonAnnotationsValid, OKMessage: "the node's wgmesh annotations are valid",
	}, {
		Type: wgv1.ConditionNodeNotReady, Reason: ReasonNodeNotReady, Message: nodeNotReadyMessage(&node),
		OKReason: reasonNodeReady, OKMessage: "the node is Ready",
	}}
	conds := desiredConditions(existing.Status.Conditions, existing.Generation, want, metav1.NewTime(r.now()))
	if !conditionsChanged(existing.Status.Conditions, conds) {
		return 0, nil
	}
	if invalidMsg != "" {
		r.Recorder.Eventf(&node, existing, corev1.EventTypeWarning, ReasonInvalidAnnotation, "SyncMeshPeer",
			"MeshPeer %s keeps its last good spec: %s", existing.Name, invalidMsg)
	}
	return 0, applyConditions(ctx, r.Client, existing, fieldManagerAnnotations, conds)
}

// nodeNotReadyMessage says why a Node is not Ready ("" when it is, or when
// it has no Ready condition at all: nothing has judged it yet). Only the
// condition's status and reason count, never its heartbeat times, so a
// kubelet's periodic status update changes nothing.
func nodeNotReadyMessage(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type != corev1.NodeReady || c.Status == corev1.ConditionTrue {
			continue
		}
		return fmt.Sprintf("Node %s is not Ready (Ready=%s, %s); other nodes leave it out of their connected/total peers until it is", n.Name, c.Status, c.Reason)
	}
	return ""
}

func (r *MeshPeerReconciler) delete(ctx context.Context, mp *wgv1.MeshPeer) error {
	if err := r.Client.Delete(ctx, mp, client.Preconditions{UID: &mp.UID}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("MeshPeer %s: delete: %w", mp.Name, err)
	}
	r.Recorder.Eventf(mp, nil, corev1.EventTypeNormal, ReasonMeshPeerDeleted, "SyncMeshPeer",
		"deleted MeshPeer %s: its node is gone or has no wgmesh.io/public-key", mp.Name)
	log.FromContext(ctx).Info("deleted MeshPeer", "meshpeer", mp.Name)
	return nil
}

// podCIDRConflict says why this node's pod CIDRs may not be published
// (PodCIDRConflicts), or "".
func (r *MeshPeerReconciler) podCIDRConflict(ctx context.Context, name string) (string, error) {
	// Read-only lists straight from the cache, without a deep copy of every
	// object: this runs for every node event, and copying a thousand Nodes
	// and MeshPeers each time was most of the operator's CPU at scale.
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return "", fmt.Errorf("list nodes: %w", err)
	}
	var peers wgv1.MeshPeerList
	if err := r.Client.List(ctx, &peers, client.UnsafeDisableDeepCopy); err != nil {
		return "", fmt.Errorf("list MeshPeers: %w", err)
	}
	return PodCIDRConflictOf(name, nodes.Items, peers.Items, r.ClusterCIDRs), nil
}

// observed are the observed candidates of node name (ObservedCandidates),
// from the cache without copies.
func (r *MeshPeerReconciler) observed(ctx context.Context, name string, own []wgv1.Candidate) ([]wgv1.Candidate, error) {
	var peers wgv1.MeshPeerList
	if err := r.Client.List(ctx, &peers, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list MeshPeers: %w", err)
	}
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	uids := make(map[string]types.UID, len(nodes.Items))
	for i := range nodes.Items {
		uids[nodes.Items[i].Name] = nodes.Items[i].UID
	}
	return ObservedCandidates(name, peers.Items, func(n string) (types.UID, bool) { u, ok := uids[n]; return u, ok }, own), nil
}

// overlappingNodes maps a Node whose pod CIDRs changed (or that went away)
// to the other Nodes whose pod CIDRs overlap its own.
func (r *MeshPeerReconciler) overlappingNodes(ctx context.Context, obj client.Object) []reconcile.Request {
	changed, ok := obj.(*corev1.Node)
	if !ok {
		return nil
	}
	mine := podnet.NodeCIDRs(changed)
	var nodes corev1.NodeList
	if len(mine) == 0 || r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy) != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if n.Name == changed.Name {
			continue
		}
		for _, p := range podnet.NodeCIDRs(n) {
			if slices.ContainsFunc(mine, p.Overlaps) {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: n.Name}})
				break
			}
		}
	}
	return out
}

func (r *MeshPeerReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func invalidAnnotationsMessage(ann NodeAnnotations) string {
	var parts []string
	for _, e := range ann.Invalid {
		parts = append(parts, e.Error())
	}
	return strings.Join(parts, "; ")
}

func describeSpec(s wgv1.MeshPeerSpec) string {
	ka := "off"
	if s.PersistentKeepalive != nil {
		ka = fmt.Sprintf("%ds", *s.PersistentKeepalive)
	}
	ep := string(s.Endpoint)
	if ep == "" {
		ep = "none"
	}
	ips := make([]string, len(s.AllowedIPs))
	for i, c := range s.AllowedIPs {
		ips[i] = string(c)
	}
	out := fmt.Sprintf("publicKey %s, endpoint %s, allowedIPs [%s], persistentKeepalive %s", s.PublicKey, ep, strings.Join(ips, ","), ka)
	if s.Location != "" || len(s.Candidates) > 0 {
		loc := string(s.Location)
		if loc == "" {
			loc = "none"
		}
		out += fmt.Sprintf(", location %s, candidates %s", loc, joinCandidates(s.Candidates))
	}
	if s.Relay != "" {
		out += ", relay " + string(s.Relay)
	}
	return out
}

// ownedByNodeNamed reports whether the MeshPeer's controller is a Node with
// this name (of any UID: a re-created node takes over its old peer).
func ownedByNodeNamed(mp *wgv1.MeshPeer, name string) bool {
	ref := metav1.GetControllerOf(mp)
	return ref != nil && ref.APIVersion == "v1" && ref.Kind == "Node" && ref.Name == name
}

func controlledBy(mp *wgv1.MeshPeer, node *corev1.Node) bool {
	ref := metav1.GetControllerOf(mp)
	return ref != nil && ref.UID == node.UID && ref.Kind == "Node"
}
