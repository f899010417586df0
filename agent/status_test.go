package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/agent/mesh"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func TestDesiredStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	peers := []wgtypes.Peer{
		{LastHandshakeTime: now.Add(-time.Minute)},
		{LastHandshakeTime: now.Add(-10 * time.Minute)},
		{},
	}
	st := DesiredStatus(StatusInput{Generation: 3, MTU: 1420, Peers: peers, Now: now}, wgv1.MeshPeerStatus{})
	if st.Connected != "1/3" || st.ConnectedPeers != 1 || st.TotalPeers != 3 || st.MTU != 1420 || st.ObservedGeneration != 3 {
		t.Fatalf("status = %+v", st)
	}
	if st.LatestHandshake == nil || !st.LatestHandshake.Time.Equal(now.Add(-time.Minute)) {
		t.Fatalf("latestHandshake = %v", st.LatestHandshake)
	}
	if c := meta.FindStatusCondition(st.Conditions, wgv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready = %+v", c)
	}
	if c := meta.FindStatusCondition(st.Conditions, wgv1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("Degraded = %+v", c)
	}

	// Same state later: no change worth writing, transition times kept.
	later := DesiredStatus(StatusInput{Generation: 3, MTU: 1420, Peers: peers, Now: now.Add(30 * time.Second)}, st)
	if StatusChanged(st, later) {
		t.Fatal("identical state reported as changed")
	}
	if !meta.FindStatusCondition(later.Conditions, wgv1.ConditionReady).LastTransitionTime.Equal(&meta.FindStatusCondition(st.Conditions, wgv1.ConditionReady).LastTransitionTime) {
		t.Fatal("transition time moved without a transition")
	}

	// Only the handshake time moves: still no write.
	peers2 := []wgtypes.Peer{{LastHandshakeTime: now.Add(20 * time.Second)}, peers[1], peers[2]}
	hs := DesiredStatus(StatusInput{Generation: 3, MTU: 1420, Peers: peers2, Now: now.Add(30 * time.Second)}, st)
	if StatusChanged(st, hs) {
		t.Fatal("a handshake-only change must not cause a status write")
	}

	// Connected count changes: write.
	peers3 := []wgtypes.Peer{peers[0], {LastHandshakeTime: now}, {}}
	if !StatusChanged(st, DesiredStatus(StatusInput{Generation: 3, MTU: 1420, Peers: peers3, Now: now}, st)) {
		t.Fatal("connected count change not detected")
	}

	// Problems: Degraded True, naming peer and value.
	pr := DesiredStatus(StatusInput{Generation: 3, MTU: 1420, Peers: peers, Now: now,
		Problems: []mesh.Problem{{Peer: "ext", Field: "spec.endpoint", Value: "nx.invalid:51820", Detail: "cannot resolve"}}}, st)
	c := meta.FindStatusCondition(pr.Conditions, wgv1.ConditionDegraded)
	if c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "ext") || !strings.Contains(c.Message, "nx.invalid:51820") {
		t.Fatalf("Degraded = %+v", c)
	}
	if !StatusChanged(st, pr) {
		t.Fatal("problem not detected as change")
	}

	// Link failure: Ready False.
	lf := DesiredStatus(StatusInput{Generation: 3, LinkErr: errors.New("boom"), Now: now}, st)
	if c := meta.FindStatusCondition(lf.Conditions, wgv1.ConditionReady); c.Status != metav1.ConditionFalse || c.Message != "boom" {
		t.Fatalf("Ready = %+v", c)
	}
}
