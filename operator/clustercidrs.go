package operator

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/operator/cidr"
	"github.com/wgmesh/wgmesh/podnet"
)

// CheckClusterCIDRs refuses to run when Nodes already carry pod CIDRs
// outside --cluster-cidrs: the operator and the cluster (kube-controller-
// manager, the kubelets) disagree about the pod ranges, and the agents'
// masquerade and leak guard would be wrong. The error names the nodes, their
// CIDRs and the flag.
func CheckClusterCIDRs(ctx context.Context, r client.Reader, pools []cidr.PoolSpec) error {
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return fmt.Errorf("listing Nodes to check %s: %w", cidr.FlagClusterCIDRs, err)
	}
	cluster := poolPrefixes(pools)
	var outside []string
	for i := range nodes.Items {
		for _, p := range podnet.NodeCIDRs(&nodes.Items[i]) {
			inside := false
			for _, c := range cluster {
				inside = inside || (c.Bits() <= p.Bits() && c.Contains(p.Addr()))
			}
			if !inside {
				outside = append(outside, fmt.Sprintf("Node %s spec.podCIDRs %s", nodes.Items[i].Name, p))
			}
		}
	}
	if len(outside) > 0 {
		return fmt.Errorf("%s %s disagrees with the cluster: %s lies outside it; set %s to the cluster's pod CIDRs (chart: operator.clusterCIDRs)",
			cidr.FlagClusterCIDRs, joinPrefixes(cluster), listNames(outside), cidr.FlagClusterCIDRs)
	}
	return nil
}
