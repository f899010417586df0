package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/netns"
)

// PrivateDirs are the directories each node has for itself (its own mount namespace).
// /var/run/wgmesh holds the network policy's socket, which the node's CNI plugin asks.
var PrivateDirs = []string{
	"/var/run/wireguard", "/var/run/wgmesh", "/var/lib/wgmesh", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/run/netns",
}

// Node is one simulated machine: network namespace <Name> plus its own mount namespace,
// running the node runtime (kubelet + container runtime stand-in) and the agent.
type Node struct {
	Name string
	// NATted nodes sit in the second cloud behind the NAT router.
	NATted bool
	// UnderlayIP (and UnderlayIP6 in dual-stack clusters) is the node's InternalIP.
	UnderlayIP, UnderlayIP6 string
	NetNS                   *netns.NS
	Machine                 *netns.Machine
	// Dir is the node's host directory: kubeconfig, logs (agent.log, runtime.log) and
	// root/ with the private directories.
	Dir        string
	Kubeconfig string

	c       *Cluster
	mu      sync.Mutex
	agent   *process
	runtime *process
	real    *realNode // real nodes: containerd and kubelet
}

func (c *Cluster) newNode(ctx context.Context, name string, natted bool) (*Node, error) {
	if !strings.HasPrefix(name, netns.Prefix) {
		return nil, fmt.Errorf("node name %q: must start with %q", name, netns.Prefix)
	}
	idx := 0
	c.mu.Lock()
	for _, n := range c.Nodes {
		if n.NATted == natted {
			idx++
		}
	}
	c.mu.Unlock()
	var num int
	if _, err := fmt.Sscanf(name[strings.LastIndexByte(name, '-')+1:], "%d", &num); err == nil && num > 0 {
		idx = num - 1
	}
	v4, v6 := nodeAddress(natted, idx)
	n := &Node{Name: name, NATted: natted, UnderlayIP: v4, c: c, Dir: filepath.Join(c.WorkDir, "nodes", name)}
	if c.opts.DualStack {
		n.UnderlayIP6 = v6
	}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, err
	}
	mo := netns.MachineOptions{Name: name, StateDir: filepath.Join(n.Dir, "root"), Private: PrivateDirs}
	if c.opts.RealNodes {
		mo.Private = append(append([]string(nil), PrivateDirs...), realPrivateDirs...)
		setup, err := machineSetup()
		if err != nil {
			return nil, err
		}
		mo.Setup = setup
	}
	m, err := netns.NewMachine(ctx, mo)
	if err != nil {
		return nil, err
	}
	n.Machine, n.NetNS = m, m.NS
	if err := n.setupLinks(); err != nil {
		return n, err
	}
	if err := n.writeKubeconfig(); err != nil {
		return n, err
	}
	if c.opts.RealNodes {
		if err := n.startRealNode(ctx); err != nil {
			return n, err
		}
		return n, n.waitRegistered(ctx)
	}
	if err := n.StartRuntime(ctx); err != nil {
		return n, err
	}
	if err := n.waitRegistered(ctx); err != nil {
		return n, err
	}
	if !c.opts.NoAgents {
		if _, err := os.Stat(n.AgentBinary()); err != nil || c.opts.BinDir == "" {
			c.mu.Lock()
			msg := "wgmesh-agent (" + n.AgentBinary() + ")"
			if len(c.Missing) == 0 || c.Missing[len(c.Missing)-1] != msg {
				c.Missing = append(c.Missing, msg)
			}
			c.mu.Unlock()
			c.logf("agent binary %s not found: node %s runs without an agent", n.AgentBinary(), name)
		} else if err := n.StartAgent(ctx); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (n *Node) setupLinks() error {
	c := n.c
	bridgeNS, gw, gw6 := c.net.underlay, RouterOutside, RouterOutside6
	if n.NATted {
		bridgeNS, gw, gw6 = c.net.router, RouterInside, RouterInside6
	}
	if err := c.plug(n.NetNS, "eth0", n.Name, bridgeNS); err != nil {
		return err
	}
	if err := netns.AddAddr(n.NetNS, "eth0", n.UnderlayIP+"/24"); err != nil {
		return err
	}
	if err := netns.AddRoute(n.NetNS, "default", gw, "eth0"); err != nil {
		return err
	}
	if c.opts.DualStack {
		if err := netns.AddAddr(n.NetNS, "eth0", n.UnderlayIP6+"/64"); err != nil {
			return err
		}
		if err := netns.AddRoute(n.NetNS, "default6", gw6, "eth0"); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) writeKubeconfig() error {
	// Simulated nodes' identities are admins (their agents run with it); a real node's
	// kubelet is only system:node:<name>, held to its own objects by the Node authorizer
	// and NodeRestriction, and the agents use the chart's ServiceAccounts.
	orgs := []string{"system:nodes", "system:masters"}
	if n.c.opts.RealNodes {
		orgs = []string{"system:nodes"}
	}
	cf, kf, err := n.c.cp.pki.issue("node-"+n.Name, "system:node:"+n.Name, orgs, nil, nil, false)
	if err != nil {
		return err
	}
	n.Kubeconfig = filepath.Join(n.Dir, "kubeconfig")
	return writeKubeconfig(n.Kubeconfig, fmt.Sprintf("https://%s:%d", APIServerIP, APIServerPort), n.c.cp.pki.CAFile, cf, kf)
}

// Exec runs argv in the node's network and mount namespaces and returns the combined
// output.
func (n *Node) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	return n.Machine.Exec(ctx, argv...)
}

// Command returns a command that runs in the node's network and mount namespaces.
func (n *Node) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return n.Machine.Command(ctx, argv...)
}

// HostPath returns where a path inside one of the node's private directories lives on the
// host (for example /etc/cni/net.d/10-wgmesh.conflist).
func (n *Node) HostPath(p string) string { return n.Machine.HostPath(p) }

// AgentBinary is the agent the node runs.
func (n *Node) AgentBinary() string { return filepath.Join(n.c.opts.BinDir, "wgmesh-agent") }

// StartRuntime starts the node runtime (registers the Node, runs its pods).
func (n *Node) StartRuntime(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runtime != nil && n.runtime.running() {
		return nil
	}
	args := []string{n.c.testnodeBin,
		"--kubeconfig=" + n.Kubeconfig, "--node-name=" + n.Name, "--node-ip=" + n.UnderlayIP,
		"--cni-conf-dir=/etc/cni/net.d", "--cni-bin-dir=/opt/cni/bin", "--cni-cache-dir=/var/lib/cni"}
	if n.UnderlayIP6 != "" {
		args = append(args, "--node-ip="+n.UnderlayIP6)
	}
	p, err := n.c.startProcess("runtime "+n.Name, n.Command(context.WithoutCancel(ctx), args...), filepath.Join(n.Dir, "runtime.log"))
	if err != nil {
		return err
	}
	n.runtime = p
	return nil
}

// StopRuntime stops the node runtime (its pods' workloads stop with it).
func (n *Node) StopRuntime() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runtime != nil {
		n.runtime.stop(syscall.SIGTERM, 10*time.Second)
		n.c.run.forgetProc(n.runtime.pid())
		n.runtime = nil
	}
}

// waitRegistered waits for the Node object; simulated nodes are Ready at once, real ones
// only once wgmesh wrote the CNI configuration, so for them registration is enough.
func (n *Node) waitRegistered(ctx context.Context) error {
	n.mu.Lock()
	rt := n.runtime
	if n.real != nil {
		rt = n.real.kubelet
	}
	n.mu.Unlock()
	return waitUntil(ctx, 90*time.Second, "Node "+n.Name+" to be registered and Ready", rt, func() bool {
		node := &corev1.Node{}
		if err := n.c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
			return false
		}
		if n.real != nil {
			return true
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
}

// StartAgent starts wgmesh-agent in the node, logging to <Dir>/agent.log. extra flags are
// appended to the usual ones.
func (n *Node) StartAgent(ctx context.Context, extra ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent != nil && n.agent.running() {
		return fmt.Errorf("node %s: agent already runs (pid %d)", n.Name, n.agent.pid())
	}
	o := n.c.opts
	cidrs, svc := PodCIDR, ServiceCIDR
	if o.DualStack {
		cidrs += "," + PodCIDR6
		svc += "," + ServiceCIDR6
	}
	args := []string{n.AgentBinary(),
		"--kubeconfig=" + n.Kubeconfig, "--node-name=" + n.Name,
		"--wireguard-mode=" + o.WireGuardMode,
		"--cluster-cidrs=" + cidrs, "--service-cidrs=" + svc,
		"--cni-bin-source=" + filepath.Join(o.BinDir, "cni"),
	}
	args = append(args, o.AgentArgs...)
	args = append(args, extra...)
	cmd := n.Command(context.WithoutCancel(ctx), args...)
	cmd.Env = append(os.Environ(), "NODE_NAME="+n.Name)
	p, err := n.c.startProcess("agent "+n.Name, cmd, filepath.Join(n.Dir, "agent.log"))
	if err != nil {
		return err
	}
	n.agent = p
	return nil
}

// KillAgent sends sig to the agent and waits until it has exited.
func (n *Node) KillAgent(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil || !n.agent.running() {
		return fmt.Errorf("node %s: agent not running", n.Name)
	}
	_ = n.agent.cmd.Process.Signal(sig)
	select {
	case <-n.agent.done:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("node %s: agent still running 30s after %v", n.Name, sig)
	}
	n.c.run.forgetProc(n.agent.pid())
	return nil
}

// AgentPID returns the agent's PID, or 0 when it does not run.
func (n *Node) AgentPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil || !n.agent.running() {
		return 0
	}
	return n.agent.pid()
}

// AgentLog returns the path of the agent's log.
func (n *Node) AgentLog() string { return filepath.Join(n.Dir, "agent.log") }

// Capture starts tcpdump on iface inside the node.
func (n *Node) Capture(ctx context.Context, iface, filter string) (*netns.Capture, error) {
	return netns.StartCapture(ctx, n.NetNS, iface, filter)
}

func (n *Node) destroy() error {
	n.mu.Lock()
	agent, rt := n.agent, n.runtime
	n.mu.Unlock()
	// Graceful stops first (logs end cleanly); Machine.Close kills whatever remains in the
	// node's namespaces (workloads, userspace WireGuard, CNI plugins).
	if rt != nil {
		rt.stop(syscall.SIGTERM, 10*time.Second)
	}
	if agent != nil {
		agent.stop(syscall.SIGTERM, 10*time.Second)
	}
	var err error
	if n.real != nil {
		err = n.stopRealNode()
	}
	if n.Machine == nil {
		return err
	}
	err = errors.Join(err, n.Machine.Close())
	for _, p := range []*process{agent, rt} {
		if p != nil {
			n.c.run.forgetProc(p.pid())
		}
	}
	return err
}

func (n *Node) deleteObject(ctx context.Context) error {
	err := n.c.Client.Delete(ctx, &corev1.Node{ObjectMeta: metaName(n.Name)})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Node %s: %w", n.Name, err)
	}
	return nil
}

var errNoPodIP = errors.New("pod has no IP yet")
