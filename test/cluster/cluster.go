package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/netns"
)

// Cluster is a running local cluster.
type Cluster struct {
	// Client is an admin controller-runtime client (Scheme()).
	Client client.Client
	// Kubeconfig is the admin kubeconfig path.
	Kubeconfig string
	// WorkDir holds certificates, kubeconfigs, node directories and logs (logs/).
	WorkDir string
	// Nodes in creation order.
	Nodes []*Node
	// Missing lists product binaries that were not found and so not started.
	Missing []string
	// Underlay, Router and Internet are the namespaces of the underlay bridge, the NAT
	// router and the "internet" host (198.18.0.250).
	Underlay, Router, Internet *netns.NS

	opts        Options
	run         *runLock
	net         network
	cp          controlPlane
	testnodeBin string
	mu          sync.Mutex
	stopped     bool
}

// Start builds what it needs, cleans up after a crashed run, and starts the network, the
// control plane, the operator and the nodes. On error everything started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("local cluster: needs root (network namespaces)")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts}
	if opts.RealNodes {
		if err := c.checkNodeParts(); err != nil {
			return nil, err
		}
	}
	began := time.Now()
	buildErr := make(chan error, 1)
	go func() { // builds while the network and control plane come up
		var err error
		if !opts.RealNodes && !opts.ControlPlaneOnly {
			c.testnodeBin, err = buildTestnode(ctx, opts.Log)
		}
		buildErr <- err
	}()
	if c.run, err = acquireRun(ctx, opts.LockWait, c.logf); err != nil {
		<-buildErr
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if opts.WorkDir == "" {
		if c.WorkDir, err = os.MkdirTemp("", "wgm-cluster-"); err != nil {
			return nil, err
		}
	} else {
		c.WorkDir = opts.WorkDir
		if err := os.MkdirAll(c.WorkDir, 0o755); err != nil {
			return nil, err
		}
	}
	os.MkdirAll(filepath.Join(c.WorkDir, "logs"), 0o755)
	c.run.state = runState{OwnerPID: os.Getpid(), WorkDir: c.WorkDir}
	if err := c.run.save(); err != nil {
		return nil, err
	}
	c.logf("work dir %s", c.WorkDir)
	if err := c.setupNetwork(ctx); err != nil {
		return nil, err
	}
	c.Underlay, c.Router, c.Internet = c.net.underlay, c.net.router, c.net.internet
	c.logf("underlay up (%s)", time.Since(began).Round(time.Millisecond))
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	c.logf("control plane up (%s)", time.Since(began).Round(time.Millisecond))
	if opts.ControlPlaneOnly {
		return c, c.writeRemote()
	}
	if err := <-buildErr; err != nil {
		return nil, err
	}
	plain := opts.Nodes - opts.NATNodes
	var wg sync.WaitGroup
	errs := make([]error, opts.Nodes)
	nodes := make([]*Node, opts.Nodes)
	for i := range opts.Nodes {
		name, natted := fmt.Sprintf("wgm-node-%d", i+1), false
		if i >= plain {
			name, natted = fmt.Sprintf("wgm-nat-%d", i-plain+1), true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = c.newNode(ctx, name, natted)
		}()
	}
	wg.Wait()
	for _, n := range nodes {
		if n != nil {
			c.Nodes = append(c.Nodes, n)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.RealNodes {
		if err := c.installRealNodes(ctx); err != nil {
			return nil, err
		}
	}
	// Pods can be created once the service-account controller made "default" (as kind
	// waits for it too).
	err = waitUntil(ctx, 60*time.Second, "service account default/default", c.cp.kcm, func() bool {
		return c.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, &corev1.ServiceAccount{}) == nil
	})
	if err != nil {
		return nil, err
	}
	c.logf("%d nodes ready (%s)", len(c.Nodes), time.Since(began).Round(time.Millisecond))
	return c, nil
}

// installRealNodes installs wgmesh with helm on the registered real nodes, waits for them
// to become Ready (the agents wrote the CNI configuration) and starts CoreDNS on the
// pod network.
func (c *Cluster) installRealNodes(ctx context.Context) error {
	began := time.Now()
	if err := c.HelmInstall(ctx); err != nil {
		return err
	}
	if err := c.newClient(); err != nil { // discovery again: the CRD came with the chart
		return err
	}
	if err := c.waitNodesReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	c.logf("wgmesh installed with helm, %d nodes Ready (%s)", len(c.Nodes), time.Since(began).Round(time.Millisecond))
	if err := c.routePodCIDRs(ctx); err != nil {
		return err
	}
	if err := c.startCoreDNS(ctx); err != nil {
		return err
	}
	c.logf("CoreDNS ready (%s)", time.Since(began).Round(time.Millisecond))
	return nil
}

// AddNode adds a node; natted puts it in the second cloud.
func (c *Cluster) AddNode(ctx context.Context, name string, natted bool) (*Node, error) {
	if c.Node(name) != nil {
		return nil, fmt.Errorf("add node %s: a node with that name exists", name)
	}
	n, err := c.newNode(ctx, name, natted)
	if err != nil {
		if n != nil {
			n.destroy()
			n.deleteObject(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	c.mu.Lock()
	c.Nodes = append(c.Nodes, n)
	c.mu.Unlock()
	return n, nil
}

// Node returns the node with that name, or nil.
func (c *Cluster) Node(name string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// RemoveNode stops the node's processes, removes its namespaces and deletes its Node object
// (which garbage-collects its MeshPeer).
func (c *Cluster) RemoveNode(ctx context.Context, n *Node) error {
	err := n.destroy()
	if derr := n.deleteObject(ctx); derr != nil {
		err = errors.Join(err, derr)
	}
	c.mu.Lock()
	for i, x := range c.Nodes {
		if x == n {
			c.Nodes = append(c.Nodes[:i], c.Nodes[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	return err
}

// Stop tears everything down: node processes and namespaces, the control plane (API server
// before etcd), the network, the work directory. Safe to call twice.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	nodes := append([]*Node(nil), c.Nodes...)
	c.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.destroy(); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	c.stopControlPlane()
	if err := c.teardownNetwork(); err != nil {
		errs = append(errs, err)
	}
	if c.WorkDir != "" && !c.opts.KeepWorkDir {
		if err := os.RemoveAll(c.WorkDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := netns.ReleaseDirs(); err != nil {
		errs = append(errs, err)
	}
	if c.run != nil {
		if err := c.run.release(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists what carries the prefix after Stop: namespaces, mount namespaces, host
// links, mounts and processes, except what another live process owns (another test's
// cluster on a shared machine).
func Leftovers() ([]string, error) {
	lo, err := netns.Leftovers(true)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range lo {
		if l.Owner != 0 && l.Owner != os.Getpid() {
			continue
		}
		out = append(out, l.String())
	}
	sort.Strings(out)
	return out, nil
}

// Options returns the options the cluster runs with (defaults filled in).
func (c *Cluster) Options() Options { return c.opts }

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.opts.Log, "cluster: "+format+"\n", args...)
}

// moduleRoot is the directory of this module's go.mod, found from this source file.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot find the module root")
	}
	dir := filepath.Dir(file)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/wgmesh/wgmesh\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of github.com/wgmesh/wgmesh above %s", file)
		}
		dir = parent
	}
}
