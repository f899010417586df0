package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Reasons the agent uses in conditions and Events.
const (
	ReasonLinkConfigured       = "LinkConfigured"
	ReasonLinkFailed           = "LinkFailed"
	ReasonPeersUsable          = "AllPeersUsable"
	ReasonPeersUnusable        = "PeersUnusable"
	ReasonUnresolvableEndpoint = "UnresolvableEndpoint"
	ReasonInvalidEndpoint      = "InvalidEndpointConfig"
)

// StatusInput is what the agent's own MeshPeer status is computed from.
type StatusInput struct {
	Generation int64
	LinkErr    error // nil when the link and peers are configured
	MTU        int
	Peers      []wgtypes.Peer // device state
	Problems   []mesh.Problem
	Now        time.Time
}

// maxProblemsInMessage bounds the condition message.
const maxProblemsInMessage = 10

// DesiredStatus computes the agent-owned part of its MeshPeer status.
// LastTransitionTime of a condition whose status does not change is taken
// from current, so that re-applying the same state changes nothing.
func DesiredStatus(in StatusInput, current wgv1.MeshPeerStatus) wgv1.MeshPeerStatus {
	var st wgv1.MeshPeerStatus
	var latest time.Time
	for _, p := range in.Peers {
		if wireguard.Connected(p, in.Now) {
			st.ConnectedPeers++
		}
		if p.LastHandshakeTime.After(latest) {
			latest = p.LastHandshakeTime
		}
	}
	st.TotalPeers = int32(len(in.Peers))
	st.Connected = fmt.Sprintf("%d/%d", st.ConnectedPeers, st.TotalPeers)
	st.MTU = int32(in.MTU)
	st.ObservedGeneration = in.Generation
	if !latest.IsZero() {
		t := metav1.NewTime(latest.Truncate(time.Second))
		st.LatestHandshake = &t
	}
	ready := metav1.Condition{Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonLinkConfigured,
		Message: fmt.Sprintf("WireGuard link configured with %d peers, %s connected", st.TotalPeers, st.Connected), ObservedGeneration: in.Generation}
	if in.LinkErr != nil {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonLinkFailed, truncate(in.LinkErr.Error(), 1024)
	}
	degraded := metav1.Condition{Type: wgv1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: ReasonPeersUsable,
		Message: "every MeshPeer is usable", ObservedGeneration: in.Generation}
	if len(in.Problems) > 0 {
		var lines []string
		for i, p := range in.Problems {
			if i == maxProblemsInMessage {
				lines = append(lines, fmt.Sprintf("and %d more", len(in.Problems)-i))
				break
			}
			lines = append(lines, p.String())
		}
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, ReasonPeersUnusable, strings.Join(lines, "; ")
	}
	for _, c := range []metav1.Condition{ready, degraded} {
		c.LastTransitionTime = metav1.NewTime(in.Now.Truncate(time.Second))
		if old := meta.FindStatusCondition(current.Conditions, c.Type); old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		st.Conditions = append(st.Conditions, c)
	}
	return st
}

// StatusChanged reports whether want differs from current in a way worth a
// write: a condition, the connected/total counts, the MTU or the observed
// generation. LatestHandshake alone never causes a write (it would be a
// heartbeat fanned out to every node).
func StatusChanged(current, want wgv1.MeshPeerStatus) bool {
	if current.Connected != want.Connected || current.ConnectedPeers != want.ConnectedPeers ||
		current.TotalPeers != want.TotalPeers || current.MTU != want.MTU || current.ObservedGeneration != want.ObservedGeneration {
		return true
	}
	for _, w := range want.Conditions {
		c := meta.FindStatusCondition(current.Conditions, w.Type)
		if c == nil || c.Status != w.Status || c.Reason != w.Reason || c.Message != w.Message || c.ObservedGeneration != w.ObservedGeneration {
			return true
		}
	}
	return false
}

// ApplyStatus server-side-applies the agent's fields of its MeshPeer status
// with its own field manager, so the operator's conditions (KeyConflict, ...)
// are left alone.
func ApplyStatus(ctx context.Context, c client.Client, name string, st wgv1.MeshPeerStatus) error {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": wgv1.GroupVersion.String(),
		"kind":       "MeshPeer",
		"metadata":   map[string]any{"name": name},
		"status":     obj,
	}}
	// Explicit zeros, so that the agent keeps owning them.
	status := u.Object["status"].(map[string]any)
	status["connectedPeers"] = int64(st.ConnectedPeers)
	status["totalPeers"] = int64(st.TotalPeers)
	err = c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("MeshPeer %s: applying status: %w", name, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
