package operator

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/wait"
)

func getPeer(name string) (*wgv1.MeshPeer, error) {
	mp := &wgv1.MeshPeer{}
	return mp, testClient.Get(context.Background(), client.ObjectKey{Name: name}, mp)
}

// waitPeer waits until the MeshPeer exists and check returns "".
func waitPeer(t *testing.T, name string, check func(*wgv1.MeshPeer) string) *wgv1.MeshPeer {
	t.Helper()
	var mp *wgv1.MeshPeer
	wait.For(t, 30*time.Second, "MeshPeer "+name, func() error {
		var err error
		if mp, err = getPeer(name); err != nil {
			return fmt.Errorf("MeshPeer %s: %v", name, err)
		}
		if msg := check(mp); msg != "" {
			return fmt.Errorf("MeshPeer %s: %s (spec %s)", name, msg, describeSpec(mp.Spec))
		}
		return nil
	})
	return mp
}

func condIs(mp *wgv1.MeshPeer, typ string, status metav1.ConditionStatus, msgPart string) string {
	c := meta.FindStatusCondition(mp.Status.Conditions, typ)
	if c == nil || c.Status != status || !strings.Contains(c.Message, msgPart) {
		return fmt.Sprintf("condition %s = %+v, want %s containing %q", typ, c, status, msgPart)
	}
	return ""
}

func annotate(t *testing.T, name string, set map[string]string, remove ...string) {
	t.Helper()
	n := getNode(t, name)
	patch := client.MergeFrom(n.DeepCopy())
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	for k, v := range set {
		n.Annotations[k] = v
	}
	for _, k := range remove {
		delete(n.Annotations, k)
	}
	if err := testClient.Patch(context.Background(), n, patch); err != nil {
		t.Fatalf("annotate node %s: %v", name, err)
	}
}

func TestMeshPeerLifecycle(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16,2001:db8:100::/56", name: "op"})
	node := createNodeAt(t, "wgm-mp-1", []string{"198.18.0.11"}, nil)
	cidrs := waitPodCIDRs(t, "wgm-mp-1", 2)

	// No key yet: no MeshPeer. The annotation below is a later event on the
	// same Node, handled after every earlier one: a MeshPeer written before
	// the key would show in the history of the one the key brings (its
	// generation, its MeshPeerCreated Events).
	if _, err := getPeer("wgm-mp-1"); !apierrors.IsNotFound(err) {
		t.Fatalf("MeshPeer of a node without public key: err = %v, want NotFound", err)
	}

	// The agent announces itself.
	annotate(t, "wgm-mp-1", map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.11:51820"})
	mp := waitPeer(t, "wgm-mp-1", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.PublicKey != keyA || mp.Spec.Endpoint != "198.18.0.11:51820" || len(mp.Spec.AllowedIPs) != 2 ||
			string(mp.Spec.AllowedIPs[0]) != cidrs[0] || string(mp.Spec.AllowedIPs[1]) != cidrs[1] || mp.Spec.NodeName != "wgm-mp-1" {
			return "spec not from annotations and podCIDRs"
		}
		return ""
	})
	ref := metav1.GetControllerOf(mp)
	if ref == nil || ref.Kind != "Node" || ref.Name != "wgm-mp-1" || ref.UID != node.UID || ref.APIVersion != "v1" {
		t.Fatalf("controller owner reference = %+v, want Node wgm-mp-1 uid %s", ref, node.UID)
	}
	wait.For(t, 10*time.Second, "the MeshPeerCreated Event", func() error {
		if findEvent(t, "MeshPeer", "wgm-mp-1", ReasonMeshPeerCreated) == nil {
			return errors.New("no MeshPeerCreated event")
		}
		return nil
	})
	if n := countEvents(t, "MeshPeer", "wgm-mp-1", ReasonMeshPeerCreated); mp.Generation != 1 || n != 1 {
		t.Fatalf("MeshPeer wgm-mp-1 at generation %d with %d MeshPeerCreated Events when its key arrived, want 1 and 1: it was written before the node had a key", mp.Generation, n)
	}

	// The agent writes Ready (its own field manager); the operator must not clobber it.
	mp.Status.Conditions = append(mp.Status.Conditions, metav1.Condition{Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Up", Message: "3/3", LastTransitionTime: metav1.Now()})
	if err := testClient.Status().Update(context.Background(), mp, client.FieldOwner("wgmesh-agent")); err != nil {
		t.Fatal(err)
	}

	// Changes flow through; the user overrides win.
	annotate(t, "wgm-mp-1", map[string]string{wgv1.AnnotationEndpoint: "198.18.0.21:51820", wgv1.AnnotationForceEndpoint: "gw.example.org:4500", wgv1.AnnotationPersistentKeepalive: "25"})
	waitPeer(t, "wgm-mp-1", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.Endpoint != "gw.example.org:4500" || mp.Spec.PersistentKeepalive == nil || *mp.Spec.PersistentKeepalive != 25 {
			return "overrides not applied"
		}
		return ""
	})
	wait.For(t, 10*time.Second, "a MeshPeerUpdated Event naming the new endpoint", func() error {
		if e := findEvent(t, "MeshPeer", "wgm-mp-1", ReasonMeshPeerUpdated); e == nil || !strings.Contains(e.Note, "gw.example.org:4500") {
			return errors.New("no MeshPeerUpdated event naming the new endpoint")
		}
		return nil
	})

	// A bad annotation: Event naming it, condition, last good spec kept.
	annotate(t, "wgm-mp-1", map[string]string{wgv1.AnnotationPersistentKeepalive: "70000", wgv1.AnnotationPublicKey: keyB})
	mp = waitPeer(t, "wgm-mp-1", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.PublicKey != keyB {
			return "good annotation changes still apply"
		}
		return condIs(mp, wgv1.ConditionInvalidAnnotation, metav1.ConditionTrue, `wgmesh.io/persistent-keepalive="70000"`)
	})
	if mp.Spec.PersistentKeepalive == nil || *mp.Spec.PersistentKeepalive != 25 {
		t.Fatalf("keepalive = %v, want the last good 25", mp.Spec.PersistentKeepalive)
	}
	if msg := condIs(mp, wgv1.ConditionReady, metav1.ConditionTrue, "3/3"); msg != "" {
		t.Fatalf("agent's Ready condition lost: %s", msg)
	}
	wait.For(t, 10*time.Second, "a Warning InvalidAnnotation Event on the node naming annotation and value", func() error {
		e := findEvent(t, "Node", "wgm-mp-1", ReasonInvalidAnnotation)
		if e == nil || e.Type != corev1.EventTypeWarning || !strings.Contains(e.Note, "wgmesh.io/persistent-keepalive") || !strings.Contains(e.Note, "70000") {
			return fmt.Errorf("no Warning InvalidAnnotation event on the node naming annotation and value: %+v", e)
		}
		return nil
	})
	// A bad public key keeps the last good key.
	annotate(t, "wgm-mp-1", map[string]string{wgv1.AnnotationPublicKey: "not-a-key"})
	mp = waitPeer(t, "wgm-mp-1", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionInvalidAnnotation, metav1.ConditionTrue, `wgmesh.io/public-key="not-a-key"`)
	})
	if mp.Spec.PublicKey != keyB {
		t.Fatalf("publicKey = %s, want the last good %s", mp.Spec.PublicKey, keyB)
	}

	// Fixed: condition turns False, Ready still there.
	annotate(t, "wgm-mp-1", map[string]string{wgv1.AnnotationPersistentKeepalive: "10", wgv1.AnnotationPublicKey: keyA})
	mp = waitPeer(t, "wgm-mp-1", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.PersistentKeepalive == nil || *mp.Spec.PersistentKeepalive != 10 || mp.Spec.PublicKey != keyA {
			return "fixed annotations not applied"
		}
		return condIs(mp, wgv1.ConditionInvalidAnnotation, metav1.ConditionFalse, "")
	})
	if msg := condIs(mp, wgv1.ConditionReady, metav1.ConditionTrue, "3/3"); msg != "" {
		t.Fatalf("agent's Ready condition lost: %s", msg)
	}

	// Key removed (agent cleaned up): MeshPeer deleted.
	annotate(t, "wgm-mp-1", nil, wgv1.AnnotationPublicKey)
	wait.For(t, 30*time.Second, "the MeshPeer to go with the key", func() error {
		if _, err := getPeer("wgm-mp-1"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("MeshPeer still there after the key was removed: %v", err)
		}
		return nil
	})
}

// TestMeshPeerPublishedOnce: a node that joins with its key already
// announced gets its MeshPeer in one write, pod CIDRs included: not a
// MeshPeer without allowedIPs updated a moment later (a second write, Event
// and reconcile of every agent per join).
func TestMeshPeerPublishedOnce(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("wgm-once-%d", i)
		createNode(t, name, map[string]string{wgv1.AnnotationPublicKey: keyA})
		mp := waitPeer(t, name, func(mp *wgv1.MeshPeer) string {
			if len(mp.Spec.AllowedIPs) != 1 {
				return "no allowedIPs yet"
			}
			return ""
		})
		if mp.Generation != 1 {
			t.Errorf("MeshPeer %s: generation %d when its pod CIDR arrived, want 1 (published once, complete)", name, mp.Generation)
		}
	}
	// The barrier: a new key, a later event on each Node, handled after
	// every earlier one. Its update must be each MeshPeer's first.
	for i := 0; i < 5; i++ {
		name, key := fmt.Sprintf("wgm-once-%d", i), base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{byte(0x10 + i)}, 32))
		annotate(t, name, map[string]string{wgv1.AnnotationPublicKey: key})
		mp := waitPeer(t, name, func(mp *wgv1.MeshPeer) string {
			if string(mp.Spec.PublicKey) != key {
				return "the new key is not published yet"
			}
			return ""
		})
		wait.For(t, 10*time.Second, "the MeshPeerUpdated Event of "+name+"'s new key", func() error {
			if e := findEvent(t, "MeshPeer", name, ReasonMeshPeerUpdated); e == nil || !strings.Contains(e.Note, key) {
				return fmt.Errorf("newest: %+v", e)
			}
			return nil
		})
		if n := countEvents(t, "MeshPeer", name, ReasonMeshPeerUpdated); mp.Generation != 2 || n != 1 {
			t.Errorf("MeshPeer %s: generation %d and %d MeshPeerUpdated Events after the key change, want 2 and 1: it was updated after it was created", name, mp.Generation, n)
		}
	}
}

func TestMeshPeerKeyButNoPodCIDRs(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	// Pool too small for the second node: it keeps a MeshPeer with no allowedIPs.
	createNode(t, "wgm-nocidr-0", nil, "198.19.0.0/24")
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/23", name: "op"})
	createNode(t, "wgm-nocidr-1", nil)
	waitPodCIDRs(t, "wgm-nocidr-1", 1)
	createNode(t, "wgm-nocidr-2", map[string]string{wgv1.AnnotationPublicKey: keyA})
	mp := waitPeer(t, "wgm-nocidr-2", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.PublicKey != keyA {
			return "no key"
		}
		return ""
	})
	if len(mp.Spec.AllowedIPs) != 0 || mp.Spec.Endpoint != "" {
		t.Fatalf("MeshPeer of a node without podCIDRs and endpoint: %s", describeSpec(mp.Spec))
	}
	// When its CIDR arrives, allowedIPs follow.
	if err := testClient.Delete(context.Background(), getNode(t, "wgm-nocidr-1")); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "wgm-nocidr-2", func(mp *wgv1.MeshPeer) string {
		if len(mp.Spec.AllowedIPs) != 1 {
			return "allowedIPs not filled in after the node got its CIDR"
		}
		return ""
	})
	// The deleted node's MeshPeer (if any) is gone, without a garbage collector.
}

func TestMeshPeerKeyConflict(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	createNode(t, "wgm-kc-1", map[string]string{wgv1.AnnotationPublicKey: keyA})
	waitPeer(t, "wgm-kc-1", notExcluded)
	// A second node announcing the same key is left out; the node that
	// published it first keeps working.
	createNode(t, "wgm-kc-2", map[string]string{wgv1.AnnotationPublicKey: keyA})
	mp := waitPeer(t, "wgm-kc-2", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionKeyConflict, metav1.ConditionTrue, "belongs to node MeshPeer wgm-kc-1")
	})
	if ex, _ := mp.Excluded(); !ex {
		t.Fatal("wgm-kc-2 not excluded")
	}
	waitPeer(t, "wgm-kc-1", notExcluded)
	// An external peer with the same key is left out too.
	ext := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-kc-laptop"}, Spec: wgv1.MeshPeerSpec{PublicKey: keyA, AllowedIPs: []wgv1.CIDR{"198.18.200.1/32"}}}
	if err := testClient.Create(context.Background(), ext); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "wgm-kc-laptop", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionKeyConflict, metav1.ConditionTrue, "belongs to node MeshPeer wgm-kc-1")
	})
	waitPeer(t, "wgm-kc-1", notExcluded)
	// Resolved: the node gets a new key and the laptop goes away.
	annotate(t, "wgm-kc-2", map[string]string{wgv1.AnnotationPublicKey: keyB})
	if err := testClient.Delete(context.Background(), ext); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "wgm-kc-2", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionKeyConflict, metav1.ConditionFalse, "")
	})
	waitPeer(t, "wgm-kc-1", notExcluded)
	wait.For(t, 10*time.Second, "a KeyConflict Warning Event", func() error {
		if e := findEvent(t, "MeshPeer", "wgm-kc-2", ReasonKeyConflict); e == nil || e.Type != corev1.EventTypeWarning {
			return errors.New("no KeyConflict warning event")
		}
		return nil
	})
}

func TestMeshPeerExternalOverlap(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	createNode(t, "wgm-ov-1", map[string]string{wgv1.AnnotationPublicKey: keyA}, "198.19.5.0/24")
	spec := wgv1.MeshPeerSpec{PublicKey: keyB, Endpoint: "vpn.example.org:51820", AllowedIPs: []wgv1.CIDR{"198.19.5.128/25", "198.18.200.0/24"}}
	ext := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-ov-gw"}, Spec: spec}
	if err := testClient.Create(context.Background(), ext); err != nil {
		t.Fatal(err)
	}
	mp := waitPeer(t, "wgm-ov-gw", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionAllowedIPsConflict, metav1.ConditionTrue, "198.19.5.128/25 overlaps pod CIDR 198.19.5.0/24 of node wgm-ov-1")
	})
	if !SpecEqual(mp.Spec, spec) {
		t.Fatalf("external spec changed: %s", describeSpec(mp.Spec))
	}
	// A user MeshPeer pretending to be the node (nodeName set, no owner) is external too.
	fake := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-ov-fake"}, Spec: wgv1.MeshPeerSpec{NodeName: "wgm-ov-1", PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", AllowedIPs: []wgv1.CIDR{"198.19.5.0/24"}}}
	if err := testClient.Create(context.Background(), fake); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "wgm-ov-fake", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionAllowedIPsConflict, metav1.ConditionTrue, "of node wgm-ov-1")
	})
	// The user fixes the range: cleared, spec still the user's.
	mp.Spec.AllowedIPs = []wgv1.CIDR{"198.18.200.0/24"}
	if err := testClient.Update(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	mp = waitPeer(t, "wgm-ov-gw", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionAllowedIPsConflict, metav1.ConditionFalse, "")
	})
	if len(mp.Spec.AllowedIPs) != 1 || mp.Spec.Endpoint != "vpn.example.org:51820" {
		t.Fatalf("external spec changed: %s", describeSpec(mp.Spec))
	}
	// The node's own MeshPeer is not flagged.
	own := waitPeer(t, "wgm-ov-1", func(*wgv1.MeshPeer) string { return "" })
	if ex, c := own.Excluded(); ex {
		t.Fatalf("node peer excluded: %+v", c)
	}
}

func TestMeshPeerNodeDeletedAndNameTaken(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	// A MeshPeer made in advance under a node's name does not lock the node
	// out: the operator takes it over.
	taken := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-del-2"}, Spec: wgv1.MeshPeerSpec{PublicKey: keyB, Endpoint: "198.18.0.99:51820"}}
	if err := testClient.Create(context.Background(), taken); err != nil {
		t.Fatal(err)
	}
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	createNode(t, "wgm-del-1", map[string]string{wgv1.AnnotationPublicKey: keyA})
	createNode(t, "wgm-del-2", map[string]string{wgv1.AnnotationPublicKey: "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA="})
	waitPeer(t, "wgm-del-1", func(*wgv1.MeshPeer) string { return "" })
	adopted := waitPeer(t, "wgm-del-2", func(mp *wgv1.MeshPeer) string {
		if ref := metav1.GetControllerOf(mp); ref == nil || ref.UID != getNode(t, "wgm-del-2").UID {
			return fmt.Sprintf("not controlled by its Node: %v", mp.OwnerReferences)
		}
		if mp.Spec.Endpoint != "" || mp.Spec.NodeName != "wgm-del-2" || mp.Annotations[wgv1.AnnotationPublicKeySince] == "" {
			return "spec not the node's: " + describeSpec(mp.Spec)
		}
		return ""
	})
	if !wgv1.IsNodePeer(adopted, func(string) (types.UID, bool) { return getNode(t, "wgm-del-2").UID, true }) {
		t.Errorf("the adopted MeshPeer is not a node peer: %+v", adopted.ObjectMeta)
	}
	wait.For(t, 10*time.Second, "a MeshPeerAdopted Event", func() error {
		if e := findEvent(t, "MeshPeer", "wgm-del-2", ReasonMeshPeerAdopted); e == nil {
			return errors.New("no MeshPeerAdopted event")
		}
		return nil
	})
	// Node deleted: its MeshPeer goes (the operator deletes it; no GC here).
	if err := testClient.Delete(context.Background(), getNode(t, "wgm-del-1")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the MeshPeer of the deleted node to go", func() error {
		if _, err := getPeer("wgm-del-1"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("MeshPeer of a deleted node still there: %v", err)
		}
		return nil
	})
}

// TestMeshPeerOverlappingPresetPodCIDRs: a Node that arrives with pre-set
// podCIDRs overlapping a node already in the mesh (a misconfigured kubelet,
// a hand-made Node) gets an Event and AllowedIPsConflict and its CIDRs are
// never published; the node already in the mesh keeps its MeshPeer as it
// was. A node that copies another node's key is left out; the genuine node
// stays.
func TestMeshPeerOverlappingPresetPodCIDRs(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	createNode(t, "wgm-pre-1", map[string]string{wgv1.AnnotationPublicKey: keyA}, "198.19.1.0/24")
	waitPeer(t, "wgm-pre-1", func(mp *wgv1.MeshPeer) string {
		if len(mp.Spec.AllowedIPs) != 1 {
			return "allowedIPs not published yet"
		}
		return notExcluded(mp)
	})
	createNode(t, "wgm-pre-2", map[string]string{wgv1.AnnotationPublicKey: keyB}, "198.19.1.0/25")
	dup := waitPeer(t, "wgm-pre-2", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionAllowedIPsConflict, metav1.ConditionTrue, "overlaps pod CIDR 198.19.1.0/24 of node wgm-pre-1")
	})
	if len(dup.Spec.AllowedIPs) != 0 {
		t.Errorf("the overlapping node's CIDRs were published: %v", dup.Spec.AllowedIPs)
	}
	if ex, _ := dup.Excluded(); !ex {
		t.Error("the overlapping node's MeshPeer is not excluded")
	}
	wait.For(t, 10*time.Second, "a PodCIDRConflict Event on the Node", func() error {
		if findEvent(t, "Node", "wgm-pre-2", ReasonPodCIDRConflict) == nil {
			return errors.New("no PodCIDRConflict Event on the Node")
		}
		return nil
	})
	first := waitPeer(t, "wgm-pre-1", notExcluded)
	if len(first.Spec.AllowedIPs) != 1 || first.Spec.AllowedIPs[0] != "198.19.1.0/24" {
		t.Errorf("the node already in the mesh lost its range: %v", first.Spec.AllowedIPs)
	}

	// Node 2 copies node 1's key: node 2 is left out, node 1 keeps working.
	annotate(t, "wgm-pre-2", map[string]string{wgv1.AnnotationPublicKey: keyA})
	waitPeer(t, "wgm-pre-2", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionKeyConflict, metav1.ConditionTrue, "belongs to node MeshPeer wgm-pre-1")
	})
	waitPeer(t, "wgm-pre-1", notExcluded)

	// Node 1 goes away: node 2 gets its range (and key) into the mesh.
	if err := testClient.Delete(context.Background(), getNode(t, "wgm-pre-1")); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "wgm-pre-2", func(mp *wgv1.MeshPeer) string {
		if len(mp.Spec.AllowedIPs) != 1 {
			return fmt.Sprintf("allowedIPs %v, want its own 198.19.1.0/25 once the other node is gone", mp.Spec.AllowedIPs)
		}
		return notExcluded(mp)
	})
}

func notExcluded(mp *wgv1.MeshPeer) string {
	if ex, c := mp.Excluded(); ex {
		return fmt.Sprintf("excluded: %s: %s", c.Type, c.Message)
	}
	return ""
}

// A node failure is one MeshPeer status write (NodeNotReady), which every
// agent sees; a kubelet's heartbeat writes nothing.
func TestMeshPeerNodeNotReady(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	createNodeAt(t, "wgm-nr-1", []string{"198.18.0.11"}, map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.11:51820"})
	waitPodCIDRs(t, "wgm-nr-1", 1)
	mp := waitPeer(t, "wgm-nr-1", func(mp *wgv1.MeshPeer) string {
		if len(mp.Spec.AllowedIPs) != 1 {
			return "no allowedIPs yet"
		}
		return ""
	})
	if c := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionNodeNotReady); c != nil {
		t.Fatalf("NodeNotReady set on a node with no Ready condition: %+v", c)
	}
	setReady := func(status corev1.ConditionStatus, reason string, heartbeat time.Time) {
		t.Helper()
		n := getNode(t, "wgm-nr-1")
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: reason,
			LastHeartbeatTime: metav1.NewTime(heartbeat), LastTransitionTime: metav1.NewTime(heartbeat)}}
		if err := testClient.Status().Update(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	setReady(corev1.ConditionTrue, "KubeletReady", now)
	mp = waitPeer(t, "wgm-nr-1", func(mp *wgv1.MeshPeer) string {
		if meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionNodeNotReady) != nil {
			return "NodeNotReady set on a Ready node"
		}
		return ""
	})
	setReady(corev1.ConditionUnknown, "NodeStatusUnknown", now.Add(time.Second))
	mp = waitPeer(t, "wgm-nr-1", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionNodeNotReady, metav1.ConditionTrue, "Ready=Unknown, NodeStatusUnknown")
	})
	rv := mp.ResourceVersion
	// Heartbeats that change nothing but times: no MeshPeer write. The
	// barrier is Ready=True after them, a later event on the same Node: its
	// write must be the only one since.
	for i := 2; i < 5; i++ {
		setReady(corev1.ConditionUnknown, "NodeStatusUnknown", now.Add(time.Duration(i)*time.Second))
	}
	setReady(corev1.ConditionTrue, "KubeletReady", now.Add(10*time.Second))
	if n := meshPeerWritesUntil(t, "wgm-nr-1", rv, func(mp *wgv1.MeshPeer) bool {
		return condIs(mp, wgv1.ConditionNodeNotReady, metav1.ConditionFalse, "") == ""
	}); n != 1 {
		t.Fatalf("MeshPeer wgm-nr-1 written %d times from the heartbeats to NodeNotReady=False, want once (heartbeats must write nothing)", n)
	}
}

// meshPeerWritesUntil watches MeshPeer name from resourceVersion rv and
// counts its writes until one passes done (the barrier), which it counts
// too; it fails the test when none does within 30 s.
func meshPeerWritesUntil(t *testing.T, name, rv string, done func(*wgv1.MeshPeer) bool) int {
	t.Helper()
	wc, err := client.NewWithWatch(testCfg, client.Options{Scheme: testClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := wc.Watch(ctx, &wgv1.MeshPeerList{}, &client.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name),
		Raw:           &metav1.ListOptions{ResourceVersion: rv},
	})
	if err != nil {
		t.Fatalf("watch MeshPeer %s from %s: %v", name, rv, err)
	}
	defer w.Stop()
	n := 0
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added, watch.Modified, watch.Deleted:
			n++
			if mp, ok := ev.Object.(*wgv1.MeshPeer); ok && done(mp) {
				return n
			}
		case watch.Error:
			t.Fatalf("watch MeshPeer %s: %v", name, apierrors.FromObject(ev.Object))
		}
	}
	t.Fatalf("MeshPeer %s: %d writes from resourceVersion %s, none the awaited one, within 30s", name, n, rv)
	return n
}

// TestMeshPeerForeignEndpoint is the attack of a compromised agent that
// announces an external peer's address as its own wgmesh.io/endpoint: every
// node's endpoint is an address no external peer may claim, so the operator
// used to publish it and evict the external peer from every node. Now the
// announcing node is the one reported (InvalidAnnotation on its MeshPeer, a
// Warning Event on its Node, the metric) and keeps its last good endpoint,
// and the external peer stays. The control: the same address as the Node's
// own (an ExternalIP its kubelet reports) is published and does keep the
// external peer out.
func TestMeshPeerForeignEndpoint(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	op := startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	ctx := context.Background()
	createNodeAt(t, "wgm-fe-1", []string{"198.18.0.11"}, map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.11:51820"}, "198.19.7.0/24")
	waitPeer(t, "wgm-fe-1", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.Endpoint != "198.18.0.11:51820" {
			return "its own endpoint not published"
		}
		return ""
	})
	vm := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-fe-vm"}, Spec: wgv1.MeshPeerSpec{PublicKey: keyB, AllowedIPs: []wgv1.CIDR{"198.18.200.5/32"}}}
	if err := testClient.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}

	annotate(t, "wgm-fe-1", map[string]string{wgv1.AnnotationEndpoint: "198.18.200.5:51820"})
	mp := waitPeer(t, "wgm-fe-1", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionInvalidAnnotation, metav1.ConditionTrue, `annotation wgmesh.io/endpoint="198.18.200.5:51820" is invalid: want host:port`)
	})
	if c := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionInvalidAnnotation); !strings.Contains(c.Message, "Node wgm-fe-1's own (its InternalIP or ExternalIP: 198.18.0.11)") {
		t.Errorf("condition message %q does not name the Node's own addresses", c.Message)
	}
	if mp.Spec.Endpoint != "198.18.0.11:51820" {
		t.Errorf("MeshPeer endpoint %q, want the last good one, the node's own", mp.Spec.Endpoint)
	}
	wait.For(t, 10*time.Second, "a Warning InvalidAnnotation Event on Node wgm-fe-1 naming the value", func() error {
		if e := findEvent(t, "Node", "wgm-fe-1", ReasonInvalidAnnotation); e == nil || e.Type != corev1.EventTypeWarning || !strings.Contains(e.Note, "198.18.200.5:51820") {
			return fmt.Errorf("no Warning InvalidAnnotation Event on Node wgm-fe-1 naming the value: %+v", e)
		}
		return nil
	})
	// The barrier: a conflict pass has seen the Node's announcement (the
	// gauge is set at the end of the pass); it left the external peer in.
	wait.For(t, 30*time.Second, "a conflict pass that saw the announcement (wgmesh_operator_foreign_endpoints 1)", func() error {
		if v := op.metric(t, "wgmesh_operator_foreign_endpoints"); v != 1 {
			return fmt.Errorf("wgmesh_operator_foreign_endpoints = %v, want 1", v)
		}
		return nil
	})
	if v := op.metric(t, "wgmesh_operator_allowedips_conflicts"); v != 0 {
		t.Fatalf("wgmesh_operator_allowedips_conflicts = %v after the pass that saw the announcement, want 0", v)
	}
	if got, err := getPeer("wgm-fe-vm"); err != nil || meta.IsStatusConditionTrue(got.Status.Conditions, wgv1.ConditionAllowedIPsConflict) {
		t.Fatalf("the external peer was evicted by a node's word: %v %+v", err, got.Status.Conditions)
	}

	// The control: the address is the node's own after all.
	n := getNode(t, "wgm-fe-1")
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "198.18.200.5"})
	if err := testClient.Status().Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "wgm-fe-1", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.Endpoint != "198.18.200.5:51820" {
			return "the node's own ExternalIP not published"
		}
		return condIs(mp, wgv1.ConditionInvalidAnnotation, metav1.ConditionFalse, "")
	})
	waitPeer(t, "wgm-fe-vm", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionAllowedIPsConflict, metav1.ConditionTrue, "contains underlay address 198.18.200.5 (ExternalIP of Node wgm-fe-1)")
	})
	wait.For(t, 30*time.Second, "wgmesh_operator_foreign_endpoints 0", func() error {
		if v := op.metric(t, "wgmesh_operator_foreign_endpoints"); v != 0 {
			return fmt.Errorf("wgmesh_operator_foreign_endpoints = %v, want 0", v)
		}
		return nil
	})
}

// TestMeshPeerRelayLabel: the Node's wgmesh.io/relay label becomes its
// MeshPeer's spec.relay (true: prefer, false: never, removed: empty), and
// the API server refuses any other spec.relay.
func TestMeshPeerRelayLabel(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op"})
	createNodeAt(t, "wgm-relay-1", []string{"198.18.0.31"}, map[string]string{wgv1.AnnotationPublicKey: keyA})
	waitPeer(t, "wgm-relay-1", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.Relay != "" {
			return "spec.relay set without a label"
		}
		return ""
	})
	label := func(v *string) {
		n := getNode(t, "wgm-relay-1")
		patch := client.MergeFrom(n.DeepCopy())
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		if v == nil {
			delete(n.Labels, wgv1.LabelRelay)
		} else {
			n.Labels[wgv1.LabelRelay] = *v
		}
		if err := testClient.Patch(context.Background(), n, patch); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		label *string
		want  wgv1.RelayPreference
	}{{ptrTo("true"), wgv1.RelayPrefer}, {ptrTo("false"), wgv1.RelayNever}, {nil, ""}} {
		label(tc.label)
		waitPeer(t, "wgm-relay-1", func(mp *wgv1.MeshPeer) string {
			if mp.Spec.Relay != tc.want {
				return fmt.Sprintf("spec.relay %q, want %q", mp.Spec.Relay, tc.want)
			}
			return ""
		})
	}
	mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-relay-ext"},
		Spec: wgv1.MeshPeerSpec{PublicKey: keyB, AllowedIPs: []wgv1.CIDR{"198.18.201.0/24"}, Relay: "always"}}
	if err := testClient.Create(context.Background(), mp); err == nil || !strings.Contains(err.Error(), "spec.relay") {
		t.Fatalf("spec.relay=always: err %v, want a refusal naming spec.relay", err)
	}
}
