// Command wgmesh-operator assigns pod CIDRs to Nodes and keeps one MeshPeer
// per Node. See package operator. `wgmesh-operator uninstall` is the chart's
// pre-delete hook (package operator/uninstall).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/operator"
	"github.com/wgmesh/wgmesh/operator/cidr"
)

func main() {
	os.Exit(run(ctrl.SetupSignalHandler(), os.Args[1:], os.Stderr))
}

// run is the whole command; it returns the exit code (2 for bad flags or
// configuration, 1 when the operator fails while running).
func run(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "uninstall" {
		return runUninstall(ctx, args[1:], stderr)
	}
	var (
		c          cidr.Config
		mo         operator.ManagerOptions
		kubeconfig string
		zo         = zap.Options{}
	)
	fs := flag.NewFlagSet("wgmesh-operator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: wgmesh-operator [flags]\n       wgmesh-operator uninstall [flags] (the chart's pre-delete hook; see its --help)\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&kubeconfig, "kubeconfig", "", "Path to a kubeconfig; only needed outside the cluster (also $KUBECONFIG).")
	fs.StringVar(&c.ClusterCIDRs, "cluster-cidrs", cidr.DefaultClusterCIDRs, "Pod CIDRs of the cluster: a comma list with at most one IPv4 and one IPv6 CIDR; the first is the primary family.")
	fs.IntVar(&c.NodeMaskSizeIPv4, "node-cidr-mask-size-ipv4", cidr.DefaultNodeMaskSizeIPv4, "Prefix length of each node's IPv4 pod CIDR.")
	fs.IntVar(&c.NodeMaskSizeIPv6, "node-cidr-mask-size-ipv6", cidr.DefaultNodeMaskSizeIPv6, "Prefix length of each node's IPv6 pod CIDR.")
	fs.BoolVar(&mo.LeaderElect, "leader-elect", true, "Elect a leader among replicas; only the leader writes.")
	fs.StringVar(&mo.LeaderElectionNamespace, "leader-election-namespace", "kube-system", "Namespace of the leader election Lease.")
	fs.StringVar(&mo.MetricsBindAddress, "metrics-bind-address", ":9474", "Address of the Prometheus metrics endpoint (0 turns it off).")
	fs.StringVar(&mo.HealthProbeBindAddress, "health-probe-bind-address", ":9475", "Address of /healthz and /readyz (0 turns them off).")
	fs.BoolVar(&mo.Locations.FromRegion, "location-from-region", false, "A node without the wgmesh.io/location label is in the location named by its topology.kubernetes.io/region label (nodes of one location reach each other at private addresses).")
	var notOneNetwork string
	fs.StringVar(&notOneNetwork, "regions-not-one-network", "", "Regions, comma separated, whose nodes do not share one private network (several VPCs in a region): with --location-from-region their nodes have a location only by the wgmesh.io/location label.")
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // the flag package printed the problem
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "wgmesh-operator: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected arguments %q; all settings are --flags", fs.Args()))
	}
	pools, err := c.Parse()
	if err != nil {
		return fail(err)
	}
	if notOneNetwork != "" {
		for _, r := range strings.Split(notOneNetwork, ",") {
			if err := wgv1.ParseLocation(r); err != nil {
				return fail(fmt.Errorf("--regions-not-one-network=%q: region %w", notOneNetwork, err))
			}
			mo.Locations.RegionsNotOneNetwork = append(mo.Locations.RegionsNotOneNetwork, r)
		}
	}
	mo.Pools = pools

	zo.DestWriter = stderr
	logger := zap.New(zap.UseFlagOptions(&zo)).WithName("wgmesh-operator")
	ctrl.SetLogger(logger)
	mo.Logger = logger

	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return fail(fmt.Errorf("--kubeconfig %q: %w", kubeconfig, err))
	}
	reader, err := client.New(cfg, client.Options{})
	if err != nil {
		return fail(err)
	}
	if err := operator.CheckClusterCIDRs(ctx, reader, pools); err != nil {
		return fail(err)
	}
	mgr, err := operator.NewManager(cfg, mo)
	if err != nil {
		return fail(err)
	}
	logger.Info("starting", "pools", pools, "leaderElect", mo.LeaderElect, "locationFromRegion", mo.Locations.FromRegion,
		"regionsNotOneNetwork", mo.Locations.RegionsNotOneNetwork,
		"metricsBindAddress", mo.MetricsBindAddress, "healthProbeBindAddress", mo.HealthProbeBindAddress)
	if err := mgr.Start(ctx); err != nil {
		logger.Error(err, "operator stopped")
		return 1
	}
	return 0
}

// restConfig loads --kubeconfig, or what ctrl.GetConfig finds. Either way
// client-side throttling is off (QPS -1, as ctrl.GetConfig sets it): the API
// server's priority and fairness limits the operator, not client-go's
// default of 5 requests per second, which would make publishing a thousand
// nodes take minutes.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return ctrl.GetConfig()
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}
