// Command wgmesh-agent runs on every node (hostNetwork) and keeps the node's
// part of the WireGuard mesh. `wgmesh-agent userspace-wireguard` is the
// long-lived userspace WireGuard process: the chart's <release>-wireguard
// DaemonSet runs it (--wireguard-mode=userspace), or the agent starts it when
// the kernel has no WireGuard module (auto).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/egress"
	"github.com/wgmesh/wgmesh/agent/keyrotation"
	"github.com/wgmesh/wgmesh/agent/mtu"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/podnet"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "userspace-wireguard" {
		os.Exit(userspace(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:], os.Getenv))
}

// agentConfig is what the command line says: the agent's options and the
// flags of the components main wires into it.
type agentConfig struct {
	o   agent.Options
	sp  serviceProxyFlags
	np  networkPolicyFlags
	dp  dataplaneFlags
	zap zap.Options
}

// run is the agent's main: args without the program name, getenv for the
// defaults that come from the environment (NODE_NAME, POD_NAMESPACE).
func run(args []string, getenv func(string) string) int {
	c, err := parseFlags(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return fail(err)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&c.zap)))
	log := ctrl.Log.WithName("agent")
	o := c.o
	o.KeyRotation.Metrics = keyrotation.NewMetrics(metrics.Registry)
	// Node-local data plane components reconciled after the mesh: the CNI
	// configuration (agent/cniinstall, from --cni-*) and egress masquerade
	// (agent/egress) plug in here as agent.NodeDataplane implementations.
	var eg *egress.Manager
	o.Dataplanes, eg = nodeDataplanes(c.dp, c.np, o, log)
	if o.ServiceProxy, err = serviceProxy(c.sp, o, log); err != nil {
		return fail(err)
	}
	o.NetworkPolicy = networkPolicy(c.np, o, eg, log)
	a, err := agent.New(o, log)
	if err != nil {
		return fail(err)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fail(fmt.Errorf("kubeconfig: %w", err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx, cfg); err != nil {
		return fail(err)
	}
	return 0
}

// usageOutput is where --help and flag errors print the usage.
var usageOutput io.Writer = os.Stderr

// parseFlags reads and checks the command line; every error names the flag
// and the value. flag.ErrHelp: --help was asked for (the usage is printed).
func parseFlags(args []string, getenv func(string) string) (agentConfig, error) {
	var (
		c                          agentConfig
		mode, addrType             string
		clusterCIDRs, serviceCIDRs string
		dsName, dsNamespace        string
	)
	fs := flag.NewFlagSet("wgmesh-agent", flag.ContinueOnError)
	fs.SetOutput(usageOutput)
	c.sp.bind(fs)
	c.np.bind(fs)
	fs.StringVar(&c.o.NodeName, "node-name", getenv("NODE_NAME"), "This node's name (default $NODE_NAME).")
	fs.StringVar(&mode, "wireguard-mode", "auto", "auto, kernel or userspace WireGuard.")
	fs.IntVar(&c.o.ListenPort, "listen-port", 51820, "WireGuard UDP port.")
	fs.IntVar(&c.o.MTU, "mtu", 0, "MTU of the mesh; 0 = the underlay MTU minus 80.")
	fs.StringVar(&c.o.Endpoint, "endpoint", "", "host:port to announce, overriding detection (the Node annotation wgmesh.io/force-endpoint overrides this); announced only when its address is one of the Node's InternalIP/ExternalIP addresses.")
	fs.StringVar(&addrType, "endpoint-address-type", "InternalIP", "Node address type used as endpoint: InternalIP or ExternalIP.")
	fs.StringVar(&c.o.MetricsBindAddress, "metrics-bind-address", ":9472", "Prometheus metrics address (0 = off).")
	fs.StringVar(&c.o.HealthProbeAddress, "health-probe-bind-address", ":9473", "/healthz and /readyz address.")
	fs.StringVar(&clusterCIDRs, "cluster-cidrs", "10.244.0.0/16", "Pod ranges of the cluster, comma separated.")
	fs.StringVar(&serviceCIDRs, "service-cidrs", "10.96.0.0/12", "Service ranges of the cluster, comma separated.")
	fs.StringVar(&c.dp.cniBinSource, "cni-bin-source", "/usr/libexec/wgmesh/cni", "Directory with the standard CNI plugin binaries to install.")
	fs.StringVar(&c.dp.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "CNI configuration directory.")
	fs.StringVar(&c.dp.cniBinDir, "cni-bin-dir", "/opt/cni/bin", "CNI plugin directory.")
	fs.StringVar(&c.dp.portMapBackend, "portmap-backend", "", "Backend of the portmap CNI plugin (hostPort), which runs on the host: nftables (needs the host's nft binary) or iptables. Empty: nftables when nft is on the agent's PATH, else iptables (in the image there is no nft: set it).")
	fs.DurationVar(&c.o.ProbeInterval, "probe-interval", agent.DefaultProbeInterval, "How often each node peer is probed through the tunnel (ICMP echo to its bridge gateway, jittered); a peer is connected when its last probe was answered. 0 = no probes: CONNECTED then counts peers with a handshake in the last 3 minutes.")
	fs.DurationVar(&c.o.ProbeTimeout, "probe-timeout", agent.DefaultProbeTimeout, "How long one probe echo waits for its answer (a probe tries 3 times).")
	fs.DurationVar(&c.o.StatusMinInterval, "status-min-interval", agent.DefaultStatusMinInterval, "Least time between two writes of this node's MeshPeer status; changes meanwhile are written together.")
	fs.DurationVar(&c.o.StatusMembershipDelay, "status-membership-delay", agent.DefaultStatusMembershipDelay, "The longest a change of the MeshPeer status counts alone (a healthy peer joined or left) waits: 0.3 s per node, at least --status-min-interval, at most this, jittered in [d/2, d], so that a join is not a write by every node at once.")
	fs.StringVar(&c.o.StateDir, "state-dir", agent.DefaultStateDir, "Directory for the private key and the userspace WireGuard log.")
	fs.BoolVar(&c.o.UserspaceSidecar, "userspace-wireguard-sidecar", false, "Userspace WireGuard runs in a process another pod owns (the chart's <release>-wireguard DaemonSet): only wait for its link and socket, never start or replace one.")
	fs.BoolVar(&c.o.CleanupOnExit, "cleanup-on-exit", false, "On every exit remove wgmesh from the node: link, routes, bridge, nftables table wgmesh, the CNI config and the plugins the agent installed, this node's annotations (default: the data plane stays across restarts; see --daemonset-name).")
	fs.StringVar(&dsName, "daemonset-name", "", "The agent's own DaemonSet, in --namespace: when the agent stops and the DaemonSet is gone or being deleted (helm uninstall), it removes wgmesh from the node as --cleanup-on-exit does; otherwise (a restart, an upgrade) the data plane stays. Empty: only --cleanup-on-exit removes it.")
	fs.StringVar(&dsNamespace, "namespace", getenv("POD_NAMESPACE"), "Namespace of --daemonset-name (default $POD_NAMESPACE).")
	fs.BoolVar(&c.o.PerPeerMetrics.Enabled, "per-peer-metrics", false, "Also export series per peer (wgmesh_peer_reachable, _rtt_seconds, _last_handshake_timestamp_seconds, _receive_bytes_total, _transmit_bytes_total, labelled peer). Off: only aggregates over the peers, whose number of series does not grow with the mesh (per-peer series grow with nodes² across the cluster).")
	fs.IntVar(&c.o.PerPeerMetrics.Limit, "per-peer-metrics-limit", agent.DefaultPerPeerMetricsLimit, "With --per-peer-metrics, the most peers exported (the first by name); wgmesh_peer_metrics_dropped counts the others.")
	fs.DurationVar(&c.o.KeyRotation.Period, "key-rotation-period", 0, "Rotate this node's WireGuard key when it is this old (for example 720h), without downtime; 0 = only on request (kubectl wgmesh rotate-key NODE, the Node annotation wgmesh.io/rotate-key).")
	c.zap.BindFlags(fs)
	ctrlconfig.RegisterFlags(fs) // --kubeconfig, which ctrl.GetConfig reads
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q: the agent takes only flags (and the userspace-wireguard command first)", fs.Args())
	}
	o := &c.o
	var err error
	if o.WireGuardMode, err = wireguard.ParseMode(mode); err != nil {
		return c, err
	}
	switch t := corev1.NodeAddressType(addrType); t {
	case corev1.NodeInternalIP, corev1.NodeExternalIP:
		o.EndpointAddressType = t
	default:
		return c, fmt.Errorf("--endpoint-address-type=%q: want InternalIP or ExternalIP", addrType)
	}
	if o.ClusterCIDRs, err = podnet.ParseCIDRList("--cluster-cidrs", clusterCIDRs); err != nil {
		return c, err
	}
	if o.ServiceCIDRs, err = podnet.ParseCIDRList("--service-cidrs", serviceCIDRs); err != nil {
		return c, err
	}
	if err := wgv1.CheckRange("--listen-port", o.ListenPort, 1, 65535); err != nil {
		return c, err
	}
	if err := wgv1.CheckRange("--mtu", o.MTU, mtu.Minimum, 65535); o.MTU != 0 && err != nil {
		return c, fmt.Errorf("%w (or 0: the underlay MTU minus 80)", err)
	}
	if err := wgv1.CheckRange("--per-peer-metrics-limit", o.PerPeerMetrics.Limit, 1, 100000); err != nil {
		return c, err
	}
	if o.KeyRotation.Period < 0 {
		return c, fmt.Errorf("--key-rotation-period=%s: want 0 (off) or a positive duration such as 720h", o.KeyRotation.Period)
	}
	if dsName != "" {
		if dsNamespace == "" {
			return c, fmt.Errorf("--daemonset-name=%s: no namespace; set --namespace or $POD_NAMESPACE (the downward API's metadata.namespace)", dsName)
		}
		o.DaemonSet = types.NamespacedName{Namespace: dsNamespace, Name: dsName}
	}
	o.LinkName, o.BridgeName = agent.DefaultLinkName, agent.DefaultBridgeName
	switch c.dp.portMapBackend {
	case "", "nftables", "iptables":
	default:
		return c, fmt.Errorf("--portmap-backend=%q: want nftables, iptables or empty (detect)", c.dp.portMapBackend)
	}
	if err := c.sp.check(); err != nil {
		return c, err
	}
	return c, nil
}

func userspace(args []string) int {
	fs := flag.NewFlagSet("userspace-wireguard", flag.ExitOnError)
	iface := fs.String("interface", agent.DefaultLinkName, "TUN interface name.")
	probe := fs.Bool("probe", false, "Only check: exit 0 when the UAPI socket of --interface answers, 1 otherwise (the container's startup probe).")
	zopts := zap.Options{}
	zopts.BindFlags(fs)
	_ = fs.Parse(args)
	if *probe {
		if _, ok := wireguard.SocketAnswers(*iface); !ok {
			return fail(fmt.Errorf("userspace WireGuard %s does not answer on %s", *iface, wireguard.SocketPath(*iface)))
		}
		return 0
	}
	log := zap.New(zap.UseFlagOptions(&zopts)).WithName("userspace-wireguard")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A hangup from the terminal or session it was started from must not
	// stop the data plane.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	if err := wireguard.RunUserspace(ctx, *iface, log); err != nil {
		return fail(err)
	}
	return 0
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "wgmesh-agent:", err)
	return 1
}
