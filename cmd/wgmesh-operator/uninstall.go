package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/wgmesh/wgmesh/operator/uninstall"
)

// runUninstall is `wgmesh-operator uninstall`, the chart's pre-delete hook
// (package operator/uninstall). Exit code 2 for bad flags, 1 when the
// uninstall fails or times out.
func runUninstall(ctx context.Context, args []string, stderr io.Writer) int {
	var (
		o                      uninstall.Options
		daemonSets, kubeconfig string
		zo                     = zap.Options{}
	)
	fs := flag.NewFlagSet("wgmesh-operator uninstall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "Path to a kubeconfig; only needed outside the cluster (also $KUBECONFIG).")
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the DaemonSets (default $POD_NAMESPACE).")
	fs.StringVar(&daemonSets, "daemonset", "", "DaemonSets to delete, comma separated, one after the other: the agent's, then userspace WireGuard's.")
	fs.DurationVar(&o.Timeout, "timeout", uninstall.DefaultTimeout, "How long to wait in all for the DaemonSets' pods to go; then fail, naming the pods still present.")
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "wgmesh-operator uninstall: %v\n", err)
		return code
	}
	for _, name := range strings.Split(daemonSets, ",") {
		if name = strings.TrimSpace(name); name != "" {
			o.DaemonSets = append(o.DaemonSets, name)
		}
	}
	switch {
	case fs.NArg() > 0:
		return fail(2, fmt.Errorf("unexpected arguments %q; all settings are --flags", fs.Args()))
	case len(o.DaemonSets) == 0:
		return fail(2, errors.New("--daemonset: no DaemonSet named; want the agent's, such as --daemonset=wgmesh-agent,wgmesh-wireguard"))
	case o.Namespace == "":
		return fail(2, errors.New("--namespace: empty and $POD_NAMESPACE is unset; want the DaemonSets' namespace"))
	case o.Timeout <= 0:
		return fail(2, fmt.Errorf("--timeout=%s: want a positive duration such as 2m", o.Timeout))
	}
	zo.DestWriter = stderr
	o.Log = zap.New(zap.UseFlagOptions(&zo)).WithName("wgmesh-operator").WithName("uninstall")

	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return fail(2, fmt.Errorf("--kubeconfig %q: %w", kubeconfig, err))
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return fail(1, err)
	}
	o.Log.Info("uninstalling: deleting the DaemonSets one after the other and waiting for their pods",
		"namespace", o.Namespace, "daemonSets", o.DaemonSets, "timeout", o.Timeout.String())
	if err := uninstall.Run(ctx, c, o); err != nil {
		o.Log.Error(err, "uninstall failed")
		return fail(1, err)
	}
	return 0
}
