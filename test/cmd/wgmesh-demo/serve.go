package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/wgmesh/wgmesh/test/cluster"
)

func cleanupCluster() error { return cluster.Cleanup(context.Background()) }

// serve owns the demo cluster: it starts it, shows it, and tears it down on SIGTERM.
func serve() error {
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	began := time.Now()
	// Real nodes (kubelet, containerd, helm install) unless WGMESH_DEMO_NODES=simulated
	// asks for the fast node runtime of the tests.
	real := os.Getenv("WGMESH_DEMO_NODES") != "simulated"
	if real {
		say("starting a 3-node cluster (1 node behind NAT) in network namespaces: real kubelet and containerd on every node, wgmesh installed with helm install charts/wgmesh ...")
	} else {
		say("starting a 3-node wgmesh cluster (1 node behind NAT, simulated node runtime) in network namespaces ...")
	}
	c, err := cluster.Start(ctx, cluster.Options{
		Nodes: 3, NATNodes: 1, RealNodes: real,
		WorkDir:  filepath.Join(StateDir, "cluster"),
		LockWait: 10 * time.Minute,
		Log:      prefixed{},
	})
	if err != nil {
		fmt.Println(err)
		fmt.Println(failedMarker)
		return err
	}
	defer func() {
		say("stopping the cluster ...")
		if err := c.Stop(); err != nil {
			say("stop: %v", err)
		}
		say("stopped")
	}()
	say("cluster ready in %s", time.Since(began).Round(100*time.Millisecond))
	if len(c.Missing) > 0 {
		say("NOT RUNNING (binaries missing): %v", c.Missing)
	}
	show(ctx, c)
	fmt.Println(readyMarker)
	<-ctx.Done()
	return nil
}

type prefixed struct{}

func (prefixed) Write(p []byte) (int, error) {
	os.Stdout.Write(append([]byte("  "), p...))
	return len(p), nil
}

func say(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

// kubectl runs the control plane's kubectl against the cluster and prints its output.
func kubectl(ctx context.Context, c *cluster.Cluster, args ...string) {
	bin := filepath.Join(c.Options().Assets, "kubectl")
	fmt.Printf("$ kubectl %s\n", joinArgs(args))
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	os.Stdout.Write(out)
	if err != nil {
		fmt.Printf("(kubectl: %v)\n", err)
	}
	fmt.Println()
}

// kubectlWgmesh runs the kubectl plugin (bin/kubectl-wgmesh) as
// `kubectl wgmesh ARGS` would.
func kubectlWgmesh(ctx context.Context, c *cluster.Cluster, args ...string) {
	bin := filepath.Join(c.Options().BinDir, "kubectl-wgmesh")
	fmt.Printf("$ kubectl wgmesh %s\n", joinArgs(args))
	out, err := exec.CommandContext(ctx, bin, append(args, "--kubeconfig="+c.Kubeconfig)...).CombinedOutput()
	os.Stdout.Write(out)
	if err != nil {
		fmt.Printf("(kubectl wgmesh: %v)\n", err)
	}
	fmt.Println()
}

func joinArgs(a []string) string {
	s := ""
	for i, x := range a {
		if i > 0 {
			s += " "
		}
		s += x
	}
	return s
}
