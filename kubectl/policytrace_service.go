package kubectl

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/netpol"
)

// A Service target of `policy trace`: NetworkPolicy judges the endpoint the
// service NAT chose, so each ready endpoint is traced with the port it is
// sent to.

// serviceWithIP finds the Service whose ClusterIP is a, if any.
func (t *traceObjects) serviceWithIP(a netip.Addr) (*objectRef, error) {
	var svcs corev1.ServiceList
	if err := t.c.List(t.ctx, &svcs); err != nil {
		if apierrors.IsForbidden(err) {
			t.note("Services cannot be listed in every namespace (%v): if %s is a ClusterIP, trace --to svc/NAMESPACE/NAME instead", err, a)
			return nil, nil
		}
		return nil, fmt.Errorf("--to %s: listing Services to find whether it is a ClusterIP: %w", a, err)
	}
	for _, svc := range svcs.Items {
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, s := range ips {
			if ip, err := netip.ParseAddr(s); err == nil && ip.Unmap() == a {
				return &objectRef{Namespace: svc.Namespace, Name: svc.Name}, nil
			}
		}
	}
	return nil, nil
}

// serviceEndpoint is one ready endpoint of a Service, after the NAT.
type serviceEndpoint struct {
	addr    netip.Addr
	port    uint16
	pod     *corev1.Pod
	mapping string
}

// service reads the Service and its ready endpoints of the family the
// client uses, with the port the service NAT sends to on each.
func (t *traceObjects) service(ref objectRef, port portArg, src *corev1.Pod) (*traceService, []serviceEndpoint, error) {
	svc := &corev1.Service{}
	if err := t.c.Get(t.ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, svc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("--to svc/%s: Service %s not found", ref, ref)
		}
		return nil, nil, fmt.Errorf("--to svc/%s: reading Service %s: %w", ref, ref, err)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil, fmt.Errorf("--to svc/%s: Service %s is of type ExternalName (%s): it has no endpoints to trace; clients connect to that name directly", ref, ref, svc.Spec.ExternalName)
	}
	var sp *corev1.ServicePort
	var have []string
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		proto, _ := netpol.ParseProtocol(p.Protocol)
		have = append(have, servicePortString(p))
		if proto == port.Proto && (port.Name != "" && p.Name == port.Name || port.Name == "" && p.Port == int32(port.Number)) {
			sp = p
		}
	}
	if sp == nil {
		return nil, nil, fmt.Errorf("--port %s: Service %s has no such port (spec.ports: %s)", port, ref, dash(strings.Join(have, ", ")))
	}
	target := sp.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 || target.Type == intstr.String && target.StrVal == "" {
		target = intstr.FromInt32(sp.Port)
	}
	out := &traceService{Namespace: ref.Namespace, Name: ref.Name, ClusterIP: svc.Spec.ClusterIP, Port: sp.Port, PortName: sp.Name, Protocol: port.Proto.String(), TargetPort: target.String()}

	// The family: the Service's first that the client has.
	own := podAddrs(src)
	family := func(is4 bool) bool {
		return slices.ContainsFunc(own, func(a netip.Addr) bool { return a.Is4() == is4 })
	}
	var fams []bool
	for _, f := range svc.Spec.IPFamilies {
		fams = append(fams, f == corev1.IPv4Protocol)
	}
	if len(fams) == 0 {
		if a, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
			fams = append(fams, a.Is4())
		} else {
			fams = []bool{true, false}
		}
	}
	is4, ok := false, false
	for _, f := range fams {
		if family(f) {
			is4, ok = f, true
			break
		}
	}
	if !ok {
		return nil, nil, fmt.Errorf("--to svc/%s: Service %s (spec.ipFamilies %v) has no address family that pod %s/%s (addresses %v) has", ref, ref, svc.Spec.IPFamilies, src.Namespace, src.Name, own)
	}

	var esl discoveryv1.EndpointSliceList
	if err := t.c.List(t.ctx, &esl, client.InNamespace(ref.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: ref.Name}); err != nil {
		return nil, nil, fmt.Errorf("--to svc/%s: listing the EndpointSlices of Service %s: %w", ref, ref, err)
	}
	var eps []serviceEndpoint
	seen := map[netip.AddrPort]bool{}
	for _, es := range esl.Items {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 || (es.AddressType == discoveryv1.AddressTypeIPv4) != is4 {
			continue
		}
		// The EndpointSlice controller names each port as the Service does,
		// with the number it resolved on the endpoints' pods.
		var epPort *discoveryv1.EndpointPort
		for i := range es.Ports {
			p := &es.Ports[i]
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if p.Port != nil && deref(p.Name) == sp.Name && netpolProto(proto) == port.Proto {
				epPort = p
			}
		}
		if epPort == nil {
			if len(es.Endpoints) > 0 {
				t.note("EndpointSlice %s/%s has no port named %q: its %d endpoints are not traced", es.Namespace, es.Name, sp.Name, len(es.Endpoints))
			}
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				out.NotReady++
				continue
			}
			if len(ep.Addresses) == 0 {
				continue
			}
			a, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				t.note("EndpointSlice %s/%s: endpoints[].addresses[0] %q is not an address: left out", es.Namespace, es.Name, ep.Addresses[0])
				continue
			}
			a = a.Unmap()
			se := serviceEndpoint{addr: a, port: uint16(*epPort.Port)}
			if seen[netip.AddrPortFrom(a, se.port)] {
				continue
			}
			seen[netip.AddrPortFrom(a, se.port)] = true
			owner := a.String()
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				pref := objectRef{Namespace: ep.TargetRef.Namespace, Name: ep.TargetRef.Name}
				if pref.Namespace == "" {
					pref.Namespace = es.Namespace
				}
				p, err := t.pod("--to svc/"+ref.String()+": endpoint "+a.String(), pref)
				if err != nil {
					t.note("%v: judged as no pod's address", err)
				} else {
					se.pod = p
					owner = "pod " + pref.String()
				}
			}
			se.mapping = fmt.Sprintf("service port %s -> targetPort %s -> %s/%d on %s", servicePortString(sp), target.String(), port.Proto, se.port, owner)
			eps = append(eps, se)
		}
	}
	slices.SortFunc(eps, func(a, b serviceEndpoint) int { return a.addr.Compare(b.addr) })
	if out.NotReady > 0 {
		t.note("Service %s: %s not ready, not traced (the service NAT sends nothing to endpoints that are not ready)", ref, plural(out.NotReady, "endpoint"))
	}
	if len(eps) == 0 {
		t.note("Service %s has no ready endpoint for port %s: the connection is refused by the service NAT before any NetworkPolicy", ref, servicePortString(sp))
	}
	return out, eps, nil
}

func servicePortString(p *corev1.ServicePort) string {
	proto := p.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	s := strconv.Itoa(int(p.Port)) + "/" + string(proto)
	if p.Name != "" {
		s += " (" + p.Name + ")"
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
