package netpol

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Cluster is everything NetworkPolicy decisions depend on. Slices are in
// no particular order; Evaluate does not modify them.
type Cluster struct {
	Namespaces []*Namespace
	Pods       []*Pod
	Nodes      []*Node
	Policies   []*Policy
}

// Namespace is a namespace's name and labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Pod is what policies see of a pod.
type Pod struct {
	Namespace, Name string
	UID             types.UID
	Labels          map[string]string
	// IPs are status.podIPs, of both families.
	IPs         []netip.Addr
	Node        string
	HostNetwork bool
	Phase       corev1.PodPhase
	// Ports are the named container ports (named ports resolve on them).
	Ports []ContainerPort
}

// ContainerPort is a named container port.
type ContainerPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Node is a node's name and the addresses its host traffic comes from:
// status.addresses (InternalIP, ExternalIP) and its pod bridge gateways.
type Node struct {
	Name  string
	Addrs []netip.Addr
}

// Key is "<namespace>/<name>".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Selectable says whether policies can select the pod at all, as a subject
// or as a pod/namespace peer: not hostNetwork (its address is the node's),
// with an address, and not finished (a Succeeded or Failed pod's address is
// released and may be reused).
func (p *Pod) Selectable() bool {
	return !p.HostNetwork && len(p.IPs) > 0 && p.Phase != corev1.PodSucceeded && p.Phase != corev1.PodFailed
}

// HasIP says whether a is one of the pod's addresses.
func (p *Pod) HasIP(a netip.Addr) bool { return slices.Contains(p.IPs, a) }

// Protocol is an IP protocol number (meta l4proto).
type Protocol uint8

// The protocols policies name, and the ICMPs a connection may carry.
const (
	ICMP   Protocol = 1
	TCP    Protocol = 6
	UDP    Protocol = 17
	ICMPv6 Protocol = 58
	SCTP   Protocol = 132
)

func (p Protocol) String() string {
	switch p {
	case ICMP:
		return "ICMP"
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case ICMPv6:
		return "ICMPv6"
	case SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("protocol %d", uint8(p))
}

// ParseProtocol parses a Kubernetes protocol name (TCP, UDP, SCTP; ""
// is TCP, the API's default).
func ParseProtocol(p corev1.Protocol) (Protocol, error) {
	switch p {
	case "", corev1.ProtocolTCP:
		return TCP, nil
	case corev1.ProtocolUDP:
		return UDP, nil
	case corev1.ProtocolSCTP:
		return SCTP, nil
	}
	return 0, fmt.Errorf("protocol %q is not supported: want TCP, UDP or SCTP", string(p))
}

// Direction is ingress or egress.
type Direction uint8

const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// LabelNamespaceName is the label the API server puts on every namespace,
// with the namespace's name as value (immutable).
const LabelNamespaceName = corev1.LabelMetadataName

// namespaceLabels are a namespace's labels as policies match them: with
// kubernetes.io/metadata.name=<name>, which the API server guarantees.
// ns may be nil (a namespace not seen yet).
func namespaceLabels(name string, ns *Namespace) map[string]string {
	if ns != nil && ns.Labels[LabelNamespaceName] == name {
		return ns.Labels
	}
	l := map[string]string{}
	if ns != nil {
		maps.Copy(l, ns.Labels)
	}
	l[LabelNamespaceName] = name
	return l
}
