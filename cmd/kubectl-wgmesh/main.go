// Command kubectl-wgmesh is the kubectl plugin for wgmesh: `kubectl wgmesh status`
// shows every peer of the mesh with the problems that keep it out, and the nodes
// that are not in the mesh yet and why.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

const usage = `kubectl wgmesh: inspect the wgmesh WireGuard mesh

Usage:
  kubectl wgmesh status [--kubeconfig PATH] [--context NAME]

status  lists every MeshPeer (node and external) with its endpoint, allowed IPs,
        connected peers, readiness and any problem condition (KeyConflict,
        AllowedIPsConflict, InvalidAnnotation), then the nodes that have no
        MeshPeer yet and why (no public key announced, no pod CIDR).
`

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Print(usage)
		return
	}
	switch os.Args[1] {
	case "status":
		if err := runStatus(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "kubectl wgmesh status: %v\n", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "kubectl wgmesh: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

func runStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context to use")
	timeout := fs.Duration("request-timeout", 30*time.Second, "timeout for the API requests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if *kubeconfig != "" {
		rules.ExplicitPath = *kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: *kubeContext}).ClientConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := wgmeshv1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var peers wgmeshv1.MeshPeerList
	if err := c.List(ctx, &peers); err != nil {
		return fmt.Errorf("listing meshpeers.wgmesh.io: %w", err)
	}
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	return writeStatus(os.Stdout, summarize(nodes.Items, peers.Items, time.Now()))
}
