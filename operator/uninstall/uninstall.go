// Package uninstall is `wgmesh-operator uninstall`, the chart's pre-delete
// hook: before Helm deletes anything, it deletes the agent DaemonSet with
// foreground propagation and waits until its pods are gone, then the
// userspace WireGuard DaemonSet likewise. Foreground deletion keeps each
// DaemonSet, with a deletionTimestamp, until its pods are gone; an agent
// that sees that as it stops removes wgmesh from its node (agent.exitCleanup)
// while its RBAC, the admission policy and the API server address it uses
// still exist. The WireGuard pods go last, so that the agents still find the
// link they remove. The wait is bounded: on timeout it fails naming the pods
// still present.
package uninstall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultTimeout bounds the whole uninstall (--timeout).
const DefaultTimeout = 2 * time.Minute

// Options configure Run.
type Options struct {
	Namespace string
	// DaemonSets are deleted one after the other, in this order, each once
	// the previous one's pods are gone.
	DaemonSets []string
	// Timeout bounds the whole run (default DefaultTimeout).
	Timeout time.Duration
	// Poll is how often the pods are listed (default 1s); Progress how
	// often a wait is logged while nothing changes (default 10s).
	Poll, Progress time.Duration
	Log            logr.Logger
}

// Run deletes the DaemonSets and waits for their pods. A DaemonSet that does
// not exist is skipped; one already being deleted is waited for.
func Run(ctx context.Context, c client.Client, o Options) error {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Progress <= 0 {
		o.Progress = 10 * time.Second
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	for _, name := range o.DaemonSets {
		if err := deleteAndWait(ctx, c, o, types.NamespacedName{Namespace: o.Namespace, Name: name}, began); err != nil {
			return err
		}
	}
	o.Log.Info("uninstall done: every DaemonSet's pods are gone", "daemonSets", o.DaemonSets, "namespace", o.Namespace,
		"duration", time.Since(began).Round(time.Millisecond).String())
	return nil
}

func deleteAndWait(ctx context.Context, c client.Client, o Options, key types.NamespacedName, began time.Time) error {
	log := o.Log.WithValues("daemonSet", key.String())
	ds := &appsv1.DaemonSet{}
	if err := c.Get(ctx, key, ds); apierrors.IsNotFound(err) {
		log.Info("DaemonSet not found: nothing to stop")
		return nil
	} else if err != nil {
		return fmt.Errorf("reading DaemonSet %s: %w", key, err)
	}
	if ds.DeletionTimestamp == nil {
		err := c.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationForeground), client.Preconditions{UID: &ds.UID})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			log.Info("DaemonSet already gone")
			return nil
		}
		if err != nil {
			return fmt.Errorf("deleting DaemonSet %s: %w", key, err)
		}
		log.Info("deleting DaemonSet (foreground: it stays until its pods are gone, so each agent knows it is being uninstalled)",
			"uid", ds.UID)
	} else {
		log.Info("DaemonSet already being deleted; waiting for its pods", "uid", ds.UID, "since", ds.DeletionTimestamp.UTC().Format(time.RFC3339))
	}

	var last []corev1.Pod
	lastLog := time.Time{}
	for {
		pods, err := ownedPods(ctx, c, ds)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil {
			if len(pods) == 0 {
				log.Info("DaemonSet's pods are gone", "elapsed", time.Since(began).Round(time.Millisecond).String())
				return nil
			}
			changed := !slices.Equal(podNames(pods), podNames(last))
			if changed || time.Since(lastLog) >= o.Progress {
				log.Info("waiting for the DaemonSet's pods to stop", "remaining", len(pods), "pods", describe(pods))
				lastLog = time.Now()
			}
			last = pods
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("timed out after %s waiting for the pods of DaemonSet %s to stop; still present: %s (a node that is down never confirms its pod's end: delete such pods with --force, then run helm uninstall again; or skip this step with helm uninstall --no-hooks, which leaves wgmesh on the nodes)",
					o.Timeout, key, strings.Join(describe(last), ", "))
			}
			return ctx.Err()
		case <-time.After(o.Poll):
		}
	}
}

// ownedPods lists the pods whose controller is ds (by UID: a DaemonSet made
// again under the same name is another one).
func ownedPods(ctx context.Context, c client.Client, ds *appsv1.DaemonSet) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("DaemonSet %s/%s spec.selector: %w", ds.Namespace, ds.Name, err)
	}
	list := &corev1.PodList{}
	if err := c.List(ctx, list, client.InNamespace(ds.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing the pods of DaemonSet %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if ref := metav1.GetControllerOf(&p); ref != nil && ref.UID == ds.UID {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func podNames(pods []corev1.Pod) []string {
	out := make([]string, 0, len(pods))
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// describe names each pod with its node and whether it is terminating.
func describe(pods []corev1.Pod) []string {
	out := make([]string, 0, len(pods))
	for _, p := range pods {
		s := p.Name + " on node " + p.Spec.NodeName
		if p.Spec.NodeName == "" {
			s = p.Name + " (not scheduled)"
		}
		if p.DeletionTimestamp != nil {
			s += " (terminating since " + p.DeletionTimestamp.UTC().Format(time.RFC3339) + ")"
		}
		out = append(out, s)
	}
	return out
}
