package agent

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// What the agent does as it stops. An agent restart (an upgrade, a crash, a
// deleted pod, a node shutdown) must leave the data plane up: pods keep
// their network while no agent runs. Only an uninstall removes it. `helm
// uninstall` runs `wgmesh-operator uninstall` first (the chart's pre-delete
// hook), which deletes the agent DaemonSet with foreground propagation: the
// DaemonSet keeps existing, with a deletionTimestamp, until its pods are
// gone. So an agent that finds its own DaemonSet gone or being deleted as it
// stops knows it is being uninstalled, and removes wgmesh from the node.

// Event reasons of an uninstall, on the agent's Node.
const (
	ReasonUninstalling    = "Uninstalling"
	ReasonUninstalled     = "Uninstalled"
	ReasonUninstallFailed = "UninstallFailed"
)

// exitTimeout bounds each API call the agent makes while it stops: the
// kubelet kills it after the pod's grace period.
const exitTimeout = 5 * time.Second

// DaemonSetDeleted reports whether the DaemonSet key is gone or being
// deleted, with a sentence saying which. An error (the API server
// unreachable, access refused) decides nothing: the caller keeps the data
// plane.
func DaemonSetDeleted(ctx context.Context, r client.Reader, key types.NamespacedName) (bool, string, error) {
	ds := &appsv1.DaemonSet{}
	err := r.Get(ctx, key, ds)
	switch {
	case apierrors.IsNotFound(err):
		return true, fmt.Sprintf("DaemonSet %s no longer exists", key), nil
	case err != nil:
		return false, "", fmt.Errorf("reading DaemonSet %s: %w", key, err)
	case ds.DeletionTimestamp != nil:
		return true, fmt.Sprintf("DaemonSet %s is being deleted (since %s)", key, ds.DeletionTimestamp.UTC().Format(time.RFC3339)), nil
	}
	return false, fmt.Sprintf("DaemonSet %s exists and is not being deleted", key), nil
}

// exitCleanup decides whether the stopping agent removes wgmesh from the
// node, and says why. --cleanup-on-exit always does; otherwise the agent's
// own DaemonSet (Options.DaemonSet) decides; without one, or when it cannot
// be read, the data plane stays.
func exitCleanup(ctx context.Context, o Options, r client.Reader) (bool, string) {
	if o.CleanupOnExit {
		return true, "--cleanup-on-exit"
	}
	if o.DaemonSet.Name == "" {
		return false, "no --daemonset-name: the data plane stays (only --cleanup-on-exit removes it)"
	}
	ctx, cancel := context.WithTimeout(ctx, exitTimeout)
	defer cancel()
	deleted, why, err := DaemonSetDeleted(ctx, r, o.DaemonSet)
	if err != nil {
		return false, err.Error() + "; cannot tell an uninstall from a restart, so the data plane stays"
	}
	if !deleted {
		return false, why + ": a restart or an upgrade, the data plane stays"
	}
	return true, why
}

// nodeEvent records an Event on this node's Node as the agent stops (the
// runtime's Event writer is synchronous: it is written before the agent
// exits). Best effort: a failure is logged.
func (a *Agent) nodeEvent(eventType, reason, note string) {
	ctx, cancel := context.WithTimeout(context.Background(), exitTimeout)
	defer cancel()
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: a.o.NodeName}
	node := &corev1.Node{}
	if err := a.apiReader.Get(ctx, client.ObjectKey{Name: a.o.NodeName}, node); err == nil {
		ref.UID = node.UID
	}
	a.events.Eventf(ref, nil, eventType, reason, "Uninstall", "%s", note)
}
