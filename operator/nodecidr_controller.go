package operator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/wgmesh/wgmesh/operator/cidr"
	"github.com/wgmesh/wgmesh/podnet"
)

const nodeCIDRControllerName = "node-podcidr"

// Event reasons on Nodes.
const (
	ReasonPodCIDRAssigned      = "PodCIDRAssigned"
	ReasonPodCIDRPoolExhausted = "PodCIDRPoolExhausted"
)

// exhaustedRetry is how often a node waiting for a free CIDR is retried
// even when no release wakes it.
const exhaustedRetry = time.Minute

// NodeCIDRReconciler gives every Node its pod CIDR(s), once, when
// spec.podCIDRs is empty.
//
// The allocator's state is rebuilt from a live list of all Nodes the first
// time the reconciler runs, which is after this replica became leader: CIDRs
// written by an earlier leader are then marked used before anything is
// handed out. Writes carry the Node's resourceVersion, so a stale writer
// fails instead of overwriting.
type NodeCIDRReconciler struct {
	Client    client.Client
	APIReader client.Reader // live reads (not the cache), for the rebuild
	Allocator *cidr.Allocator
	Recorder  recorder.EventRecorder
	Metrics   *Metrics

	mu       sync.Mutex
	ready    bool
	assigned map[string]nodeAssignment // by node name
	waiting  map[string]bool           // nodes that found the pool exhausted
	wake     chan event.GenericEvent
}

// nodeAssignment is what this replica knows a node holds (or is being
// given): kept so a deleted node's CIDRs can be released and so a node
// whose write the cache has not shown yet is not given a second CIDR.
type nodeAssignment struct {
	uid   types.UID
	cidrs []netip.Prefix
}

// SetupWithManager registers the controller (leader-elected).
func (r *NodeCIDRReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.assigned = map[string]nodeAssignment{}
	r.waiting = map[string]bool{}
	r.wake = make(chan event.GenericEvent, 1024)
	r.Metrics.setPools(r.Allocator.Stats())
	// Rebuild as soon as this replica leads, not only at the first Node
	// event (Runnables need leader election unless they say otherwise).
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if err := r.rebuild(ctx); err != nil {
			log.FromContext(ctx).Error(err, "rebuild pod CIDR allocator; retried on the next Node event")
		}
		r.Metrics.setPools(r.Allocator.Stats())
		return nil
	})); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(nodeCIDRControllerName).
		For(&corev1.Node{}, builder.WithPredicates(podCIDRsChanged())).
		WatchesRawSource(source.Channel[client.Object](r.wake, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 16}).
		Complete(r)
}

// podCIDRsChanged lets through creates, deletes and updates that change a
// node's identity or pod CIDRs (not status heartbeats).
func podCIDRsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			return !ok1 || !ok2 || o.UID != n.UID || !slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) || o.Spec.PodCIDR != n.Spec.PodCIDR
		},
	}
}

// Reconcile implements reconcile.Reconciler.
func (r *NodeCIDRReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req)
	if err != nil && ctx.Err() != nil {
		return ctrl.Result{}, nil // shutting down (or leadership lost): the next leader rebuilds
	}
	if err != nil {
		r.Metrics.ReconcileErrors.WithLabelValues(nodeCIDRControllerName).Inc()
	}
	return res, err
}

func (r *NodeCIDRReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	if err := r.rebuild(ctx); err != nil {
		return ctrl.Result{}, err
	}
	// Evaluated at return, so the gauges include what this reconcile did.
	defer func() { r.Metrics.setPools(r.Allocator.Stats()) }()

	var node corev1.Node
	if err := r.Client.Get(ctx, req.NamespacedName, &node); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("node %s: %w", req.Name, err)
	}

	cidrs, pending, err := r.desired(&node)
	if err != nil {
		var ex *cidr.ExhaustedError
		if errors.As(err, &ex) {
			r.Metrics.PoolExhausted.WithLabelValues(ex.Pool.String()).Inc()
			r.Recorder.Eventf(&node, nil, corev1.EventTypeWarning, ReasonPodCIDRPoolExhausted, "AllocatePodCIDR",
				"node %s gets no pod CIDR: %v", node.Name, ex)
			logger.Info("pod CIDR pool exhausted", "node", node.Name, "pool", ex.Pool.String())
			return ctrl.Result{RequeueAfter: exhaustedRetry}, nil
		}
		return ctrl.Result{}, err
	}
	if !pending {
		return ctrl.Result{}, nil
	}

	strs := make([]string, len(cidrs))
	for i, c := range cidrs {
		strs[i] = c.String()
	}
	patch := client.MergeFromWithOptions(node.DeepCopy(), client.MergeFromWithOptimisticLock{})
	node.Spec.PodCIDR = strs[0]
	node.Spec.PodCIDRs = strs
	if err := r.Client.Patch(ctx, &node, patch); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			r.forget(node.Name)
			return ctrl.Result{}, nil
		case apierrors.IsConflict(err):
			// Our cache is behind: keep the reservation and look again
			// once the cache has caught up.
			logger.V(1).Info("node changed while assigning pod CIDRs; retrying", "node", node.Name)
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("node %s: write spec.podCIDRs %s: %w", node.Name, strings.Join(strs, ","), err)
	}
	r.Metrics.PodCIDRsAssigned.Inc()
	r.Recorder.Eventf(&node, nil, corev1.EventTypeNormal, ReasonPodCIDRAssigned, "AllocatePodCIDR",
		"assigned pod CIDRs %s", strings.Join(strs, ","))
	logger.Info("assigned pod CIDRs", "node", node.Name, "podCIDRs", strs)
	return ctrl.Result{}, nil
}

// desired returns the CIDRs the node should have and whether they still
// need writing, reserving new ones when the node has none.
func (r *NodeCIDRReconciler) desired(node *corev1.Node) ([]netip.Prefix, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, known := r.assigned[node.Name]
	if known && prev.uid != node.UID {
		// A new Node with an old name: the old one's CIDRs are free.
		r.Allocator.Release(prev.cidrs...)
		delete(r.assigned, node.Name)
		known = false
		r.wakeWaitingLocked()
	}

	if have := podnet.NodeCIDRs(node); len(have) > 0 {
		// Someone (we, earlier, or another allocator) set them: they count
		// as used; a reservation of ours that lost is freed.
		r.Allocator.Occupy(have...)
		if known {
			for _, c := range prev.cidrs {
				if !slices.Contains(have, c) {
					r.Allocator.Release(c)
				}
			}
		}
		r.assigned[node.Name] = nodeAssignment{uid: node.UID, cidrs: have}
		delete(r.waiting, node.Name)
		return have, false, nil
	}

	if known {
		return prev.cidrs, true, nil // written or being written; the cache has not shown it yet
	}
	cidrs, err := r.Allocator.Allocate()
	if err != nil {
		r.waiting[node.Name] = true
		return nil, false, err
	}
	delete(r.waiting, node.Name)
	r.assigned[node.Name] = nodeAssignment{uid: node.UID, cidrs: cidrs}
	return cidrs, true, nil
}

// forget releases a deleted node's CIDRs and wakes nodes waiting for room.
func (r *NodeCIDRReconciler) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.waiting, name)
	prev, ok := r.assigned[name]
	if !ok {
		return
	}
	delete(r.assigned, name)
	r.Allocator.Release(prev.cidrs...)
	r.wakeWaitingLocked()
}

func (r *NodeCIDRReconciler) wakeWaitingLocked() {
	for name := range r.waiting {
		n := &corev1.Node{}
		n.Name = name
		select {
		case r.wake <- event.GenericEvent{Object: n}:
		default: // the periodic retry will get it
		}
	}
}

// rebuild marks every CIDR already on a Node as used, from a live list,
// once per leadership (this controller only runs on the leader).
func (r *NodeCIDRReconciler) rebuild(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ready {
		return nil
	}
	var nodes corev1.NodeList
	if err := r.APIReader.List(ctx, &nodes); err != nil {
		return fmt.Errorf("list nodes to rebuild the pod CIDR allocator: %w", err)
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if have := podnet.NodeCIDRs(n); len(have) > 0 {
			r.Allocator.Occupy(have...)
			r.assigned[n.Name] = nodeAssignment{uid: n.UID, cidrs: have}
		}
	}
	r.ready = true
	log.FromContext(ctx).Info("pod CIDR allocator rebuilt from nodes", "nodes", len(nodes.Items), "pools", r.Allocator.Stats())
	return nil
}
