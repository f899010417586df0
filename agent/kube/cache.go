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
//   - Pods (watched only with --network-policy, every pod of the cluster:
//     they are the policies' peers) keep what netpol.PodFromAPI reads
//     (trimPod): a pod's status updates (conditions, container states)
//     then change nothing the cache keeps but its resourceVersion.
func cacheOptions(nodeName string, extra map[client.Object]cache.ByObject) cache.Options {
	byObject := map[client.Object]cache.ByObject{
		&corev1.Node{}: {Transform: nodeTransform(nodeName)},
		&corev1.Pod{}:  {Transform: podTransform},
	}
	for obj, o := range extra {
		// One watch of each for the whole process: their trimming is this
		// package's, whoever else reads them.
		switch obj.(type) {
		case *corev1.Node:
			o.Transform = nodeTransform(nodeName)
		case *corev1.Pod:
			o.Transform = podTransform
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

// podTransform trims every Pod to trimPod.
func podTransform(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return trimPod(p), nil
	}
	return obj, nil
}

// trimPod is what the agent keeps of a Pod: what NetworkPolicy sees of it
// (netpol.PodFromAPI): name, namespace, UID, labels, node, hostNetwork, the
// containers' ports, phase and addresses.
func trimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	for _, c := range p.Spec.Containers {
		if len(c.Ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: c.Ports})
		}
	}
	return out
}
