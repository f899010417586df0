package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent/kube"
	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/probe"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Reasons the agent uses in conditions and Events.
const (
	ReasonLinkConfigured  = "LinkConfigured"
	ReasonLinkFailed      = "LinkFailed"
	ReasonPeersUsable     = "AllPeersUsable"
	ReasonPeersUnusable   = "PeersUnusable"
	ReasonInvalidEndpoint = "InvalidEndpointConfig"
)

// StatusInput is what the agent's own MeshPeer status is computed from.
type StatusInput struct {
	Generation int64
	LinkErr    error // nil when the link and peers are configured
	MTU        int
	Peers      []wgtypes.Peer // device state
	Problems   []mesh.Problem
	Now        time.Time
	// Expected are the node peers this node should reach: every usable
	// node peer but those marked NodeNotReady, by MeshPeer name.
	Expected []string
	// Probes are the reachability probes' states by MeshPeer name; nil when
	// probes are off, and then a peer counts as connected when it had a
	// handshake within 3 minutes (Handshakes, by MeshPeer name).
	Probes     map[string]probe.State
	Handshakes map[string]time.Time
	// HoldDown is how long probes must fail before a peer is unreachable.
	HoldDown time.Duration
	// Learned are the endpoints WireGuard learned for node peers where they
	// differ from the peers' specs (reportedLearned).
	Learned []wgv1.LearnedEndpoint
}

// maxProblemsInMessage bounds the condition message.
const maxProblemsInMessage = 10

// maxUnreachableNames bounds status.unreachablePeers (the CRD's maxItems).
const maxUnreachableNames = 32

// maxLearnedEndpoints bounds status.learnedEndpoints (the CRD's maxItems).
const maxLearnedEndpoints = 32

// reportedLearned are the learned endpoints this node reports in its
// MeshPeer status, address and port: those of node peers whose endpoint is
// not the one this node chose for them (a node behind NAT is reached at its
// router's address and port), by peer, at most maxLearnedEndpoints. The
// operator publishes them as the peer's observed candidates. The operator keeps external peers off an
// address that enough nodes report; external peers' are not reported (a
// laptop that roams would be a status write per node per move).
func reportedLearned(learned []learnedEndpoint, peers []mesh.Peer) []wgv1.LearnedEndpoint {
	spec := map[string]string{}
	for _, p := range peers {
		if p.NodeName != "" {
			spec[p.Name] = p.Endpoint
		}
	}
	var out []wgv1.LearnedEndpoint
	for _, l := range learned {
		ep, node := spec[l.Peer]
		if !node {
			continue
		}
		if hp, err := wgv1.ParseEndpoint(ep, false); err == nil && hp.Addr.Unmap() == l.Addr && hp.Port == l.Port {
			continue
		}
		le := wgv1.LearnedEndpoint{Peer: l.Peer, Address: l.Addr.String()}
		if l.Port != 0 {
			le.Port = int32(l.Port)
		}
		out = append(out, le)
	}
	slices.SortFunc(out, func(a, b wgv1.LearnedEndpoint) int { return strings.Compare(a.Peer, b.Peer) })
	if len(out) > maxLearnedEndpoints {
		out = out[:maxLearnedEndpoints]
	}
	return out
}

// DesiredStatus computes the agent-owned part of its MeshPeer status.
// LastTransitionTime of a condition whose status does not change is taken
// from current, so that re-applying the same state changes nothing.
func DesiredStatus(in StatusInput, current wgv1.MeshPeerStatus) wgv1.MeshPeerStatus {
	var st wgv1.MeshPeerStatus
	var latest time.Time
	for _, p := range in.Peers {
		if p.LastHandshakeTime.After(latest) {
			latest = p.LastHandshakeTime
		}
	}
	unreachable := unreachablePeers(in)
	st.TotalPeers = int32(len(in.Expected))
	st.ConnectedPeers = st.TotalPeers - int32(len(unreachable))
	if len(unreachable) > maxUnreachableNames {
		unreachable = unreachable[:maxUnreachableNames]
	}
	st.UnreachablePeers = unreachable
	st.Connected = fmt.Sprintf("%d/%d", st.ConnectedPeers, st.TotalPeers)
	st.MTU = int32(in.MTU)
	st.ObservedGeneration = in.Generation
	st.LearnedEndpoints = in.Learned
	if !latest.IsZero() {
		t := metav1.NewTime(latest.Truncate(time.Second))
		st.LatestHandshake = &t
	}
	// The message has no counts: they change with every join, and a
	// condition change is written at once.
	ready := metav1.Condition{Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonLinkConfigured,
		Message: "WireGuard link and peers configured", ObservedGeneration: in.Generation}
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

// unreachablePeers are the expected peers the node cannot reach, sorted:
// probes failing for the hold-down, or (probes off) no handshake within
// wireguard.ConnectedWithin.
func unreachablePeers(in StatusInput) []string {
	var out []string
	for _, name := range in.Expected {
		if in.Probes != nil {
			if in.Probes[name].Unreachable(in.Now, in.HoldDown) {
				out = append(out, name)
			}
			continue
		}
		if hs := in.Handshakes[name]; hs.IsZero() || in.Now.Sub(hs) > wireguard.ConnectedWithin {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// membershipDelayPerNode: see statusPolicy.
const membershipDelayPerNode = 300 * time.Millisecond

// statusChange is how a wanted status differs from the current one.
type statusChange int

const (
	statusSame statusChange = iota
	// statusMembership: only the counts changed, by the same amount (a
	// healthy peer joined or left); worth writing, but not at once.
	statusMembership
	// statusSignificant: a condition, the unreachable peers, the learned
	// endpoints, the MTU or the observed generation changed.
	statusSignificant
)

// classifyStatus compares want with current. LatestHandshake alone never
// counts (it would be a heartbeat fanned out to every node).
func classifyStatus(current, want wgv1.MeshPeerStatus) statusChange {
	if current.MTU != want.MTU || current.ObservedGeneration != want.ObservedGeneration ||
		!slices.Equal(current.UnreachablePeers, want.UnreachablePeers) || !slices.Equal(current.LearnedEndpoints, want.LearnedEndpoints) ||
		current.TotalPeers-current.ConnectedPeers != want.TotalPeers-want.ConnectedPeers {
		return statusSignificant
	}
	for _, w := range want.Conditions {
		c := meta.FindStatusCondition(current.Conditions, w.Type)
		if c == nil || c.Status != w.Status || c.Reason != w.Reason || c.Message != w.Message || c.ObservedGeneration != w.ObservedGeneration {
			return statusSignificant
		}
	}
	if current.Connected != want.Connected || current.ConnectedPeers != want.ConnectedPeers || current.TotalPeers != want.TotalPeers {
		return statusMembership
	}
	return statusSame
}

// statusPolicy decides when the agent writes its MeshPeer status: a
// significant change at most once per MinInterval; a membership-only change
// after a random delay in [d/2, d], where d grows with the mesh,
// membershipDelayPerNode per node, between MinInterval and MembershipDelay
// (changes meanwhile ride along). With N nodes every write goes to N
// watchers, and a join moves every node's counts: spreading the N refreshes
// over about N×0.3 s bounds them to a few writes per second cluster-wide
// however large the mesh and however many nodes join, while a small mesh
// shows its counts within seconds. A node failure is handled by NodeNotReady.
type statusPolicy struct {
	MinInterval, MembershipDelay time.Duration
	rand                         func(n int64) int64

	lastWrite     time.Time
	membershipDue time.Time // zero: no membership change pending
}

// decide reports whether to write want now.
func (p *statusPolicy) decide(current, want wgv1.MeshPeerStatus, now time.Time) bool {
	switch classifyStatus(current, want) {
	case statusSame:
		p.membershipDue = time.Time{}
		return false
	case statusMembership:
		if p.membershipDue.IsZero() {
			d := time.Duration(want.TotalPeers+1) * membershipDelayPerNode
			d = min(max(d, p.MinInterval), p.MembershipDelay)
			half := int64(d / 2)
			p.membershipDue = now.Add(time.Duration(half + p.rand(half+1)))
		}
		if now.Before(p.membershipDue) {
			return false
		}
	}
	return p.lastWrite.IsZero() || now.Sub(p.lastWrite) >= p.MinInterval
}

// wrote records a write.
func (p *statusPolicy) wrote(now time.Time) {
	p.lastWrite = now
	p.membershipDue = time.Time{}
}

// ApplyStatus server-side-applies the agent's fields of MeshPeer name's
// status through c as the agent does (the admission policy's tests write
// with it).
func ApplyStatus(ctx context.Context, c client.Client, name string, st wgv1.MeshPeerStatus) error {
	return applyStatus(ctx, &kube.StatusWriter{Client: c, Name: name}, st)
}

// applyStatus server-side-applies the agent's fields of its MeshPeer status
// with its own field manager, so the operator's conditions (KeyConflict,
// ...) and the service NAT's are left alone.
func applyStatus(ctx context.Context, w *kube.StatusWriter, st wgv1.MeshPeerStatus) error {
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	// Explicit zeros, so that the agent keeps owning them.
	status["connectedPeers"] = int64(st.ConnectedPeers)
	status["totalPeers"] = int64(st.TotalPeers)
	return w.Apply(ctx, FieldManager, status)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
