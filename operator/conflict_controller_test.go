package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/wait"
)

// reportLearned writes a node MeshPeer's status.learnedEndpoints as its
// agent does.
func reportLearned(t *testing.T, name string, learned ...wgv1.LearnedEndpoint) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"status": map[string]any{"learnedEndpoints": learned}})
	if err != nil {
		t.Fatal(err)
	}
	mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := testClient.Status().Patch(context.Background(), mp, client.RawPatch(types.MergePatchType, body), client.FieldOwner("wgmesh-agent")); err != nil {
		t.Fatalf("MeshPeer %s: report learned endpoints: %v", name, err)
	}
}

// waitMetric waits until a metric of the operator has the value.
func waitMetric(t *testing.T, op *operatorInstance, name string, want float64) {
	t.Helper()
	wait.For(t, 30*time.Second, name+" to be "+fmt.Sprint(want), func() error {
		if v := op.metric(t, name); v != want {
			return fmt.Errorf("%s = %v, want %v", name, v, want)
		}
		return nil
	})
}

// TestLearnedEndpointKeepsExternalPeerOut is the attack of an external
// MeshPeer whose allowedIPs hold the NAT router's public address, where
// every other node reaches the NAT node's WireGuard (learned from its
// handshakes; no spec names it). The control, before any node reports the
// address (the operator as it was): the peer is accepted, and every node
// routed its WireGuard packets for the NAT node into it. One node's report
// alone (a compromised agent could name any address) evicts no one; once
// two nodes report it the peer gets AllowedIPsConflict naming the address,
// the NAT node and the reporters, with a Warning Event, and it is resolved
// when the reports go.
func TestLearnedEndpointKeepsExternalPeerOut(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	op := startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	ctx := context.Background()
	keys := []string{keyA, keyB, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
	for i, addr := range []string{"198.18.0.11", "198.18.0.12", "198.18.1.13"} {
		name := fmt.Sprintf("wgm-le-%d", i+1)
		createNodeAt(t, name, []string{addr}, map[string]string{wgv1.AnnotationPublicKey: keys[i], wgv1.AnnotationEndpoint: addr + ":51820"}, fmt.Sprintf("198.19.%d.0/24", 20+i))
		waitPeer(t, name, func(mp *wgv1.MeshPeer) string {
			if len(mp.Spec.AllowedIPs) != 1 {
				return "no allowedIPs yet"
			}
			return ""
		})
	}
	create := func(name, key, cidr string) {
		t.Helper()
		mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: wgv1.MeshPeerSpec{
			PublicKey: wgv1.PublicKey(strings.Repeat(key, 43) + "="), AllowedIPs: []wgv1.CIDR{wgv1.CIDR(cidr)}}}
		if err := testClient.Create(ctx, mp); err != nil {
			t.Fatal(err)
		}
	}
	evilConflict := func() bool {
		mp, err := getPeer("wgm-le-evil")
		if err != nil {
			t.Fatal(err)
		}
		return meta.IsStatusConditionTrue(mp.Status.Conditions, wgv1.ConditionAllowedIPsConflict)
	}
	create("wgm-le-evil", "E", "198.18.100.1/32")
	// A peer that does conflict (a node's address), created after: the pass
	// that counts it (the gauge is set at its end) has judged the attacker.
	create("wgm-le-probe", "I", "198.18.0.11/32")
	waitMetric(t, op, "wgmesh_operator_allowedips_conflicts", 1)
	if evilConflict() {
		t.Fatal("control: with no learned endpoint reported the attacker's peer is already out")
	}

	// One node's word.
	nat := wgv1.LearnedEndpoint{Peer: "wgm-le-3", Address: "198.18.100.1"}
	reportLearned(t, "wgm-le-1", nat)
	waitMetric(t, op, `wgmesh_operator_learned_endpoints`, 1)
	if v := op.metric(t, "wgmesh_operator_allowedips_conflicts"); v != 1 || evilConflict() {
		t.Fatalf("one node's report evicted the external peer (allowedips_conflicts = %v)", v)
	}

	// A second node's.
	reportLearned(t, "wgm-le-2", nat)
	mp := waitPeer(t, "wgm-le-evil", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionAllowedIPsConflict, metav1.ConditionTrue,
			"198.18.100.1/32 contains underlay address 198.18.100.1 (the WireGuard endpoint of node wgm-le-3, learned from handshakes by nodes wgm-le-1, wgm-le-2)")
	})
	if ex, _ := mp.Excluded(); !ex {
		t.Fatal("the attacker's peer is not excluded")
	}
	wait.For(t, 10*time.Second, "a Warning Event on MeshPeer wgm-le-evil naming the address", func() error {
		if e := findEvent(t, "MeshPeer", "wgm-le-evil", ReasonAllowedIPsConflict); e == nil || !strings.Contains(e.Note, "198.18.100.1") {
			return fmt.Errorf("no Warning Event on MeshPeer wgm-le-evil naming the address: %+v", e)
		}
		return nil
	})
	waitMetric(t, op, "wgmesh_operator_allowedips_conflicts", 2)

	// The NAT node is gone from the reports: the peer is back.
	reportLearned(t, "wgm-le-1")
	waitPeer(t, "wgm-le-evil", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionAllowedIPsConflict, metav1.ConditionFalse, "")
	})
}
