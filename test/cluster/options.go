package cluster

import (
	"fmt"
	"io"
	"os"
	"time"
)

// Options describe a local cluster. Zero values take the defaults noted.
type Options struct {
	// Nodes is the total number of nodes (default 3); NATNodes of them sit in the second
	// cloud behind the NAT router (default 0).
	Nodes    int
	NATNodes int
	// DualStack adds IPv6 underlay, pod and service ranges.
	DualStack bool
	// WireGuardMode is passed to the agents: "userspace" (default), "kernel" or "auto".
	WireGuardMode string
	// UnderlayMTU of every underlay link (default 1500).
	UnderlayMTU int
	// BinDir holds wgmesh-operator, wgmesh-agent and cni/ (default $WGMESH_BIN_DIR).
	// A missing binary is not started; Cluster.Missing says which.
	BinDir string
	// Assets holds etcd, kube-apiserver, kube-controller-manager, kubectl (default
	// $KUBEBUILDER_ASSETS).
	Assets string
	// WorkDir holds certificates, kubeconfigs, node directories and logs (default a new
	// /tmp/wgm-cluster-*). Removed by Stop unless KeepWorkDir.
	WorkDir     string
	KeepWorkDir bool
	// NoAgents leaves agents unstarted (tests start them with Node.StartAgent);
	// NoOperator leaves the operator out.
	NoAgents   bool
	NoOperator bool
	// AgentArgs are appended to every agent's flags.
	AgentArgs []string
	// RealNodes runs the real kubelet and containerd in every node (REAL-NODES.md)
	// instead of the node runtime and the agent processes, adds kube-scheduler and the
	// controllers real nodes need, and installs wgmesh with `helm install` from
	// charts/wgmesh and the image from `make image`: the operator and agents run as pods
	// with the chart's ServiceAccounts and RBAC. CoreDNS serves cluster DNS.
	RealNodes bool
	// NodeParts holds kubelet, kube-scheduler, containerd, containerd-shim-runc-v2, ctr
	// and images/*.tar (default $WGMESH_NODE_PARTS; hack/node-parts.sh builds it).
	NodeParts string
	// Image is wgmesh's OCI archive (default $WGMESH_IMAGE; make image builds it).
	Image string
	// Helm is the helm binary (default $WGMESH_HELM; hack/helm.sh builds it).
	Helm string
	// HelmValues are extra `--set` values of the real-node install.
	HelmValues []string
	// KubeProxy, when set, is the kube-proxy binary every real node runs (nftables mode),
	// and wgmesh's own service NAT is off: the reference the conformance run compares with.
	KubeProxy string
	// KubeProxyMode is kube-proxy's --proxy-mode: "nftables" (default) or "iptables"
	// (the host's iptables, as kubeadm clusters run it).
	KubeProxyMode string
	// ControlPlaneOnly starts the network, the control plane and the operator but no
	// nodes, and writes <WorkDir>/remote.json (RemoteFile), with which a cluster in a VM
	// whose NIC is on this underlay uses them (hack/vm.sh --cluster; see remote.go).
	ControlPlaneOnly bool
	// Remote is such a remote.json (default $WGMESH_CLUSTER_REMOTE): this cluster's
	// nodes run here, in a VM, and its control plane, operator, router and internet host
	// where that file was written. No nodes behind NAT then.
	Remote string
	// LockWait is how long Start waits for another local cluster on this machine to stop
	// (only one runs at a time: they share addresses). Default 20 minutes; negative: fail
	// at once.
	LockWait time.Duration
	// Log receives progress lines (default: discarded).
	Log io.Writer
}

func (o *Options) defaults() error {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.NATNodes < 0 || o.NATNodes > o.Nodes {
		return fmt.Errorf("options: NATNodes=%d: want 0..Nodes (%d)", o.NATNodes, o.Nodes)
	}
	if o.Nodes > 200 {
		return fmt.Errorf("options: Nodes=%d: want at most 200", o.Nodes)
	}
	switch o.WireGuardMode {
	case "":
		o.WireGuardMode = "userspace"
	case "userspace", "kernel", "auto":
	default:
		return fmt.Errorf("options: WireGuardMode=%q: want userspace, kernel or auto", o.WireGuardMode)
	}
	if o.UnderlayMTU == 0 {
		o.UnderlayMTU = 1500
	}
	if o.UnderlayMTU < 1280 || o.UnderlayMTU > 9000 {
		return fmt.Errorf("options: UnderlayMTU=%d: want 1280..9000", o.UnderlayMTU)
	}
	if o.BinDir == "" {
		o.BinDir = os.Getenv("WGMESH_BIN_DIR")
	}
	if o.Assets == "" {
		o.Assets = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if o.Assets == "" {
		return fmt.Errorf("options: Assets is empty and KUBEBUILDER_ASSETS is unset: run hack/control-plane.sh and export KUBEBUILDER_ASSETS=$(hack/control-plane.sh --dir)")
	}
	if o.NodeParts == "" {
		o.NodeParts = os.Getenv("WGMESH_NODE_PARTS")
	}
	if o.Image == "" {
		o.Image = os.Getenv("WGMESH_IMAGE")
	}
	if o.Helm == "" {
		o.Helm = os.Getenv("WGMESH_HELM")
	}
	switch o.KubeProxyMode {
	case "":
		o.KubeProxyMode = "nftables"
	case "nftables", "iptables":
	default:
		return fmt.Errorf("options: KubeProxyMode=%q: want nftables or iptables", o.KubeProxyMode)
	}
	if o.KubeProxyMode != "nftables" && o.KubeProxy == "" {
		return fmt.Errorf("options: KubeProxyMode=%q without KubeProxy (the kube-proxy binary)", o.KubeProxyMode)
	}
	if err := o.remoteDefaults(); err != nil {
		return err
	}
	if o.LockWait == 0 {
		o.LockWait = 20 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}
