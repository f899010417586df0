// Command wgmesh-testnode is the local cluster's kubelet and container runtime stand-in: it
// runs inside a node's namespaces, registers the Node, and runs the pods bound to it with
// CNI (libcni, as containerd) and the built-in workload. See test/noderuntime.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/wgmesh/wgmesh/test/noderuntime"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var o noderuntime.Options
	var ips listFlag
	flag.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "Name of the Node to register.")
	flag.Var(&ips, "node-ip", "InternalIP of the node (repeat for dual-stack).")
	flag.StringVar(&o.CNI.ConfDir, "cni-conf-dir", "/etc/cni/net.d", "CNI configuration directory.")
	flag.StringVar(&o.CNI.BinDir, "cni-bin-dir", "/opt/cni/bin", "CNI plugin directory.")
	flag.StringVar(&o.CNI.CacheDir, "cni-cache-dir", "/var/lib/cni", "CNI cache directory.")
	zo := zap.Options{Development: true}
	zo.BindFlags(flag.CommandLine)
	flag.Parse() // --kubeconfig is registered by controller-runtime
	o.NodeIPs = ips
	if o.NodeName == "" || len(o.NodeIPs) == 0 {
		fmt.Fprintln(os.Stderr, "wgmesh-testnode: --node-name and --node-ip are required")
		os.Exit(2)
	}
	log := zap.New(zap.UseFlagOptions(&zo))
	ctrl.SetLogger(log)
	o.Log = log.WithName("testnode").WithValues("node", o.NodeName)
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wgmesh-testnode:", err)
		os.Exit(1)
	}
	if err := noderuntime.Run(ctrl.SetupSignalHandler(), cfg, o); err != nil {
		fmt.Fprintln(os.Stderr, "wgmesh-testnode:", err)
		os.Exit(1)
	}
}
