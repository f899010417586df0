package cluster

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// HelmRelease and HelmNamespace are where the real-node mode installs wgmesh.
const (
	HelmRelease   = "wgmesh"
	HelmNamespace = "kube-system"
)

// helmValues are the real-node install's values: what a user of a cluster without
// kube-proxy and without the WireGuard module sets (README, "Install").
func (c *Cluster) helmValues() []string {
	cidrs, svc := PodCIDR, ServiceCIDR
	if c.opts.DualStack {
		cidrs += "," + PodCIDR6
		svc += "," + ServiceCIDR6
	}
	v := []string{
		"kubernetesServiceHost=" + APIServerIP,
		fmt.Sprintf("kubernetesServicePort=%d", APIServerPort),
		"operator.clusterCIDRs=" + strings.ReplaceAll(cidrs, ",", `\,`),
		"agent.serviceCIDRs=" + strings.ReplaceAll(svc, ",", `\,`),
		// This machine's kernel has no WireGuard module.
		"agent.wireguardMode=userspace",
	}
	if c.opts.KubeProxy != "" {
		v = append(v, "agent.serviceProxy=false")
	}
	return append(v, c.opts.HelmValues...)
}

// ChartDir is charts/wgmesh of this module.
func ChartDir() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "charts", "wgmesh"), nil
}

// Helm runs helm with the admin kubeconfig and returns its combined output.
func (c *Cluster) Helm(ctx context.Context, args ...string) ([]byte, error) {
	if c.opts.Helm == "" {
		return nil, fmt.Errorf("helm: Options.Helm and WGMESH_HELM are empty (hack/helm.sh)")
	}
	cmd := exec.CommandContext(ctx, c.opts.Helm, append(args, "--kubeconfig", c.Kubeconfig)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(c.WorkDir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(c.WorkDir, "helm", "config"), "HELM_DATA_HOME="+filepath.Join(c.WorkDir, "helm", "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// HelmInstall installs charts/wgmesh as a user does, with the real-node values plus
// extra `--set` values, and waits for the operator and every agent to be ready.
func (c *Cluster) HelmInstall(ctx context.Context, extra ...string) error {
	return c.helmApply(ctx, "install", extra)
}

// HelmUpgrade upgrades the release with the real-node values plus extra, and waits for the
// roll-out.
func (c *Cluster) HelmUpgrade(ctx context.Context, extra ...string) error {
	return c.helmApply(ctx, "upgrade", extra)
}

func (c *Cluster) helmApply(ctx context.Context, verb string, extra []string) error {
	chart, err := ChartDir()
	if err != nil {
		return err
	}
	args := []string{verb, HelmRelease, chart, "--namespace", HelmNamespace, "--wait", "--timeout", "5m"}
	for _, v := range append(c.helmValues(), extra...) {
		args = append(args, "--set", v)
	}
	began := time.Now()
	if _, err := c.Helm(ctx, args...); err != nil {
		return fmt.Errorf("%w\n%s", err, c.describeWgmesh(ctx))
	}
	c.logf("helm %s %s (%s)", verb, HelmRelease, time.Since(began).Round(time.Millisecond))
	return nil
}

// HelmUninstall removes the release and waits for its pods to go.
func (c *Cluster) HelmUninstall(ctx context.Context) error {
	_, err := c.Helm(ctx, "uninstall", HelmRelease, "--namespace", HelmNamespace, "--wait", "--timeout", "3m")
	return err
}

// describeWgmesh summarises the wgmesh pods, for errors.
func (c *Cluster) describeWgmesh(ctx context.Context) string {
	pods := &corev1.PodList{}
	if err := c.Client.List(ctx, pods, client.InNamespace(HelmNamespace), client.MatchingLabels{"app.kubernetes.io/name": "wgmesh"}); err != nil {
		return "list wgmesh pods: " + err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s on %s: %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, " [%s ready=%v restarts=%d", cs.Name, cs.Ready, cs.RestartCount)
			if w := cs.State.Waiting; w != nil {
				fmt.Fprintf(&b, " waiting %s: %s", w.Reason, w.Message)
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				fmt.Fprintf(&b, " last exit %d %s: %s", t.ExitCode, t.Reason, t.Message)
			}
			b.WriteString("]")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// waitNodesReady waits for every node to be Ready (real nodes: once wgmesh wrote the CNI
// configuration).
func (c *Cluster) waitNodesReady(ctx context.Context, timeout time.Duration) error {
	return waitUntil(ctx, timeout, "every Node Ready", nil, func() bool {
		for _, n := range c.Nodes {
			node := &corev1.Node{}
			if c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node) != nil {
				return false
			}
			ready := false
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			if !ready {
				return false
			}
		}
		return true
	})
}

//go:embed coredns.yaml
var corednsManifest string

// startCoreDNS applies CoreDNS (Deployment, Service kube-dns at ClusterDNS, RBAC) and waits
// for it.
func (c *Cluster) startCoreDNS(ctx context.Context) error {
	kubectl, err := c.asset("kubectl")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", c.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(strings.ReplaceAll(corednsManifest, "CLUSTER_DNS", ClusterDNS))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apply CoreDNS: %w: %s", err, out)
	}
	return waitUntil(ctx, 3*time.Minute, "CoreDNS to be available", nil, func() bool {
		d := &appsv1.Deployment{}
		return c.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, d) == nil &&
			d.Status.AvailableReplicas > 0
	})
}
