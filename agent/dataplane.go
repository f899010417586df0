package agent

import (
	"context"
	"net/netip"
)

// NodeState is what the node-local parts of the data plane depend on. The
// agent computes it on every reconcile, after the WireGuard link, the pod
// bridge and the routes are in place.
type NodeState struct {
	NodeName string
	// PodCIDRs are the node's spec.podCIDRs (empty until the operator has
	// assigned them: then a component should leave pod networking off).
	PodCIDRs []netip.Prefix
	// BridgeName is the pod bridge the agent keeps (wgmesh-br0).
	BridgeName string
	// BridgeGateways are the bridge's addresses: the first address of each
	// pod CIDR with its prefix length, IPv4 first.
	BridgeGateways []netip.Prefix
	// TunnelName is the WireGuard link (wgmesh0).
	TunnelName string
	// MTU is the mesh MTU, already set on the tunnel and the bridge; pods
	// must use it.
	MTU int
	// ClusterCIDRs and ServiceCIDRs are --cluster-cidrs and --service-cidrs.
	ClusterCIDRs []netip.Prefix
	ServiceCIDRs []netip.Prefix
	// NodePodCIDRs are the pod CIDRs of every node the agent knows (its
	// own and every node MeshPeer's): the leak guard covers them all.
	NodePodCIDRs []netip.Prefix
	// ExternalPeerRanges are the allowedIPs of the external peers in the
	// mesh (those the topology accepted): they too travel only encrypted,
	// so the leak guard covers them, as they come and go.
	ExternalPeerRanges []netip.Prefix
	// Event records a Kubernetes Event on this node's Node object (type is
	// Normal or Warning); components report what they changed and why.
	Event func(eventType, reason, message string)
}

// NodeDataplane is a node-local component the agent reconciles after the
// mesh (tunnel, bridge, routes): the CNI configuration and plugin install
// (agent/cniinstall), egress masquerade (agent/egress), service NAT. Apply is
// level-based and idempotent and is called on every reconcile, including the
// periodic resync, so it must write nothing when all is in place. An error
// is logged, counted and retried; it does not stop the other components.
type NodeDataplane interface {
	// Name identifies the component in logs, metrics and events.
	Name() string
	Apply(ctx context.Context, st NodeState) error
	// Cleanup undoes what Apply did; called only when the agent removes
	// wgmesh from the node (uninstall, --cleanup-on-exit).
	Cleanup(ctx context.Context) error
}
