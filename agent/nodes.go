package agent

import (
	"context"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
)

// nodeDirectory knows which Nodes exist, with their UIDs, so that a MeshPeer
// counts as a node's only when its controller owner reference is the live
// Node (wgv1.IsNodePeer). It reads the runtime's one Node informer (agent/kube
// keeps little of other nodes' Nodes, so thousands of nodes cost little); it
// wakes the agent only when a Node appears or goes, not on every Node update.
type nodeDirectory struct {
	store  toolscache.Store
	reg    toolscache.ResourceEventHandlerRegistration
	synced chan struct{} // closed once the full list is in
}

// onChange runs when a Node goes (its MeshPeer is no longer a node peer),
// and when one appears whose name a MeshPeer already has (hasPeer): a Node
// normally appears before its MeshPeer, which wakes the agent itself, so
// waking every agent for every new Node would double the reconciles per
// join across the cluster.
func newNodeDirectory(inf toolscache.SharedIndexInformer, onChange func(), hasPeer func(name string) bool) (*nodeDirectory, error) {
	d := &nodeDirectory{store: inf.GetStore(), synced: make(chan struct{})}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			// The initial list wakes nobody: the first reconcile waits for it.
			if n, ok := obj.(*corev1.Node); ok && d.Synced() && hasPeer(n.Name) {
				onChange()
			}
		},
		DeleteFunc: func(any) { onChange() },
	})
	if err != nil {
		return nil, err
	}
	d.reg = reg
	return d, nil
}

// Start marks the directory synced once its handler has seen the full list
// (a manager.Runnable; the informer is the runtime's).
func (d *nodeDirectory) Start(ctx context.Context) error {
	if !toolscache.WaitForCacheSync(ctx.Done(), d.reg.HasSynced) {
		return nil
	}
	close(d.synced)
	<-ctx.Done()
	return nil
}

// UID is the UID of the Node with this name, if it exists. It satisfies
// wgv1.NodeUIDs.
func (d *nodeDirectory) UID(name string) (types.UID, bool) {
	obj, ok, err := d.store.GetByKey(name)
	if err != nil || !ok {
		return "", false
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return "", false
	}
	return n.UID, true
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
