package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wgmesh/wgmesh/agent/keyrotation"
	"github.com/wgmesh/wgmesh/agent/kube"
	"github.com/wgmesh/wgmesh/agent/servicenat"
	"github.com/wgmesh/wgmesh/agent/tunnel"
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
	// Defaults of the probe and status flags.
	DefaultProbeInterval         = 30 * time.Second
	DefaultProbeTimeout          = time.Second
	DefaultStatusMinInterval     = 10 * time.Second
	DefaultStatusMembershipDelay = 5 * time.Minute
	// probeHoldDownIntervals: a peer's probes must fail this many probe
	// intervals in a row before the status names it unreachable (metrics
	// show it at once). Longer than the node lifecycle controller's grace
	// (50 s), so that a failed node is marked NodeNotReady first.
	probeHoldDownIntervals = 3
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

	// ProbeInterval is how often each node peer is probed through the
	// tunnel (--probe-interval, jittered; 0: no probes, and CONNECTED
	// falls back to a handshake in the last 3 minutes). ProbeTimeout is
	// one echo's wait (--probe-timeout).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// StatusMinInterval is the least time between two writes of the own
	// MeshPeer status (--status-min-interval); changes meanwhile are
	// written together. StatusMembershipDelay is how long a change of the
	// counts alone (a healthy peer joined or left) may wait, jittered in
	// [d/2, d] (--status-membership-delay): with N nodes, each join would
	// otherwise be N writes, each sent to N watchers.
	StatusMinInterval     time.Duration
	StatusMembershipDelay time.Duration
	// PerPeerMetrics: by default only aggregates over the peers
	// (--per-peer-metrics=false); series per peer grow with nodes² across
	// the cluster, and when asked for are capped (--per-peer-metrics-limit).
	PerPeerMetrics PerPeerMetrics

	LinkName   string // default wgmesh0
	BridgeName string // default wgmesh-br0
	Resync     time.Duration

	// Dataplanes are reconciled after the mesh, in order (see NodeDataplane).
	Dataplanes []NodeDataplane
	// Registerer takes the agent's metrics; nil: controller-runtime's
	// registry, which the metrics endpoint serves. (Tests running several
	// agents in one process give each its own.)
	Registerer prometheus.Registerer
	// Tunnel applies the mesh to the node; nil: the node's kernel
	// (tunnel.New: WireGuard link and peers, MTU, bridge, routes, sysctls).
	Tunnel Tunnel
	// ServiceProxy is the service NAT (agent/servicenat); nil when
	// --service-proxy=false leaves Services to kube-proxy.
	ServiceProxy ServiceProxy
	// NetworkPolicy enforces NetworkPolicy on the node (agent/policy); nil
	// when --network-policy=false.
	NetworkPolicy NetworkPolicy
	// KeyRotation: --key-rotation-period and the rotation's metrics
	// (StateDir, NodeName and Log are filled in from the above).
	KeyRotation keyrotation.Options
}

// Tunnel is the mesh's edge to the node: Apply brings the WireGuard link,
// its peers, the pod bridge and the routes to the topology (level-based,
// everything read back from the kernel), Cleanup removes them.
// *tunnel.Reconciler is the real one; tests of the agent's pipeline use a fake.
type Tunnel interface {
	Apply(ctx context.Context, d tunnel.Desired) (tunnel.Applied, error)
	// Peers are the device's peers now, with the endpoints WireGuard
	// learned; nil before the link exists.
	Peers() []wgtypes.Peer
	Cleanup() error
}

// ServiceProxy runs beside the mesh loop with its own loop and handlers
// (Services and EndpointSlices change far more often than the mesh, and
// must not cause mesh reconciles), on the agent's runtime: its informers
// come from the agent's one cache, shaped by servicenat.CacheOptions.
type ServiceProxy interface {
	// Run programs the service NAT until ctx ends.
	Run(ctx context.Context, rt *kube.Runtime) error
	// Synced is nil once the first sync is done and the last one worked.
	Synced() error
	// Delete removes the service NAT from the kernel (uninstall,
	// --cleanup-on-exit).
	Delete() error
	// SetReserved gives the addresses only the agent knows that no Service
	// may take as an external address (each reconcile; a change re-checks
	// the Services that have one).
	SetReserved(servicenat.Reserved)
}

// NetworkPolicy runs beside the mesh loop with its own loop and handlers
// (Pods change far more often than the mesh), on the agent's runtime: its
// informers (Pods, trimmed by agent/kube; Namespaces; NetworkPolicies;
// Nodes) come from the agent's one cache.
type NetworkPolicy interface {
	// Run programs the network policy until ctx ends.
	Run(ctx context.Context, rt *kube.Runtime) error
	// Synced is nil once the policy is in the kernel and enforced for every
	// pod of the node.
	Synced() error
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
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.StatusMinInterval == 0 {
		o.StatusMinInterval = DefaultStatusMinInterval
	}
	if o.StatusMembershipDelay == 0 {
		o.StatusMembershipDelay = DefaultStatusMembershipDelay
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
