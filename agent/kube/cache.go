package kube

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// cacheOptions shape the one informer cache: every resource watched once,
// each object trimmed as it enters to what the agent reads, so that memory
// at a thousand nodes stays what the objects the agent uses need.
//   - Nothing in the agent reads managedFields: with a thousand MeshPeers
//     they are a third of what the cache holds, and much of each Service
//     and EndpointSlice.
//   - Nodes: every Node is watched (the mesh tells node peers from
//     external ones by their UIDs, the service NAT reserves their addresses
//     and pod CIDRs) but only this node's is kept whole; the others keep
//     what those two read (nodeTransform).
func cacheOptions(nodeName string, extra map[client.Object]cache.ByObject) cache.Options {
	byObject := map[client.Object]cache.ByObject{
		&corev1.Node{}: {Transform: nodeTransform(nodeName)},
	}
	for obj, o := range extra {
		if _, isNode := obj.(*corev1.Node); isNode {
			// One Node watch for the whole process: its trimming is this
			// package's, whoever else reads Nodes.
			o.Transform = nodeTransform(nodeName)
		}
		byObject[obj] = o
	}
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: byObject}
}

// nodeTransform keeps this node's Node whole but for its managedFields (the
// agent reads its annotations, pod CIDRs and addresses, and reports on it),
// and of every other Node only what the agent reads of it: name, UID, pod
// CIDRs and addresses (trimNode). A kubelet's heartbeat then changes nothing
// the cache keeps of another node but its resourceVersion.
func nodeTransform(nodeName string) toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	return func(obj any) (any, error) {
		if n, ok := obj.(*corev1.Node); ok && n.Name != nodeName {
			return trimNode(n), nil
		}
		return strip(obj)
	}
}

// trimNode is what the agent keeps of another node's Node.
func trimNode(n *corev1.Node) *corev1.Node {
	return &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}
}
