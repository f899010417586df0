package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PublicKey is a WireGuard public key: 32 bytes, base64 encoded.
//
// +kubebuilder:validation:MaxLength=44
// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$')",messageExpression="'publicKey ' + self + ' is not a WireGuard public key: 32 bytes in base64 (44 characters ending in =)'"
type PublicKey string

// Endpoint is host:port, where host is an IPv4 address, an IPv6 address in
// brackets, or a DNS name, and port is 1-65535.
//
// +kubebuilder:validation:MaxLength=261
// +kubebuilder:validation:XValidation:rule="self.matches('^(\\\\[[0-9A-Fa-f:.]+\\\\]|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*):[0-9]{1,5}$') && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535 && self.lastIndexOf(':') <= 253 && (self.startsWith('[') ? (isIP(self.substring(1, self.lastIndexOf(']'))) && ip(self.substring(1, self.lastIndexOf(']'))).family() == 6) : (!self.substring(0, self.lastIndexOf(':')).matches('^[0-9.]+$') || (isIP(self.substring(0, self.lastIndexOf(':'))) && ip(self.substring(0, self.lastIndexOf(':'))).family() == 4)))",messageExpression="'endpoint ' + self + ' is not host:port (IPv4, [IPv6] or DNS name, and a port in 1-65535)'"
type Endpoint string

// CIDR is an IPv4 or IPv6 prefix in canonical form, such as 10.244.1.0/24 or
// 2001:db8:1::/64.
//
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:XValidation:rule="isCIDR(self) && string(cidr(self).masked()) == self",messageExpression="'allowedIPs entry ' + self + ' is not a CIDR in canonical form (such as 10.244.1.0/24 or 2001:db8:1::/64)'"
type CIDR string

// MeshPeerSpec is the WireGuard peer that every node configures. For a node
// peer it is written by the operator only.
type MeshPeerSpec struct {
	// NodeName is the Node this peer is; empty for an external peer (a
	// laptop, a VM, another cluster's gateway).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	NodeName string `json:"nodeName,omitempty"`

	// PublicKey is the peer's WireGuard public key.
	PublicKey PublicKey `json:"publicKey"`

	// Endpoint is where the peer receives WireGuard traffic. Optional for
	// peers behind NAT: they are reached once they have sent a handshake.
	// +optional
	Endpoint Endpoint `json:"endpoint,omitempty"`

	// AllowedIPs are the prefixes routed to this peer and accepted from it.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	AllowedIPs []CIDR `json:"allowedIPs,omitempty"`

	// PersistentKeepalive is the keepalive interval in seconds; 0 or unset
	// turns it off.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	PersistentKeepalive *int32 `json:"persistentKeepalive,omitempty"`

	// Location is the private network the peer shares with others (a cloud
	// network, an office): peers of one location reach each other at their
	// private candidates. For a node peer the operator takes it from the
	// Node's wgmesh.io/location label (or, with --location-from-region, its
	// topology.kubernetes.io/region label). Empty: the peer takes no part in
	// path choice and is reached at spec.endpoint, as before locations.
	// +optional
	Location Location `json:"location,omitempty"`

	// Candidates are every endpoint the peer may be reached at, each with
	// its kind, sorted by kind, then IPv4 first. For a node peer the
	// operator writes them: its agent's wgmesh.io/candidates (the Node's own addresses only), its
	// wgmesh.io/force-endpoint (public) and the addresses other nodes see
	// its handshakes come from (observed, from their
	// status.learnedEndpoints). Each node chooses per peer which one it
	// uses (see the README, "Multi-cloud and offices"); spec.endpoint stays
	// the endpoint of peers without a location or candidates.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Candidates []Candidate `json:"candidates,omitempty"`

	// Relay says whether the peer may relay the traffic of pairs of peers
	// that have no direct path (both behind NAT): prefer (chosen before
	// others), never, or empty (may relay). A relay decrypts and re-encrypts
	// what it relays. For a node peer the operator takes it from the Node's
	// wgmesh.io/relay label (true: prefer, false: never). Only node peers
	// relay.
	// +optional
	Relay RelayPreference `json:"relay,omitempty"`
}

// RelayPreference says whether a peer may relay (spec.relay).
//
// +kubebuilder:validation:Enum=prefer;never
type RelayPreference string

// Relay preferences.
const (
	// RelayPrefer: chosen as a relay before peers without a preference.
	RelayPrefer RelayPreference = "prefer"
	// RelayNever: never chosen as a relay.
	RelayNever RelayPreference = "never"
)

// Location names a private network: a label value (at most 63 letters,
// digits and -_. , beginning and ending with a letter or digit).
//
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",messageExpression="'location ' + self + ' is not a location name: 1-63 letters, digits and -_. beginning and ending with a letter or digit (a label value)'"
type Location string

// CandidateKind says how a candidate endpoint is reached.
//
// +kubebuilder:validation:Enum=private;public;observed
type CandidateKind string

// Candidate kinds.
const (
	// CandidatePrivate is reachable only from the peer's location (a
	// node's InternalIP).
	CandidatePrivate CandidateKind = "private"
	// CandidatePublic is reachable from anywhere (a node's ExternalIP,
	// wgmesh.io/force-endpoint).
	CandidatePublic CandidateKind = "public"
	// CandidateObserved is the address and port other nodes see the peer's
	// handshakes come from: its NAT's mapping, usable for hole punching.
	CandidateObserved CandidateKind = "observed"
)

// Candidate is one endpoint a peer may be reached at.
//
// +kubebuilder:validation:XValidation:rule="self.kind == 'public' || self.endpoint.matches('^(\\\\[[0-9A-Fa-f:.]+\\\\]|[0-9.]+):[0-9]+$')",messageExpression="'candidates endpoint ' + self.endpoint + ' of kind ' + self.kind + ' is not ' + 'host:port with an IPv4 address or an [IPv6] address and a port in 1-65535' + ' (only a public candidate may be a DNS name)'"
type Candidate struct {
	// Kind is private, public or observed.
	Kind CandidateKind `json:"kind"`
	// Endpoint is host:port; only a public candidate may name a DNS host.
	Endpoint Endpoint `json:"endpoint"`
}

// MeshPeerStatus is written by the agent of the peer's node (Ready,
// connected counts, handshake, MTU) and by the operator (problem conditions).
type MeshPeerStatus struct {
	// Conditions: Ready and Degraded (agent); KeyConflict,
	// AllowedIPsConflict, InvalidAnnotation and NodeNotReady (operator).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Connected is ConnectedPeers/TotalPeers, for display (like 3/3).
	// +optional
	Connected string `json:"connected,omitempty"`

	// ConnectedPeers is the number of node peers this peer's node reaches
	// now: its last reachability probe through the tunnel was answered.
	// +optional
	ConnectedPeers int32 `json:"connectedPeers,omitempty"`

	// TotalPeers is the number of node peers this peer's node expects to
	// reach: every node MeshPeer in the mesh except its own and those marked
	// NodeNotReady. External peers are not counted (a laptop that sleeps is
	// not a fault).
	// +optional
	TotalPeers int32 `json:"totalPeers,omitempty"`

	// UnreachablePeers names the node peers this peer's node expects to
	// reach but whose probes have gone unanswered for several probe
	// intervals, sorted; at most 32 names (TotalPeers-ConnectedPeers is the
	// count).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	UnreachablePeers []string `json:"unreachablePeers,omitempty"`

	// LearnedEndpoints are the addresses this peer's node sends WireGuard
	// packets to for other node peers where they differ from the peer's
	// spec.endpoint: WireGuard learned them from the peer's handshakes (a
	// node behind NAT is reached at its router's public address, which no
	// spec names). Sorted by peer; at most 32. The operator keeps external
	// MeshPeers' allowedIPs clear of an address that at least two nodes
	// report (one node's word alone evicts no one).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	LearnedEndpoints []LearnedEndpoint `json:"learnedEndpoints,omitempty"`

	// LatestHandshake is the most recent handshake with any peer.
	// +optional
	LatestHandshake *metav1.Time `json:"latestHandshake,omitempty"`

	// MTU of the node's WireGuard link.
	// +optional
	MTU int32 `json:"mtu,omitempty"`

	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// LearnedEndpoint is where a node's WireGuard reaches another node peer,
// as learned from that peer's handshakes.
type LearnedEndpoint struct {
	// Peer is the node MeshPeer's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Peer string `json:"peer"`

	// Address is the IP address (without port) the peer's packets come from.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",messageExpression="'learnedEndpoints address ' + self + ' is not an IPv4 or IPv6 address'"
	Address string `json:"address"`

	// Port is the UDP port the peer's packets come from (its NAT's
	// mapping). The operator publishes address and port as the peer's
	// observed candidate. Unset in reports of older agents.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
}

// MeshPeer is one WireGuard peer of the mesh: a node (one per Node, written by
// the operator) or an external peer (written by a user).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=mp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.spec.endpoint`
// +kubebuilder:printcolumn:name="Allowed-IPs",type=string,JSONPath=`.spec.allowedIPs`
// +kubebuilder:printcolumn:name="Connected",type=string,JSONPath=`.status.connected`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Public-Key",type=string,JSONPath=`.spec.publicKey`,priority=1
// +kubebuilder:printcolumn:name="Unreachable",type=string,JSONPath=`.status.unreachablePeers`,priority=1
// +kubebuilder:printcolumn:name="Location",type=string,JSONPath=`.spec.location`,priority=1
type MeshPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MeshPeerSpec   `json:"spec"`
	Status MeshPeerStatus `json:"status,omitempty"`
}

// MeshPeerList is a list of MeshPeers.
//
// +kubebuilder:object:root=true
type MeshPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshPeer `json:"items"`
}

// Excluded reports whether the operator has left this peer out of the mesh,
// and the condition that says why.
func (p *MeshPeer) Excluded() (bool, *metav1.Condition) {
	for _, t := range ExclusionConditions {
		if c := meta.FindStatusCondition(p.Status.Conditions, t); c != nil && c.Status == metav1.ConditionTrue {
			return true, c
		}
	}
	return false, nil
}

func init() {
	SchemeBuilder.Register(&MeshPeer{}, &MeshPeerList{})
}
