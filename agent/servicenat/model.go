package servicenat

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/nft"
)

// ServiceKey names a Service.
type ServiceKey struct{ Namespace, Name string }

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// Service is the part of a Service (with its endpoints) the NAT needs, after
// conversion from the API objects (convert.go). Addresses are of both
// families; each family's table takes its own.
type Service struct {
	ServiceKey
	ClusterIPs []netip.Addr
	// ExternalIPs and LoadBalancerIPs (ingress IPs without ipMode Proxy)
	// are both "external" destinations.
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// SourceRanges is spec.loadBalancerSourceRanges: when set, traffic to
	// the load-balancer IPs from elsewhere is dropped.
	SourceRanges []netip.Prefix
	// AffinityTimeout > 0 is sessionAffinity ClientIP with that timeout.
	AffinityTimeout time.Duration
	// ExternalLocal is externalTrafficPolicy Local, InternalLocal is
	// internalTrafficPolicy Local.
	ExternalLocal bool
	InternalLocal bool
	// HealthCheckNodePort is served by the health checker with ExternalLocal.
	HealthCheckNodePort uint16
	Ports               []Port
}

// Port is one Service port and its endpoints (targetPort resolved).
type Port struct {
	Name     string
	Protocol nft.Protocol
	Port     uint16
	NodePort uint16 // 0 = none
	// Endpoints are all endpoints of the port, of both families, sorted.
	Endpoints []Endpoint
}

// Endpoint is one address:port serving a Service port.
type Endpoint struct {
	Addr netip.Addr
	Port uint16
	// Local is true when the endpoint's nodeName is this node.
	Local bool
	// Ready, Serving and Terminating are the EndpointSlice conditions.
	Ready, Serving, Terminating bool
}

// AddrPort is the endpoint's address and port.
func (e Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.Addr, e.Port) }

// Input is everything the ruleset depends on.
type Input struct {
	// ClusterCIDRs are the pod ranges: traffic from elsewhere to a
	// ClusterIP is masqueraded (kube-proxy's --cluster-cidr).
	ClusterCIDRs []netip.Prefix
	// ServiceCIDRs: unallocated addresses in them are dropped.
	ServiceCIDRs []netip.Prefix
	// NodePortIPs are the addresses NodePorts are served on.
	NodePortIPs []netip.Addr
	// SNATAddrs is, per family, the source used for masqueraded traffic
	// that leaves through the WireGuard link (the local pod bridge
	// gateway): the link has no address of its own, and masquerade would
	// otherwise pick the underlay address, whose replies would then come
	// back outside the tunnel.
	SNATAddrs []netip.Addr
	// TunnelIf is the WireGuard link (wgmesh0).
	TunnelIf string
	Services []Service
}

// ofFamily filters prefixes by family.
func prefixesOf(ps []netip.Prefix, f nft.Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if nft.FamilyOf(p.Addr()) == f {
			out = append(out, p.Masked())
		}
	}
	return out
}

func addrsOf(as []netip.Addr, f nft.Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if nft.FamilyOf(a) == f {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func endpointsOf(es []Endpoint, f nft.Family) []Endpoint {
	var out []Endpoint
	for _, e := range es {
		if nft.FamilyOf(e.Addr) == f {
			out = append(out, e)
		}
	}
	return out
}

// portID is the per-port part of chain names: ns/name/proto/portname, as
// kube-proxy spells it.
func portID(k ServiceKey, p Port) string {
	return fmt.Sprintf("%s/%s/%s/%s", k.Namespace, k.Name, p.Protocol, p.Name)
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
