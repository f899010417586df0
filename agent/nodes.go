package agent

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

// nodeDirectory knows which Nodes exist, with their UIDs, so that a MeshPeer
// counts as a node's only when its controller owner reference is the live
// Node (wgv1.IsNodePeer). It watches Node metadata only and keeps nothing
// but names and UIDs, so thousands of nodes cost little; it wakes the agent
// only when a Node appears or goes, not on every Node update.
type nodeDirectory struct {
	informer toolscache.SharedIndexInformer
	synced   chan struct{} // closed once the full list is in
}

// onChange runs when a Node goes (its MeshPeer is no longer a node peer),
// and when one appears whose name a MeshPeer already has (hasPeer): a Node
// normally appears before its MeshPeer, which wakes the agent itself, so
// waking every agent for every new Node would double the reconciles per
// join across the cluster.
func newNodeDirectory(cfg *rest.Config, onChange func(), hasPeer func(name string) bool) (*nodeDirectory, error) {
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("metadata client for Nodes: %w", err)
	}
	inf := metadatainformer.NewSharedInformerFactory(mc, 0).ForResource(corev1.SchemeGroupVersion.WithResource("nodes")).Informer()
	if err := inf.SetTransform(func(obj any) (any, error) {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion}}, nil
		}
		return obj, nil
	}); err != nil {
		return nil, err
	}
	d := &nodeDirectory{informer: inf, synced: make(chan struct{})}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			// The initial list wakes nobody: the first reconcile waits for it.
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok && d.Synced() && hasPeer(m.Name) {
				onChange()
			}
		},
		DeleteFunc: func(any) { onChange() },
	}); err != nil {
		return nil, err
	}
	return d, nil
}

// Start runs the informer until ctx ends (a manager.Runnable).
func (d *nodeDirectory) Start(ctx context.Context) error {
	go d.informer.Run(ctx.Done())
	if !toolscache.WaitForCacheSync(ctx.Done(), d.informer.HasSynced) {
		return nil
	}
	close(d.synced)
	<-ctx.Done()
	return nil
}

// UID is the UID of the Node with this name, if it exists. It satisfies
// wgv1.NodeUIDs.
func (d *nodeDirectory) UID(name string) (types.UID, bool) {
	obj, ok, err := d.informer.GetStore().GetByKey(name)
	if err != nil || !ok {
		return "", false
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return "", false
	}
	return m.UID, true
}

// Synced reports whether the directory has the full list of Nodes.
func (d *nodeDirectory) Synced() bool {
	select {
	case <-d.synced:
		return true
	default:
		return false
	}
}

// WaitForSync blocks until the directory has the full list of Nodes; false
// when ctx ends first.
func (d *nodeDirectory) WaitForSync(ctx context.Context) bool {
	select {
	case <-d.synced:
		return true
	case <-ctx.Done():
		return false
	}
}

// nodeAddrs are the addresses the Node reports (InternalIP, ExternalIP).
func nodeAddrs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
