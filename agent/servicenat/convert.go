package servicenat

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/wgmesh/wgmesh/nft"
)

// Labels kube-proxy honours, and so do we.
const (
	// LabelServiceProxyName hands a Service to another proxy.
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// LabelHeadless marks the EndpointSlices of headless Services.
	LabelHeadless = "service.kubernetes.io/headless"
	// defaultAffinityTimeout is sessionAffinityConfig's default (3 h).
	defaultAffinityTimeout = 10800 * time.Second
)

// Problem is input the NAT cannot use: it is skipped and reported (log
// line, Event on the object); everything else keeps working.
type Problem struct {
	Kind, Namespace, Name string
	Field, Value          string
	Reason                string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s %s/%s: %s=%q %s", p.Kind, p.Namespace, p.Name, p.Field, p.Value, p.Reason)
}

// Proxied tells whether a Service is ours to proxy: not headless, not
// ExternalName, not handed to another proxy by label.
func Proxied(svc *corev1.Service) bool {
	if _, ok := svc.Labels[LabelServiceProxyName]; ok {
		return false
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	return svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone
}

// ConvertOptions is what conversion needs to know about the node and cluster.
type ConvertOptions struct {
	NodeName     string
	ServiceCIDRs []netip.Prefix
	// Reserved are the addresses no externalIP or load-balancer IP may
	// take (reserved.go); the service CIDRs are always among them.
	Reserved Reserved
}

// Convert builds the model of a Service and its EndpointSlices. Bad
// fields are left out and returned as Problems; the rest of the Service
// still works.
func Convert(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, o ConvertOptions) (Service, []Problem) {
	var probs []Problem
	bad := func(kind, ns, name, field, value, reason string) {
		probs = append(probs, Problem{Kind: kind, Namespace: ns, Name: name, Field: field, Value: value, Reason: reason})
	}
	svcBad := func(field, value, reason string) { bad("Service", svc.Namespace, svc.Name, field, value, reason) }
	s := Service{ServiceKey: ServiceKey{svc.Namespace, svc.Name}}

	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	for i, v := range ips {
		a, err := netip.ParseAddr(v)
		field := fmt.Sprintf("spec.clusterIPs[%d]", i)
		switch {
		case err != nil:
			svcBad(field, v, "is not an IP address")
		case len(o.ServiceCIDRs) > 0 && !inAny(a, o.ServiceCIDRs):
			svcBad(field, v, fmt.Sprintf("is outside the service CIDRs %v (--service-cidrs)", o.ServiceCIDRs))
		default:
			s.ClusterIPs = append(s.ClusterIPs, a.Unmap())
		}
	}
	reserved := o.Reserved
	for _, c := range o.ServiceCIDRs {
		reserved.AddPrefix(c, "in the service CIDR "+c.Masked().String()+" (ClusterIPs are the API server's to allocate)")
	}
	for i, v := range svc.Spec.ExternalIPs {
		field := fmt.Sprintf("spec.externalIPs[%d]", i)
		a, err := netip.ParseAddr(v)
		if err != nil {
			svcBad(field, v, "is not an IP address")
			continue
		}
		if why := reserved.externalRefusal(a); why != "" {
			svcBad(field, v, why)
			continue
		}
		s.ExternalIPs = append(s.ExternalIPs, a.Unmap())
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for i, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
				// ipMode Proxy: the load balancer proxies, traffic arrives
				// for the node, not for this address.
				continue
			}
			field := fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i)
			a, err := netip.ParseAddr(ing.IP)
			if err != nil {
				svcBad(field, ing.IP, "is not an IP address")
				continue
			}
			if why := reserved.externalRefusal(a); why != "" {
				svcBad(field, ing.IP, why)
				continue
			}
			s.LoadBalancerIPs = append(s.LoadBalancerIPs, a.Unmap())
		}
		for i, v := range svc.Spec.LoadBalancerSourceRanges {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				svcBad(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), v, "is not a CIDR")
				continue
			}
			s.SourceRanges = append(s.SourceRanges, p.Masked())
		}
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		s.AffinityTimeout = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			s.AffinityTimeout = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	external := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	s.ExternalLocal = external && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	s.InternalLocal = svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	if s.ExternalLocal && svc.Spec.HealthCheckNodePort > 0 && svc.Spec.HealthCheckNodePort < 65536 {
		s.HealthCheckNodePort = uint16(svc.Spec.HealthCheckNodePort)
	}

	for i, sp := range svc.Spec.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		proto, ok := protocolOf(sp.Protocol)
		if !ok {
			svcBad(field+".protocol", string(sp.Protocol), "is not TCP, UDP or SCTP")
			continue
		}
		if sp.Port < 1 || sp.Port > 65535 {
			svcBad(field+".port", fmt.Sprint(sp.Port), "is not a port (1-65535)")
			continue
		}
		p := Port{Name: sp.Name, Protocol: proto, Port: uint16(sp.Port)}
		if external && sp.NodePort > 0 && sp.NodePort < 65536 {
			p.NodePort = uint16(sp.NodePort)
		}
		p.Endpoints, probs = endpointsFor(sp, slices, o.NodeName, probs)
		s.Ports = append(s.Ports, p)
	}
	return s, probs
}

// endpointsFor collects the endpoints of Service port sp: the slice port
// with the same name and protocol gives the (resolved) target port.
func endpointsFor(sp corev1.ServicePort, slices []*discoveryv1.EndpointSlice, node string, probs []Problem) ([]Endpoint, []Problem) {
	seen := map[netip.AddrPort]bool{}
	var out []Endpoint
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var port int32 = -1
		for j, p := range sl.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if name != sp.Name || proto != sp.Protocol {
				continue
			}
			if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
				v := "<nil>"
				if p.Port != nil {
					v = fmt.Sprint(*p.Port)
				}
				probs = append(probs, Problem{Kind: "EndpointSlice", Namespace: sl.Namespace, Name: sl.Name,
					Field: fmt.Sprintf("ports[%d].port", j), Value: v, Reason: "is not a port (1-65535)"})
				continue
			}
			port = *p.Port
		}
		if port < 0 {
			continue
		}
		for j, e := range sl.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			a, err := netip.ParseAddr(e.Addresses[0])
			if err != nil || (sl.AddressType == discoveryv1.AddressTypeIPv4) != a.Unmap().Is4() {
				probs = append(probs, Problem{Kind: "EndpointSlice", Namespace: sl.Namespace, Name: sl.Name,
					Field: fmt.Sprintf("endpoints[%d].addresses[0]", j), Value: e.Addresses[0],
					Reason: fmt.Sprintf("is not an %s address", sl.AddressType)})
				continue
			}
			ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
			if seen[ap] {
				continue
			}
			seen[ap] = true
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := ready
			if e.Conditions.Serving != nil {
				serving = *e.Conditions.Serving
			}
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			out = append(out, Endpoint{Addr: ap.Addr(), Port: ap.Port(), Local: e.NodeName != nil && *e.NodeName == node,
				Ready: ready && !terminating, Serving: serving, Terminating: terminating})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AddrPort().Compare(out[j].AddrPort()) < 0 })
	return out, probs
}

func protocolOf(p corev1.Protocol) (nft.Protocol, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return nft.TCP, true
	case corev1.ProtocolUDP:
		return nft.UDP, true
	case corev1.ProtocolSCTP:
		return nft.SCTP, true
	}
	return "", false
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}
