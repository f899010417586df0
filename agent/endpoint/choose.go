// Package endpoint decides which host:port this node announces to the mesh
// and publishes it, with the public key, as annotations on the node's own
// Node object.
//
// Endpoint choice, first match wins:
//  1. the Node annotation wgmesh.io/force-endpoint (set by a user; DNS allowed),
//  2. the --endpoint flag (host:port),
//  3. the Node's status address of --endpoint-address-type (InternalIP by
//     default, or ExternalIP), IPv4 preferred over IPv6 when both exist,
//  4. the first global address on the interface that carries the default
//     route (IPv4 first, then IPv6).
//
// Addresses without a port get the listen port; IPv6 hosts are bracketed.
// The agent announces the endpoint only when it is the force-endpoint or one
// of the Node's own InternalIP/ExternalIP addresses (wgv1.CheckOwnEndpoint,
// which the API server's admission policy and the operator enforce too);
// otherwise it announces its key alone and says why in an Event.
//
// Besides that one endpoint it announces its candidates (Candidates,
// wgmesh.io/candidates): every InternalIP as private and every ExternalIP
// as public, from which each pair of nodes with locations chooses its path
// (agent/paths).
package endpoint

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Source says which rule produced the endpoint.
type Source string

const (
	SourceAnnotation   Source = "annotation"
	SourceFlag         Source = "flag"
	SourceNodeAddress  Source = "node-address"
	SourceDefaultRoute Source = "default-route"
)

// Input is everything Choose looks at.
type Input struct {
	// Node is this agent's own Node.
	Node *corev1.Node
	// Flag is the --endpoint value (may be empty).
	Flag string
	// AddressType is the Node address type to use (InternalIP or ExternalIP).
	AddressType corev1.NodeAddressType
	// DefaultRouteAddrs returns the addresses of the default-route
	// interface. It dumps the routing table, so Choose calls it only when
	// the rules before it chose nothing (the common case never does).
	DefaultRouteAddrs func() []netip.Addr
	// ListenPort is the WireGuard port.
	ListenPort int
}

// Choose returns the endpoint this node announces and which rule chose it.
func Choose(in Input) (string, Source, error) {
	if in.Node != nil {
		if v, ok := in.Node.Annotations[wgv1.AnnotationForceEndpoint]; ok && v != "" {
			if err := Validate(v); err != nil {
				return "", "", fmt.Errorf("Node %s annotation %s=%q: %w", in.Node.Name, wgv1.AnnotationForceEndpoint, v, err)
			}
			return v, SourceAnnotation, nil
		}
	}
	if in.Flag != "" {
		if err := Validate(in.Flag); err != nil {
			return "", "", fmt.Errorf("flag --endpoint=%q: %w", in.Flag, err)
		}
		return in.Flag, SourceFlag, nil
	}
	if in.Node != nil {
		typ := in.AddressType
		if typ == "" {
			typ = corev1.NodeInternalIP
		}
		var addrs []netip.Addr
		for _, a := range in.Node.Status.Addresses {
			if a.Type != typ {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				addrs = append(addrs, ip)
			}
		}
		if ip, ok := pick(addrs); ok {
			return JoinHostPort(ip, in.ListenPort), SourceNodeAddress, nil
		}
	}
	if in.DefaultRouteAddrs != nil {
		if ip, ok := pick(in.DefaultRouteAddrs()); ok {
			return JoinHostPort(ip, in.ListenPort), SourceDefaultRoute, nil
		}
	}
	return "", "", fmt.Errorf("no endpoint: no %s annotation, no --endpoint flag, no Node address of type %s and no global address on the default-route interface; set one of them", wgv1.AnnotationForceEndpoint, in.AddressType)
}

// pick prefers the first usable IPv4 address, then the first usable IPv6.
func pick(addrs []netip.Addr) (netip.Addr, bool) {
	var v6 netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !usable(a) {
			continue
		}
		if a.Is4() {
			return a, true
		}
		if !v6.IsValid() {
			v6 = a
		}
	}
	return v6, v6.IsValid()
}

func usable(a netip.Addr) bool {
	return a.IsValid() && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsMulticast() && !a.IsUnspecified()
}

// JoinHostPort formats ip:port, bracketing IPv6.
func JoinHostPort(ip netip.Addr, port int) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

// Validate checks that s is host:port with a port in 1-65535 and a host that
// is an IPv4 address, an [IPv6] address or a DNS name (wgv1.ParseEndpoint,
// the one endpoint validator).
func Validate(s string) error {
	_, err := wgv1.ParseEndpoint(s, true)
	return err
}
