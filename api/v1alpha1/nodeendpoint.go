package v1alpha1

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// NodeAddrs are a Node's InternalIP and ExternalIP addresses
// (status.addresses, written by its kubelet or cloud provider), unmapped,
// in the Node's order, without repeats: the addresses that are the node's
// own. No external MeshPeer may route them into the tunnel, and they are the
// only addresses the node's agent may announce as its endpoint.
func NodeAddrs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(out, ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// WantOwnEndpoint says what wgmesh.io/endpoint accepts on a Node whose own
// addresses (NodeAddrs) are addrs.
func WantOwnEndpoint(node string, addrs []netip.Addr) string {
	own := "none"
	if len(addrs) > 0 {
		s := make([]string, len(addrs))
		for i, a := range addrs {
			s[i] = a.String()
		}
		own = strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s whose address is one of Node %s's own (its InternalIP or ExternalIP: %s); a node announces only its own address, set %s for one the Node does not list",
		WantEndpointIP, node, own, AnnotationForceEndpoint)
}

// CheckOwnEndpoint checks the endpoint a node's agent announces
// (wgmesh.io/endpoint): host:port with an IP address that is one of the
// Node's own (NodeAddrs). Every node's endpoint is an underlay address that
// no external MeshPeer may claim, so an agent announcing another machine's
// address could evict that machine's peer from the mesh. The value of the
// Node's wgmesh.io/force-endpoint (a user's) is accepted too. The chart's
// admission policy wgmesh-agent-own-node says the same to the API server.
func CheckOwnEndpoint(n *corev1.Node, endpoint string) error {
	if force, ok := n.Annotations[AnnotationForceEndpoint]; ok && force != "" && force == endpoint {
		return nil
	}
	addrs := NodeAddrs(n)
	hp, err := ParseEndpoint(endpoint, false)
	if err == nil && slices.Contains(addrs, hp.Addr.Unmap()) {
		return nil
	}
	return fmt.Errorf("Node %s annotation %s=%q: want %s", n.Name, AnnotationEndpoint, endpoint, WantOwnEndpoint(n.Name, addrs))
}
