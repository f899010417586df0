package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/netns"
)

// Real nodes (Options.RealNodes): each node namespace runs containerd and the real kubelet
// (REAL-NODES.md), which register the Node and run its pods; wgmesh comes with `helm
// install` (helm.go). The parts come from hack/node-parts.sh (Options.NodeParts).

// realPrivateDirs are the directories a real node has for itself beyond PrivateDirs:
// kubelet's and containerd's state, so that hostPath volumes resolve to the node's own.
var realPrivateDirs = []string{
	"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/containerd", "/var/lib/containerd",
}

// The parts a real node runs, found in Options.NodeParts.
var nodePartBinaries = []string{"kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "kube-scheduler"}

// PauseImage is the sandbox image every node's containerd uses (imported, never pulled).
const PauseImage = "registry.k8s.io/pause:3.10.2"

// ClusterDNS is the kube-dns Service address in the service CIDR.
const ClusterDNS = "198.18.128.10"

// realNode is what a real node runs.
type realNode struct {
	containerd, kubelet, kubeProxy *process
	cgroupRoot                     string
}

func (c *Cluster) nodePart(name string) string { return filepath.Join(c.opts.NodeParts, name) }

// machineSetup is the extra mount-namespace set-up of a real node: shared propagation
// (kubelet, containerd, shims and runc live in it, and mounts must reach containers) and
// the cgroup hierarchies the fresh /sys hides.
func machineSetup() (string, error) {
	mounts, err := hostCgroupMounts()
	if err != nil {
		return "", err
	}
	return "mount --make-rshared /\n" + cgroupMountScript(mounts), nil
}

// startRealNode starts containerd, imports the images and starts the kubelet.
func (n *Node) startRealNode(ctx context.Context) error {
	c := n.c
	n.real = &realNode{cgroupRoot: filepath.Join(cgroupBase(), n.Name)}
	if err := makeCgroupRoot(n.real.cgroupRoot); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	began := time.Now()
	if err := n.importImages(ctx); err != nil {
		return err
	}
	c.logf("node %s: images imported (%s)", n.Name, time.Since(began).Round(time.Millisecond))
	return n.startKubelet(ctx)
}

func (n *Node) containerdSocket() string { return "/run/containerd/containerd.sock" }

func (n *Node) startContainerd(ctx context.Context) error {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return fmt.Errorf("node %s: runc not found (apt-get install runc): %w", n.Name, err)
	}
	cfg := fmt.Sprintf(`version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = %q

# NRI's socket (/var/run/nri/nri.sock) is not in a node's private directories: with it on,
# the nodes' containerds race to bind one path. Nothing here uses NRI.
[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q

[plugins."io.containerd.cri.v1.runtime"]
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = %q
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
`, n.containerdSocket(), PauseImage, runc)
	path := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	cmd := n.Command(context.WithoutCancel(ctx), n.c.nodePart("containerd"), "--config="+path, "--log-level=warn")
	cmd.Env = append(os.Environ(), "PATH="+n.c.opts.NodeParts+":"+os.Getenv("PATH"))
	p, err := n.c.startProcess("containerd "+n.Name, cmd, filepath.Join(n.Dir, "containerd.log"))
	if err != nil {
		return err
	}
	n.real.containerd = p
	sock := filepath.Join(n.HostPath("/run/containerd"), "containerd.sock")
	return waitUntil(ctx, 60*time.Second, "containerd of "+n.Name, p, func() bool {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// Ctr runs ctr against the node's containerd in the k8s.io namespace.
func (n *Node) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	argv := append([]string{n.c.nodePart("ctr"), "--address", n.containerdSocket(), "-n", "k8s.io"}, args...)
	return n.Exec(ctx, argv...)
}

// images lists the OCI archives every real node imports: the parts' images (pause,
// agnhost, CoreDNS) and wgmesh's.
func (c *Cluster) images() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(c.opts.NodeParts, "images", "*.tar"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no image archives in %s/images (hack/node-parts.sh builds them)", c.opts.NodeParts)
	}
	if c.opts.Image != "" {
		files = append(files, c.opts.Image)
	}
	sort.Strings(files)
	return files, nil
}

func (n *Node) importImages(ctx context.Context) error {
	files, err := n.c.images()
	if err != nil {
		return err
	}
	for _, f := range files {
		if out, err := n.Ctr(ctx, "images", "import", "--local", f); err != nil {
			return fmt.Errorf("node %s: import %s: %w: %s", n.Name, f, err, out)
		}
	}
	return nil
}

func (n *Node) startKubelet(ctx context.Context) error {
	c := n.c
	ca := c.cp.pki.CAFile
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 host (REAL-NODES.md): 1.37 refuses v1 unless told otherwise.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: %q
containerRuntimeEndpoint: unix://%s
address: %q
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %q
authorization:
  mode: Webhook
clusterDNS: [%q]
clusterDomain: cluster.local
resolvConf: %q
# Imported images must stay: nothing can be pulled here.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1%%"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
serializeImagePulls: false
syncFrequency: 10s
nodeStatusReportFrequency: 10s
`, n.real.cgroupRoot, n.containerdSocket(), n.UnderlayIP, ca, ClusterDNS, n.resolvConf())
	path := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	ips := n.UnderlayIP
	if n.UnderlayIP6 != "" {
		ips += "," + n.UnderlayIP6
	}
	cmd := n.Command(context.WithoutCancel(ctx), c.nodePart("kubelet"),
		"--config="+path, "--kubeconfig="+n.Kubeconfig,
		"--hostname-override="+n.Name, "--node-ip="+ips, "--v=1")
	p, err := c.startProcess("kubelet "+n.Name, cmd, filepath.Join(n.Dir, "kubelet.log"))
	if err != nil {
		return err
	}
	n.real.kubelet = p
	if c.opts.KubeProxy != "" {
		return n.startKubeProxy(ctx)
	}
	return nil
}

// startKubeProxy runs upstream kube-proxy on the node (Options.KubeProxy, in
// Options.KubeProxyMode), as system:kube-proxy (bootstrap RBAC's node-proxier).
func (n *Node) startKubeProxy(ctx context.Context) error {
	c := n.c
	cf, kf, err := c.cp.pki.issue("kube-proxy-"+n.Name, "system:kube-proxy", nil, nil, nil, false)
	if err != nil {
		return err
	}
	kc := filepath.Join(n.Dir, "kube-proxy.kubeconfig")
	if err := writeKubeconfig(kc, fmt.Sprintf("https://%s:%d", APIServerIP, APIServerPort), c.cp.pki.CAFile, cf, kf); err != nil {
		return err
	}
	cidrs := PodCIDR
	if c.opts.DualStack {
		cidrs += "," + PodCIDR6
	}
	cmd := n.Command(context.WithoutCancel(ctx), c.opts.KubeProxy,
		"--kubeconfig="+kc, "--proxy-mode="+c.opts.KubeProxyMode, "--hostname-override="+n.Name,
		"--cluster-cidr="+cidrs, "--conntrack-max-per-core=0",
		"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256", "--v=1")
	p, err := c.startProcess("kube-proxy "+n.Name, cmd, filepath.Join(n.Dir, "kube-proxy.log"))
	if err != nil {
		return err
	}
	n.real.kubeProxy = p
	return nil
}

// resolvConf is a resolv.conf for pods with dnsPolicy Default: the machine's own names
// are not reachable from the node namespaces, so it names the cluster DNS only.
func (n *Node) resolvConf() string {
	p := filepath.Join(n.Dir, "resolv.conf")
	os.WriteFile(p, []byte("nameserver "+ClusterDNS+"\n"), 0o644)
	return p
}

// stopRealNode stops the kubelet, the pods (by their cgroups) and containerd.
func (n *Node) stopRealNode() error {
	r := n.real
	if r == nil {
		return nil
	}
	for _, p := range []*process{r.kubeProxy, r.kubelet} {
		if p != nil {
			p.stop(syscall.SIGTERM, 10*time.Second)
			n.c.run.forgetProc(p.pid())
		}
	}
	err := removeCgroupRoot(r.cgroupRoot)
	if r.containerd != nil {
		r.containerd.stop(syscall.SIGTERM, 10*time.Second)
		n.c.run.forgetProc(r.containerd.pid())
	}
	return err
}

// pids lists the processes in the node's cgroup root (its pods).
func (r *realNode) pids() []int {
	hs, err := v1Hierarchies()
	if err != nil {
		return nil
	}
	for _, h := range hs {
		if strings.HasSuffix(h, "/memory") {
			return cgroupPIDs(filepath.Join(h, r.cgroupRoot))
		}
	}
	return nil
}

// PodPID returns the host PID of the pod's first container (real nodes), through the
// node's containerd.
func (n *Node) PodPID(ctx context.Context, pod *corev1.Pod) (int, error) {
	if len(pod.Status.ContainerStatuses) == 0 {
		return 0, fmt.Errorf("pod %s/%s: no container status yet", pod.Namespace, pod.Name)
	}
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := n.Ctr(ctx, "tasks", "ls")
	if err != nil {
		return 0, fmt.Errorf("node %s: ctr tasks ls: %w: %s", n.Name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == id {
			var pid int
			if _, err := fmt.Sscanf(f[1], "%d", &pid); err == nil {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("pod %s/%s: container %s not among node %s's tasks", pod.Namespace, pod.Name, id, n.Name)
}

// KubeletLog is the path of the node's kubelet log (real nodes).
func (n *Node) KubeletLog() string { return filepath.Join(n.Dir, "kubelet.log") }

// startScheduler starts kube-scheduler (real nodes: pods are scheduled, not bound).
func (c *Cluster) startScheduler(ctx context.Context) error {
	cmd := exec.Command(c.nodePart("kube-scheduler"),
		"--kubeconfig="+filepath.Join(c.WorkDir, "kube-scheduler.kubeconfig"),
		"--leader-elect=false", "--v=1")
	var err error
	c.cp.scheduler, err = c.startProcess("kube-scheduler", cmd, filepath.Join(c.WorkDir, "logs", "kube-scheduler.log"))
	return err
}

// checkNodeParts reports which parts real nodes need are missing.
func (c *Cluster) checkNodeParts() error {
	if c.opts.NodeParts == "" {
		return fmt.Errorf("options: RealNodes needs NodeParts (or WGMESH_NODE_PARTS): build them with hack/node-parts.sh")
	}
	var missing []string
	for _, b := range nodePartBinaries {
		if _, err := os.Stat(c.nodePart(b)); err != nil {
			missing = append(missing, b)
		}
	}
	if c.opts.Image == "" {
		missing = append(missing, "wgmesh image (Options.Image or WGMESH_IMAGE; make image)")
	} else if _, err := os.Stat(c.opts.Image); err != nil {
		missing = append(missing, "wgmesh image "+c.opts.Image)
	}
	if c.opts.Helm == "" {
		missing = append(missing, "helm (Options.Helm or WGMESH_HELM; hack/helm.sh)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		missing = append(missing, "runc (apt-get install runc)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("real nodes: missing %s (NodeParts=%s)", strings.Join(missing, ", "), c.opts.NodeParts)
	}
	return nil
}

// routePodCIDRs gives the host, where the control plane runs, a route to each reachable
// node's pod CIDRs through that node. A control plane on a real cluster's nodes reaches pods
// over the pod network; the API server here proxies to pods (the e2e DNS specs read their
// results that way) and does not run an agent, so it reaches them over the underlay, as it
// reaches kubelets. Nodes behind the NAT router stay unreachable, as their kubelets do.
// The routes go with the host's underlay link.
func (c *Cluster) routePodCIDRs(ctx context.Context) error {
	for _, n := range c.Nodes {
		if n.NATted {
			continue
		}
		node := &corev1.Node{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
			return err
		}
		for _, cidr := range node.Spec.PodCIDRs {
			gw := n.UnderlayIP
			if strings.Contains(cidr, ":") {
				gw = n.UnderlayIP6
			}
			if gw == "" {
				continue
			}
			if err := netns.AddRoute(netns.Host(), cidr, gw, hostLink); err != nil {
				return fmt.Errorf("host route to %s's pods %s via %s: %w", n.Name, cidr, gw, err)
			}
		}
	}
	return nil
}
