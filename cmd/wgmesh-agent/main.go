// Command wgmesh-agent runs on every node (hostNetwork) and keeps the node's
// part of the WireGuard mesh. `wgmesh-agent userspace-wireguard` is the
// long-lived userspace WireGuard process: the chart's <release>-wireguard
// DaemonSet runs it (--wireguard-mode=userspace), or the agent starts it when
// the kernel has no WireGuard module (auto).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wgmesh/wgmesh/agent"
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
	os.Exit(run())
}

func run() int {
	var (
		o                          agent.Options
		mode, addrType             string
		clusterCIDRs, serviceCIDRs string
		cniBinSource, cniConfDir   string
		cniBinDir, portMapBackend  string
		dsName, dsNamespace        string
		sp                         serviceProxyFlags
	)
	sp.bind(flag.CommandLine)
	flag.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "This node's name (default $NODE_NAME).")
	flag.StringVar(&mode, "wireguard-mode", "auto", "auto, kernel or userspace WireGuard.")
	flag.IntVar(&o.ListenPort, "listen-port", 51820, "WireGuard UDP port.")
	flag.IntVar(&o.MTU, "mtu", 0, "MTU of the mesh; 0 = the underlay MTU minus 80.")
	flag.StringVar(&o.Endpoint, "endpoint", "", "host:port to announce, overriding detection (the Node annotation wgmesh.io/force-endpoint overrides this); announced only when its address is one of the Node's InternalIP/ExternalIP addresses.")
	flag.StringVar(&addrType, "endpoint-address-type", "InternalIP", "Node address type used as endpoint: InternalIP or ExternalIP.")
	flag.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":9472", "Prometheus metrics address (0 = off).")
	flag.StringVar(&o.HealthProbeAddress, "health-probe-bind-address", ":9473", "/healthz and /readyz address.")
	flag.StringVar(&clusterCIDRs, "cluster-cidrs", "10.244.0.0/16", "Pod ranges of the cluster, comma separated.")
	flag.StringVar(&serviceCIDRs, "service-cidrs", "10.96.0.0/12", "Service ranges of the cluster, comma separated.")
	flag.StringVar(&cniBinSource, "cni-bin-source", "/usr/libexec/wgmesh/cni", "Directory with the standard CNI plugin binaries to install.")
	flag.StringVar(&cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "CNI configuration directory.")
	flag.StringVar(&cniBinDir, "cni-bin-dir", "/opt/cni/bin", "CNI plugin directory.")
	flag.StringVar(&portMapBackend, "portmap-backend", "", "Backend of the portmap CNI plugin (hostPort), which runs on the host: nftables (needs the host's nft binary) or iptables. Empty: nftables when nft is on the agent's PATH, else iptables (in the image there is no nft: set it).")
	flag.DurationVar(&o.ProbeInterval, "probe-interval", agent.DefaultProbeInterval, "How often each node peer is probed through the tunnel (ICMP echo to its bridge gateway, jittered); a peer is connected when its last probe was answered. 0 = no probes: CONNECTED then counts peers with a handshake in the last 3 minutes.")
	flag.DurationVar(&o.ProbeTimeout, "probe-timeout", agent.DefaultProbeTimeout, "How long one probe echo waits for its answer (a probe tries 3 times).")
	flag.DurationVar(&o.StatusMinInterval, "status-min-interval", agent.DefaultStatusMinInterval, "Least time between two writes of this node's MeshPeer status; changes meanwhile are written together.")
	flag.DurationVar(&o.StatusMembershipDelay, "status-membership-delay", agent.DefaultStatusMembershipDelay, "The longest a change of the MeshPeer status counts alone (a healthy peer joined or left) waits: 0.3 s per node, at least --status-min-interval, at most this, jittered in [d/2, d], so that a join is not a write by every node at once.")
	flag.StringVar(&o.StateDir, "state-dir", agent.DefaultStateDir, "Directory for the private key and the userspace WireGuard log.")
	flag.BoolVar(&o.UserspaceSidecar, "userspace-wireguard-sidecar", false, "Userspace WireGuard runs in a process another pod owns (the chart's <release>-wireguard DaemonSet): only wait for its link and socket, never start or replace one.")
	flag.BoolVar(&o.CleanupOnExit, "cleanup-on-exit", false, "On every exit remove wgmesh from the node: link, routes, bridge, nftables table wgmesh, the CNI config and the plugins the agent installed, this node's annotations (default: the data plane stays across restarts; see --daemonset-name).")
	flag.StringVar(&dsName, "daemonset-name", "", "The agent's own DaemonSet, in --namespace: when the agent stops and the DaemonSet is gone or being deleted (helm uninstall), it removes wgmesh from the node as --cleanup-on-exit does; otherwise (a restart, an upgrade) the data plane stays. Empty: only --cleanup-on-exit removes it.")
	flag.StringVar(&dsNamespace, "namespace", os.Getenv("POD_NAMESPACE"), "Namespace of --daemonset-name (default $POD_NAMESPACE).")
	flag.DurationVar(&o.KeyRotation.Period, "key-rotation-period", 0, "Rotate this node's WireGuard key when it is this old (for example 720h), without downtime; 0 = only on request (kubectl wgmesh rotate-key NODE, the Node annotation wgmesh.io/rotate-key).")
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	log := ctrl.Log.WithName("agent")

	var err error
	if o.WireGuardMode, err = wireguard.ParseMode(mode); err != nil {
		return fail(err)
	}
	switch t := corev1.NodeAddressType(addrType); t {
	case corev1.NodeInternalIP, corev1.NodeExternalIP:
		o.EndpointAddressType = t
	default:
		return fail(fmt.Errorf("--endpoint-address-type=%q: want InternalIP or ExternalIP", addrType))
	}
	if o.ClusterCIDRs, err = podnet.ParseCIDRList("--cluster-cidrs", clusterCIDRs); err != nil {
		return fail(err)
	}
	if o.ServiceCIDRs, err = podnet.ParseCIDRList("--service-cidrs", serviceCIDRs); err != nil {
		return fail(err)
	}
	if err := wgv1.CheckRange("--listen-port", o.ListenPort, 1, 65535); err != nil {
		return fail(err)
	}
	if err := wgv1.CheckRange("--mtu", o.MTU, mtu.Minimum, 65535); o.MTU != 0 && err != nil {
		return fail(fmt.Errorf("%w (or 0: the underlay MTU minus 80)", err))
	}

	if o.KeyRotation.Period < 0 {
		return fail(fmt.Errorf("--key-rotation-period=%s: want 0 (off) or a positive duration such as 720h", o.KeyRotation.Period))
	}
	o.KeyRotation.Metrics = keyrotation.NewMetrics(metrics.Registry)

	if dsName != "" {
		if dsNamespace == "" {
			return fail(fmt.Errorf("--daemonset-name=%s: no namespace; set --namespace or $POD_NAMESPACE (the downward API's metadata.namespace)", dsName))
		}
		o.DaemonSet = types.NamespacedName{Namespace: dsNamespace, Name: dsName}
	}

	o.LinkName, o.BridgeName = agent.DefaultLinkName, agent.DefaultBridgeName
	// Node-local data plane components reconciled after the mesh: the CNI
	// configuration (agent/cniinstall, from --cni-*) and egress masquerade
	// (agent/egress) plug in here as agent.NodeDataplane implementations.
	switch portMapBackend {
	case "", "nftables", "iptables":
	default:
		return fail(fmt.Errorf("--portmap-backend=%q: want nftables, iptables or empty (detect)", portMapBackend))
	}
	o.Dataplanes = nodeDataplanes(dataplaneFlags{cniBinSource: cniBinSource, cniConfDir: cniConfDir, cniBinDir: cniBinDir, portMapBackend: portMapBackend}, o, log)

	if o.ServiceProxy, err = serviceProxy(sp, o, log); err != nil {
		return fail(err)
	}
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
