package operator

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func nodePeer(name, key string, cidrs ...wgv1.CIDR) wgv1.MeshPeer {
	yes := true
	return wgv1.MeshPeer{
		ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: types.UID("u-" + name), Controller: &yes}}},
		Spec:       wgv1.MeshPeerSpec{NodeName: name, PublicKey: wgv1.PublicKey(key), AllowedIPs: cidrs},
	}
}

func extPeer(name, key string, cidrs ...wgv1.CIDR) wgv1.MeshPeer {
	return wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(key), AllowedIPs: cidrs}}
}

func node(name string, cidrs ...string) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
}

func TestFindConflicts(t *testing.T) {
	peers := []wgv1.MeshPeer{
		nodePeer("n1", keyA, "198.19.1.0/24"),
		nodePeer("n2", keyA, "198.19.2.0/24"),
		nodePeer("n3", keyB, "198.19.3.0/24"),
		extPeer("laptop", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "198.19.3.128/25", "198.18.200.0/24"),
		extPeer("vm", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=", "198.18.201.0/24"),
		// Claims to be n3 without being controlled by it: treated as external.
		{ObjectMeta: metav1.ObjectMeta{Name: "fake-n3"}, Spec: wgv1.MeshPeerSpec{NodeName: "n3", PublicKey: "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA=", AllowedIPs: []wgv1.CIDR{"198.19.3.0/24"}}},
	}
	nodes := []corev1.Node{node("n1", "198.19.1.0/24"), node("n2", "198.19.2.0/24"), node("n3", "198.19.3.0/24", "2001:db8:100:3::/64")}
	got := FindConflicts(peers, nodes)
	if len(got) != 4 {
		t.Fatalf("FindConflicts = %+v, want problems for n1, n2, laptop, fake-n3", got)
	}
	if m := got["n1"].KeyConflict; !strings.Contains(m, keyA) || !strings.Contains(m, "MeshPeer n2") {
		t.Errorf("n1 KeyConflict = %q, want it to name the key and n2", m)
	}
	if m := got["n2"].KeyConflict; !strings.Contains(m, "MeshPeer n1") {
		t.Errorf("n2 KeyConflict = %q", m)
	}
	if m := got["laptop"].AllowedIPsConflict; !strings.Contains(m, "198.19.3.128/25 overlaps pod CIDR 198.19.3.0/24 of node n3") || strings.Contains(m, "198.18.200.0/24") {
		t.Errorf("laptop AllowedIPsConflict = %q", m)
	}
	if got["fake-n3"].AllowedIPsConflict == "" {
		t.Errorf("a MeshPeer not controlled by its node may not carry the node's pod CIDR")
	}
	if _, ok := got["vm"]; ok {
		t.Errorf("vm has no problem, got %+v", got["vm"])
	}
}

func TestFindConflictsCapsNames(t *testing.T) {
	var peers []wgv1.MeshPeer
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		peers = append(peers, extPeer(n, keyA))
	}
	m := FindConflicts(peers, nil)["a"].KeyConflict
	if !strings.Contains(m, "b, c, d, e, f and 2 more") {
		t.Fatalf("message = %q", m)
	}
}

func TestDesiredConditions(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Hour))
	want := func(msg string) []wantCondition {
		return []wantCondition{{Type: wgv1.ConditionKeyConflict, Reason: "Dup", Message: msg, OKReason: "Unique", OKMessage: "ok"}}
	}
	ready := metav1.Condition{Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Up", LastTransitionTime: t0}

	// Never had a problem: nothing to write.
	if got := desiredConditions([]metav1.Condition{ready}, 1, want(""), t1); len(got) != 0 {
		t.Fatalf("no problem, no condition: got %+v", got)
	}
	// A problem appears.
	got := desiredConditions([]metav1.Condition{ready}, 1, want("dup"), t0)
	if len(got) != 1 || got[0].Status != metav1.ConditionTrue || got[0].Message != "dup" || !conditionsChanged([]metav1.Condition{ready}, got) {
		t.Fatalf("got %+v", got)
	}
	cur := append([]metav1.Condition{ready}, got...)
	// Same problem later: transition time kept, nothing changed.
	again := desiredConditions(cur, 1, want("dup"), t1)
	if !again[0].LastTransitionTime.Equal(&t0) || conditionsChanged(cur, again) {
		t.Fatalf("unchanged problem rewritten: %+v", again)
	}
	// Resolved: False, new transition time.
	res := desiredConditions(cur, 1, want(""), t1)
	if len(res) != 1 || res[0].Status != metav1.ConditionFalse || res[0].Reason != "Unique" || !res[0].LastTransitionTime.Equal(&t1) {
		t.Fatalf("resolved = %+v", res)
	}
}
