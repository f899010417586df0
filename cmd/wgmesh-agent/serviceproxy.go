package main

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/servicenat"
	"github.com/wgmesh/wgmesh/podnet"
)

// proxyMode is --service-proxy: true, false or auto. A bare --service-proxy
// means true.
type proxyMode string

const (
	proxyOn   proxyMode = "true"
	proxyOff  proxyMode = "false"
	proxyAuto proxyMode = "auto"
)

func (m *proxyMode) String() string   { return string(*m) }
func (m *proxyMode) IsBoolFlag() bool { return true }
func (m *proxyMode) Set(v string) error {
	switch strings.ToLower(v) {
	case "true", "1":
		*m = proxyOn
	case "false", "0":
		*m = proxyOff
	case "auto":
		*m = proxyAuto
	default:
		return fmt.Errorf("%q: want true, false or auto", v)
	}
	return nil
}

// serviceProxyFlags are the service NAT's flags.
type serviceProxyFlags struct {
	mode              proxyMode
	kubeProxyHealthz  string
	nodePortAddresses string
	syncPeriod        time.Duration
	// npa is --nodeport-addresses parsed (check).
	npa []netip.Prefix
}

// check validates the flags and parses --nodeport-addresses.
func (f *serviceProxyFlags) check() error {
	var err error
	if f.npa, err = podnet.ParseCIDRs("--nodeport-addresses", strings.Split(f.nodePortAddresses, ",")); err != nil {
		return err
	}
	if f.syncPeriod < time.Second {
		return fmt.Errorf("--service-sync-period=%s: want at least 1s", f.syncPeriod)
	}
	return nil
}

func (f *serviceProxyFlags) bind(fs *flag.FlagSet) {
	f.mode = proxyAuto
	fs.Var(&f.mode, "service-proxy", "Program the service NAT (ClusterIP, NodePort, external and load-balancer IPs) in nftables table wgmesh: true; false leaves Services to kube-proxy; auto (default) programs them unless kube-proxy does on this node (its nftables table or iptables-nft chains), and stands aside while it does.")
	fs.StringVar(&f.kubeProxyHealthz, "kube-proxy-healthz", "", "With --service-proxy=auto, also take an answer of kube-proxy's /healthz at this address (for example "+servicenat.KubeProxyHealthzAddr+") as kube-proxy on the node: for iptables-legacy mode, whose rules nftables does not see. Off by default: anything that can listen on the node's address (a hostPort) could answer it and turn the service NAT off.")
	fs.StringVar(&f.nodePortAddresses, "nodeport-addresses", "", "CIDRs whose local addresses serve NodePorts, comma separated; empty: the Node's InternalIP addresses.")
	fs.DurationVar(&f.syncPeriod, "service-sync-period", servicenat.DefaultSyncPeriod, "How often the service NAT compares the kernel with the desired rules and repairs drift.")
}

// serviceProxy returns the service NAT, or nil when it is off; when off,
// rules an earlier run left behind are removed so that they never shadow
// kube-proxy's.
func serviceProxy(f serviceProxyFlags, o agent.Options, log logr.Logger) (agent.ServiceProxy, error) {
	p := servicenat.New(servicenat.Options{
		NodeName: o.NodeName, ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, NodePortAddresses: f.npa,
		TunnelIf: o.LinkName, SyncPeriod: f.syncPeriod, Log: log.WithName("servicenat"), Registerer: metrics.Registry,
		StandAside: f.mode == proxyAuto, KubeProxyHealthz: f.kubeProxyHealthz,
	})
	if f.mode == proxyOff {
		if err := p.Delete(); err != nil {
			log.Error(err, "removing service NAT rules of an earlier run")
		}
		log.Info("service NAT off (--service-proxy=false): Services are left to kube-proxy")
		return nil, nil
	}
	return p, nil
}
