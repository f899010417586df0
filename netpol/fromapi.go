package netpol

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	netutils "k8s.io/utils/net"

	"github.com/wgmesh/wgmesh/podnet"
)

// Objects are the API objects a Cluster is made from.
type Objects struct {
	Namespaces []corev1.Namespace
	Pods       []corev1.Pod
	Nodes      []corev1.Node
	Policies   []networkingv1.NetworkPolicy
}

// FromAPI normalizes API objects into a Cluster (policies sorted by key).
// It never fails: invalid policies carry their Errors and fail closed.
func FromAPI(o Objects) *Cluster {
	c := &Cluster{}
	for i := range o.Namespaces {
		c.Namespaces = append(c.Namespaces, NamespaceFromAPI(&o.Namespaces[i]))
	}
	for i := range o.Pods {
		c.Pods = append(c.Pods, PodFromAPI(&o.Pods[i]))
	}
	for i := range o.Nodes {
		c.Nodes = append(c.Nodes, NodeFromAPI(&o.Nodes[i]))
	}
	for i := range o.Policies {
		c.Policies = append(c.Policies, PolicyFromAPI(&o.Policies[i]))
	}
	slices.SortFunc(c.Policies, func(a, b *Policy) int { return cmp.Compare(a.Key(), b.Key()) })
	return c
}

// NamespaceFromAPI keeps a namespace's name and labels, with
// kubernetes.io/metadata.name set as the API server sets it.
func NamespaceFromAPI(ns *corev1.Namespace) *Namespace {
	l := maps.Clone(ns.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[LabelNamespaceName] = ns.Name
	return &Namespace{Name: ns.Name, Labels: l}
}

// PodFromAPI keeps what policies see of a pod. Addresses that do not parse
// and container ports without a name or with an unknown protocol are left
// out (the API server validates them).
func PodFromAPI(p *corev1.Pod) *Pod {
	out := &Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		UID:         p.UID,
		Labels:      maps.Clone(p.Labels),
		Node:        p.Spec.NodeName,
		HostNetwork: p.Spec.HostNetwork,
		Phase:       p.Status.Phase,
	}
	ips := make([]string, 0, len(p.Status.PodIPs))
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = append(ips, p.Status.PodIP)
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out.IPs, a.Unmap()) {
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			proto, err := ParseProtocol(cp.Protocol)
			if cp.Name == "" || err != nil || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
				continue
			}
			out.Ports = append(out.Ports, ContainerPort{Name: cp.Name, Protocol: proto, Port: uint16(cp.ContainerPort)})
		}
	}
	return out
}

// NodeFromAPI keeps a node's name and the addresses its host traffic can
// come from: InternalIP and ExternalIP addresses and the bridge gateway of
// each pod CIDR (podnet.Gateway).
func NodeFromAPI(n *corev1.Node) *Node {
	out := &Node{Name: n.Name}
	add := func(a netip.Addr) {
		if a.IsValid() && !slices.Contains(out.Addrs, a.Unmap()) {
			out.Addrs = append(out.Addrs, a.Unmap())
		}
	}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			add(ip)
		}
	}
	for _, c := range podnet.NodeCIDRs(n) {
		if gw, ok := podnet.Gateway(c); ok {
			add(gw.Addr())
		}
	}
	return out
}

// FieldError is a problem in one field of a NetworkPolicy, and what the
// model does about it.
type FieldError struct {
	Policy string // "<namespace>/<name>"
	Field  string // "spec.ingress[0].from[1].podSelector"
	Err    error  // names the bad value and what would be accepted
	Effect string // "this peer matches nothing"
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("networkpolicy %s: %s: %v (%s)", e.Policy, e.Field, e.Err, e.Effect)
}

func (e *FieldError) Unwrap() error { return e.Err }

// The effects of invalid fields (package comment, "Invalid input fails
// closed").
const (
	effectSubjects = "the policy selects every pod of its namespace and allows nothing"
	effectTypes    = "the policy isolates in both directions"
	effectPeer     = "this peer matches nothing"
	effectPort     = "this port matches nothing"
	effectNothing  = "the policy selects no pod"
)

// PolicyFromAPI normalizes a NetworkPolicy. It never fails: problems are
// in the result's Errors, and each fails closed.
func PolicyFromAPI(np *networkingv1.NetworkPolicy) *Policy {
	p := &Policy{Namespace: np.Namespace, Name: np.Name}
	fail := func(field string, err error, effect string) error {
		fe := &FieldError{Policy: p.Key(), Field: field, Err: err, Effect: effect}
		p.Errors = append(p.Errors, fe)
		return fe
	}
	if np.Namespace == "" {
		fail("metadata.namespace", errors.New(`"" is empty: want the policy's namespace`), effectNothing)
	}
	spec := &np.Spec

	var ingress, egress, unknown bool
	if len(spec.PolicyTypes) == 0 {
		ingress, egress = true, len(spec.Egress) > 0
	}
	for i, t := range spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		default:
			unknown = true
			fail(fmt.Sprintf("spec.policyTypes[%d]", i), fmt.Errorf("%q is not a policy type: want Ingress or Egress", string(t)), effectTypes)
		}
	}
	p.Ingress, p.Egress = ingress || unknown, egress || unknown

	sel, err := ParseSelector(&spec.PodSelector)
	if err != nil {
		fail("spec.podSelector", err, effectSubjects)
		p.PodSelector = Everything()
		if p.Ingress {
			p.IngressRules = []Rule{}
		}
		if p.Egress {
			p.EgressRules = []Rule{}
		}
		return p
	}
	p.PodSelector = sel

	if ingress {
		p.IngressRules = make([]Rule, len(spec.Ingress))
		for i, r := range spec.Ingress {
			path := fmt.Sprintf("spec.ingress[%d]", i)
			p.IngressRules[i] = Rule{
				Peers: peersFromAPI(p.Namespace, path+".from", r.From, fail),
				Ports: portsFromAPI(path+".ports", r.Ports, fail),
			}
		}
	} else if p.Ingress {
		p.IngressRules = []Rule{}
	}
	if egress {
		p.EgressRules = make([]Rule, len(spec.Egress))
		for i, r := range spec.Egress {
			path := fmt.Sprintf("spec.egress[%d]", i)
			p.EgressRules[i] = Rule{
				Peers: peersFromAPI(p.Namespace, path+".to", r.To, fail),
				Ports: portsFromAPI(path+".ports", r.Ports, fail),
			}
		}
	} else if p.Egress {
		p.EgressRules = []Rule{}
	}
	return p
}

type failFunc func(field string, err error, effect string) error

func peersFromAPI(namespace, path string, in []networkingv1.NetworkPolicyPeer, fail failFunc) []Peer {
	if len(in) == 0 {
		return nil
	}
	out := make([]Peer, len(in))
	for i, ap := range in {
		out[i] = peerFromAPI(namespace, fmt.Sprintf("%s[%d]", path, i), &ap, fail)
	}
	return out
}

func peerFromAPI(namespace, path string, ap *networkingv1.NetworkPolicyPeer, fail failFunc) Peer {
	if ap.IPBlock != nil {
		if ap.PodSelector != nil || ap.NamespaceSelector != nil {
			return Peer{Err: fail(path, errors.New("ipBlock is set with podSelector or namespaceSelector: want ipBlock alone"), effectPeer)}
		}
		b, err := ipBlockFromAPI(ap.IPBlock)
		if err != nil {
			return Peer{Err: fail(path+".ipBlock", err, effectPeer)}
		}
		return Peer{Block: b}
	}
	if ap.PodSelector == nil && ap.NamespaceSelector == nil {
		return Peer{Err: fail(path, errors.New("the peer is empty: want podSelector, namespaceSelector or ipBlock"), effectPeer)}
	}
	ps := &PeerSelector{}
	if ap.NamespaceSelector == nil {
		ps.Namespace = namespace
	} else {
		s, err := ParseSelector(ap.NamespaceSelector)
		if err != nil {
			return Peer{Err: fail(path+".namespaceSelector", err, effectPeer)}
		}
		ps.Namespaces = s
	}
	s, err := ParseSelector(ap.PodSelector)
	if err != nil {
		return Peer{Err: fail(path+".podSelector", err, effectPeer)}
	}
	ps.Pods = s
	ps.Key = peerKey(ps)
	return Peer{Pods: ps}
}

// ipBlockFromAPI parses cidr and except as the API server's legacy
// validation accepts them (host bits allowed and masked, leading zeros
// read as decimal), and checks that every except is a strict subset of
// cidr. IPv4-mapped IPv6 prefixes are refused: they match no packet.
func ipBlockFromAPI(ab *networkingv1.IPBlock) (*IPBlock, error) {
	cidr, err := parseCIDR(ab.CIDR)
	if err != nil {
		return nil, fmt.Errorf("cidr: %w", err)
	}
	b := &IPBlock{CIDR: cidr}
	for i, s := range ab.Except {
		e, err := parseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("except[%d]: %w", i, err)
		}
		if e.Addr().Is4() != cidr.Addr().Is4() || e.Bits() <= cidr.Bits() || !cidr.Contains(e.Addr()) {
			return nil, fmt.Errorf("except[%d]: %q is not a strict subset of cidr %q: want a longer prefix inside it", i, s, ab.CIDR)
		}
		b.Except = append(b.Except, e)
	}
	return b, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	_, n, err := netutils.ParseCIDRSloppy(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: want an address and a prefix length such as 10.0.0.0/8 or 2001:db8::/32", s)
	}
	a, _ := netip.AddrFromSlice(n.IP)
	bits, _ := n.Mask.Size()
	if a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 CIDR: want an IPv4 CIDR", s)
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

func portsFromAPI(path string, in []networkingv1.NetworkPolicyPort, fail failFunc) []Port {
	if len(in) == 0 {
		return nil
	}
	out := make([]Port, len(in))
	for i, ap := range in {
		p, field, err := portFromAPI(&ap)
		if err != nil {
			p = Port{Err: fail(fmt.Sprintf("%s[%d]%s", path, i, field), err, effectPort)}
		}
		out[i] = p
	}
	return out
}

// portFromAPI normalizes one port, or says which field is wrong.
func portFromAPI(ap *networkingv1.NetworkPolicyPort) (Port, string, error) {
	var p Port
	var err error
	if ap.Protocol == nil {
		p.Protocol = TCP
	} else if p.Protocol, err = ParseProtocol(*ap.Protocol); err != nil {
		return Port{}, ".protocol", err
	}
	switch {
	case ap.Port == nil:
		if ap.EndPort != nil {
			return Port{}, ".endPort", fmt.Errorf("%d is set without port: want port as well", *ap.EndPort)
		}
	case ap.Port.Type == intstr.Int:
		n := ap.Port.IntVal
		if n < 1 || n > 65535 {
			return Port{}, ".port", fmt.Errorf("%d is out of range: want 1-65535 or a port name", n)
		}
		p.Port = uint16(n)
		if ap.EndPort != nil {
			e := *ap.EndPort
			if e < n || e > 65535 {
				return Port{}, ".endPort", fmt.Errorf("%d is out of range: want %d-65535 (port to 65535)", e, n)
			}
			if e > n {
				p.EndPort = uint16(e)
			}
		}
	default:
		name := ap.Port.StrVal
		if ap.EndPort != nil {
			return Port{}, ".endPort", fmt.Errorf("%d is set with the named port %q: want a port number", *ap.EndPort, name)
		}
		if msgs := validation.IsValidPortName(name); len(msgs) > 0 {
			return Port{}, ".port", fmt.Errorf("%q is not a port name: %s", name, strings.Join(msgs, "; "))
		}
		p.Name = name
	}
	return p, "", nil
}
