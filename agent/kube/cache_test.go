package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestNodeTransform: this node's Node is kept whole but for managedFields;
// every other Node keeps only what the agent reads of it (name, UID, pod
// CIDRs, addresses), so a thousand of them cost little.
func TestNodeTransform(t *testing.T) {
	tr := nodeTransform("node-a")
	mk := func(name string) *corev1.Node {
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), ResourceVersion: "7",
				Annotations: map[string]string{"wgmesh.io/public-key": "k"}, Labels: map[string]string{"zone": "a"},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
			Spec: corev1.NodeSpec{PodCIDR: "198.19.1.0/24", PodCIDRs: []string{"198.19.1.0/24"}, ProviderID: "x"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
				Images:     []corev1.ContainerImage{{Names: []string{"big"}}}},
		}
	}
	out, err := tr(mk("node-a"))
	if err != nil {
		t.Fatal(err)
	}
	own := out.(*corev1.Node)
	if own.ManagedFields != nil || own.Annotations["wgmesh.io/public-key"] != "k" || own.Labels["zone"] != "a" || own.Spec.ProviderID != "x" ||
		len(own.Status.Conditions) != 1 || len(own.Status.Images) != 1 {
		t.Errorf("own Node after the transform: %+v", own)
	}
	out, err = tr(mk("node-b"))
	if err != nil {
		t.Fatal(err)
	}
	other := out.(*corev1.Node)
	want := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b", UID: "uid-node-b", ResourceVersion: "7"},
		Spec:   corev1.NodeSpec{PodCIDR: "198.19.1.0/24", PodCIDRs: []string{"198.19.1.0/24"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}}}}
	if other.Name != want.Name || other.UID != want.UID || other.ResourceVersion != want.ResourceVersion || other.Annotations != nil ||
		other.Labels != nil || other.Spec.ProviderID != "" || other.Status.Conditions != nil || other.Status.Images != nil ||
		other.Spec.PodCIDR != want.Spec.PodCIDR || len(other.Spec.PodCIDRs) != 1 || len(other.Status.Addresses) != 1 {
		t.Errorf("other Node after the transform: %+v", other)
	}
}
