package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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

// TestPodTransform: a Pod keeps what NetworkPolicy sees of it, nothing
// else; a status update that changes only conditions leaves the same pod.
func TestPodTransform(t *testing.T) {
	mk := func(ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "uid-a", ResourceVersion: "9", Labels: map[string]string{"pod": "a"},
				Annotations: map[string]string{"big": "x"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
				OwnerReferences: []metav1.OwnerReference{{Name: "rs"}}},
			Spec: corev1.PodSpec{NodeName: "n1", HostNetwork: true, ServiceAccountName: "sa",
				Containers: []corev1.Container{
					{Name: "c1", Image: "agnhost", Args: []string{"porter"}, Ports: []corev1.ContainerPort{{Name: "serve-80-tcp", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}},
					{Name: "sidecar", Image: "x"},
				}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.19.1.5", PodIPs: []corev1.PodIP{{IP: "198.19.1.5"}, {IP: "2001:db8::5"}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}, HostIP: "198.18.0.11"},
		}
	}
	out, err := podTransform(mk(corev1.ConditionTrue))
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*corev1.Pod)
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "uid-a", ResourceVersion: "9", Labels: map[string]string{"pod": "a"}},
		Spec: corev1.PodSpec{NodeName: "n1", HostNetwork: true,
			Containers: []corev1.Container{{Name: "c1", Ports: []corev1.ContainerPort{{Name: "serve-80-tcp", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.19.1.5", PodIPs: []corev1.PodIP{{IP: "198.19.1.5"}, {IP: "2001:db8::5"}}},
	}
	if !equality.Semantic.DeepEqual(p, want) {
		t.Errorf("pod after the transform:\n%+v\nwant\n%+v", p, want)
	}
	other, _ := podTransform(mk(corev1.ConditionFalse))
	if !equality.Semantic.DeepEqual(p, other) {
		t.Errorf("a readiness change left a different pod in the cache: %+v", other)
	}
}
