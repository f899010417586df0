package v1alpha1

// Node annotations. The agent writes the first two on its own Node only; a
// user may set the overrides.
const (
	// AnnotationPublicKey is the node's WireGuard public key (base64).
	AnnotationPublicKey = "wgmesh.io/public-key"
	// AnnotationEndpoint is the host:port the agent detected for its node.
	AnnotationEndpoint = "wgmesh.io/endpoint"
	// AnnotationForceEndpoint is a user override of the endpoint (host:port,
	// DNS name allowed).
	AnnotationForceEndpoint = "wgmesh.io/force-endpoint"
	// AnnotationPersistentKeepalive is a user setting, in seconds (0-65535).
	AnnotationPersistentKeepalive = "wgmesh.io/persistent-keepalive"
	// AnnotationRotateKey is a user's request to rotate the node's WireGuard
	// key (kubectl wgmesh rotate-key): a token naming the request
	// (RotateKeyTokenPattern); a new token is a new request.
	AnnotationRotateKey = "wgmesh.io/rotate-key"
	// AnnotationKeyRotated is written by the agent on its own Node: the
	// token of the last rotation request it handled (rotated or rolled back;
	// the Events KeyRotated and KeyRotationRolledBack say which).
	AnnotationKeyRotated = "wgmesh.io/key-rotated"
)

// Locations and candidate endpoints (README, "Multi-cloud and offices").
const (
	// LabelLocation on a Node names the private network it shares with
	// other nodes (a user's or a provisioner's label).
	LabelLocation = "wgmesh.io/location"
	// LabelRegion is the well-known region label; with the operator's
	// --location-from-region a region is a location unless the Node has
	// wgmesh.io/location or the region is in --regions-not-one-network.
	LabelRegion = "topology.kubernetes.io/region"
	// AnnotationCandidates is written by the agent on its own Node: the
	// endpoints it may be reached at, as kind=host:port separated by
	// commas, kind private or public (ParseCandidatesAnnotation). Every
	// host is one of the Node's own addresses.
	AnnotationCandidates = "wgmesh.io/candidates"
	// LabelRelay on a Node: "true" prefers the node as a relay for pairs
	// without a direct path, "false" forbids it (spec.relay prefer, never);
	// absent or any other value: it may relay.
	LabelRelay = "wgmesh.io/relay"
)

// RotateKeyTokenPattern is what a wgmesh.io/rotate-key token may look like:
// 1 to 63 letters, digits and ._:+- (a timestamp, a ticket number).
const RotateKeyTokenPattern = `^[A-Za-z0-9._:+-]{1,63}$`

// Condition types on MeshPeer status.
const (
	// ConditionReady is written by the agent of the peer's node: the
	// WireGuard link is configured and the peer's data plane is up.
	ConditionReady = "Ready"
	// ConditionKeyConflict is written by the operator when two MeshPeers
	// announce the same public key. Both are left out of the mesh.
	ConditionKeyConflict = "KeyConflict"
	// ConditionAllowedIPsConflict is written by the operator when an
	// external MeshPeer's allowedIPs overlap the cluster's pod CIDRs or
	// contain an underlay address, or when a node's pod CIDRs overlap a node
	// already in the mesh or lie outside the cluster's pod CIDRs. The peer is
	// left out of the mesh.
	ConditionAllowedIPsConflict = "AllowedIPsConflict"
	// ConditionDegraded is written by the agent of the peer's node: True when
	// that node cannot use some MeshPeers (unresolvable endpoint, overlapping
	// allowedIPs); its message names each peer, field and value.
	ConditionDegraded = "Degraded"
	// ConditionInvalidAnnotation is written by the operator when a Node
	// annotation cannot be used; the MeshPeer keeps its last good spec.
	ConditionInvalidAnnotation = "InvalidAnnotation"
	// ConditionNodeNotReady is written by the operator on a node MeshPeer
	// while its Node's Ready condition is False or Unknown (the node lifecycle
	// controller's verdict). The peer stays in the mesh (its data plane may
	// still work), but other nodes do not count it in their connected/total
	// peers, so that a node failure is one write, not one per node.
	ConditionNodeNotReady = "NodeNotReady"
)

// ExclusionConditions are the condition types that, when True, leave a
// MeshPeer out of every node's WireGuard configuration.
var ExclusionConditions = []string{ConditionKeyConflict, ConditionAllowedIPsConflict}

// DefaultListenPort is the WireGuard UDP port used unless configured.
const DefaultListenPort = 51820

// AnnotationPublicKeySince, on a node MeshPeer, is when the operator first
// published its current spec.publicKey (RFC 3339). When two nodes announce
// one key, the node that had it first keeps it: a copied key never evicts
// the genuine node.
const AnnotationPublicKeySince = "wgmesh.io/public-key-since"
