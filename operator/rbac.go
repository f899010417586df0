package operator

// The permissions the operator needs (controller-gen rbac markers; the
// chart's ClusterRole must grant at least these).
//
// Nodes: read all; write spec.podCIDRs. nodes/finalizers: update, because a
// MeshPeer's owner reference to its Node blocks the Node's deletion
// (OwnerReferencesPermissionEnforcement).
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch;update
// +kubebuilder:rbac:groups="",resources=nodes/finalizers,verbs=update
// +kubebuilder:rbac:groups=wgmesh.io,resources=meshpeers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=wgmesh.io,resources=meshpeers/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch;update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch;update
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch
