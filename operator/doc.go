// Package operator is wgmesh-operator's logic: it gives Nodes their pod
// CIDRs and publishes one MeshPeer per Node.
//
// Pod CIDRs (NodeCIDRReconciler): a Node whose spec.podCIDRs is empty gets
// one CIDR per configured family (--cluster-cidrs, --node-cidr-mask-size-*),
// written once, with the Node's resourceVersion as precondition. A Node that
// already has podCIDRs (set by kube-controller-manager, say) keeps them and
// they count as used. A deleted Node's CIDRs are freed. When a pool is full
// the Node gets a Warning Event (PodCIDRPoolExhausted) naming the pool, the
// counter wgmesh_operator_cidr_pool_exhausted_total{pool} goes up, and the
// Node is retried when a CIDR is freed (and every minute).
//
// MeshPeers (MeshPeerReconciler): the MeshPeer of a Node has the Node's
// name, a controller owner reference to the Node and spec.nodeName set. Its
// spec comes from the Node:
//
//	publicKey           wgmesh.io/public-key (written by the agent)
//	endpoint            wgmesh.io/force-endpoint if set, else wgmesh.io/endpoint
//	                    when it is one of the Node's own addresses
//	persistentKeepalive wgmesh.io/persistent-keepalive
//	allowedIPs          spec.podCIDRs
//	location            the wgmesh.io/location label; with --location-from-region
//	                    the topology.kubernetes.io/region label, unless the region
//	                    is in --regions-not-one-network (NodeLocation)
//	candidates          wgmesh.io/candidates (private and public, each one of the
//	                    Node's own addresses), the force-endpoint as public, and,
//	                    for a node with a location, its observed endpoints: what
//	                    the other nodes report in their status.learnedEndpoints,
//	                    per family only the most reported (ObservedCandidates)
//
// What a node gets before it is ready:
//   - no wgmesh.io/public-key yet (its agent has not started): no MeshPeer.
//     If the annotation is removed later, the MeshPeer is deleted.
//   - a key but no podCIDRs yet: a MeshPeer with empty allowedIPs, filled in
//     when the CIDRs are assigned.
//   - no endpoint annotation: a MeshPeer without endpoint (reached once it
//     sends a handshake, as a node behind NAT).
//
// A bad annotation value gives a Warning Event (InvalidAnnotation) on the
// Node naming the annotation and the value, and the condition
// InvalidAnnotation=True on the MeshPeer; the field keeps its last good
// value. A wgmesh.io/endpoint whose address is not one of the Node's
// InternalIP/ExternalIP addresses is bad too (ParseNode): an agent announcing
// another machine's address is reported, and that address is never
// published, so it never keeps an external peer out; the last good endpoint
// is kept only while it is still the node's own. A MeshPeer with the node's name that the node does not control (made
// in advance, by hand) is taken over, spec and owner (Event MeshPeerAdopted):
// it never locks the node out. The annotation wgmesh.io/public-key-since
// records when the current key was first published.
//
// A node is a node peer only through its controller owner reference, with the
// Node's name and UID (wgv1.IsNodePeer); anything else is external, whatever
// its spec.nodeName says. Pod CIDRs are published only when they lie inside
// --cluster-cidrs and overlap no node already in the mesh
// (PodCIDRConflicts): a Node arriving with pre-set overlapping podCIDRs gets
// a PodCIDRConflict Event and AllowedIPsConflict, and is published once the
// other node is gone.
//
// Conflicts (ConflictReconciler): among MeshPeers sharing a public key the
// node that published it first keeps it (wgv1.KeyOwner) and the others get
// KeyConflict=True; without such a node all of them do. Node peers whose pod
// CIDRs are withheld, and external MeshPeers whose allowedIPs overlap the
// cluster's pod CIDRs or contain an underlay address (ProtectedAddrs: a
// Node's InternalIP/ExternalIP or force-endpoint, an external peer's
// endpoint, the API server, an endpoint WireGuard learned from a node's
// handshakes that LearnedQuorum nodes report in status.learnedEndpoints), get
// AllowedIPsConflict=True naming the range and the address.
// Agents leave such peers out (MeshPeer.Excluded). The conditions turn False
// once resolved. External MeshPeers' specs are never changed.
//
// Conditions are written with server-side apply, one field manager per
// controller, so the agent's Ready condition is never overwritten.
//
// Every controller runs only on the elected leader.
package operator
