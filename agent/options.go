package agent

import (
	"context"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/wgmesh/wgmesh/agent/wireguard"
)

// Default names (contracts in DESIGN.md).
const (
	DefaultLinkName   = "wgmesh0"
	DefaultBridgeName = "wgmesh-br0"
	DefaultStateDir   = "/var/lib/wgmesh"
	// FieldManager is the agent's server-side-apply field manager for its
	// MeshPeer status.
	FieldManager = "wgmesh-agent"
	// DefaultResync is the periodic full check that repairs drift netlink
	// events do not announce (a peer removed by hand from a userspace device).
	DefaultResync = 5 * time.Second
)

// Options configure the agent. Flags of cmd/wgmesh-agent map one to one.
type Options struct {
	NodeName            string
	WireGuardMode       wireguard.Mode
	ListenPort          int
	MTU                 int // 0 = underlay MTU - 80
	Endpoint            string
	EndpointAddressType corev1.NodeAddressType
	MetricsBindAddress  string
	HealthProbeAddress  string
	ClusterCIDRs        []netip.Prefix
	ServiceCIDRs        []netip.Prefix
	StateDir            string
	// CleanupOnExit: remove wgmesh from the node whenever the agent stops
	// (--cleanup-on-exit).
	CleanupOnExit bool
	// DaemonSet is the agent's own DaemonSet (--daemonset-name in
	// --namespace): when the agent stops and it is gone or being deleted
	// (helm uninstall), the agent removes wgmesh from the node as
	// CleanupOnExit does. Empty: only CleanupOnExit removes it.
	DaemonSet types.NamespacedName
	// UserspaceSidecar: userspace WireGuard runs in a process another pod
	// owns, the chart's <release>-wireguard DaemonSet
	// (--userspace-wireguard-sidecar); the agent only waits for it.
	UserspaceSidecar bool

	LinkName   string // default wgmesh0
	BridgeName string // default wgmesh-br0
	Resync     time.Duration

	// Dataplanes are reconciled after the mesh, in order (see NodeDataplane).
	Dataplanes []NodeDataplane
	// ServiceProxy is the service NAT (agent/servicenat); nil when
	// --service-proxy=false leaves Services to kube-proxy.
	ServiceProxy ServiceProxy
}

// ServiceProxy runs beside the mesh loop with its own watches (Services and
// EndpointSlices change far more often than the mesh, and must not cause
// mesh reconciles).
type ServiceProxy interface {
	// Run programs the service NAT until ctx ends.
	Run(ctx context.Context, cfg *rest.Config) error
	// Synced is nil once the first sync is done and the last one worked.
	Synced() error
	// Delete removes the service NAT from the kernel (uninstall,
	// --cleanup-on-exit).
	Delete() error
}

func (o *Options) defaults() {
	if o.LinkName == "" {
		o.LinkName = DefaultLinkName
	}
	if o.BridgeName == "" {
		o.BridgeName = DefaultBridgeName
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.Resync == 0 {
		o.Resync = DefaultResync
	}
	if o.ListenPort == 0 {
		o.ListenPort = 51820
	}
	if o.WireGuardMode == "" {
		o.WireGuardMode = wireguard.ModeAuto
	}
	if o.EndpointAddressType == "" {
		o.EndpointAddressType = corev1.NodeInternalIP
	}
}
