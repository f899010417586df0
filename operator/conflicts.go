package operator

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Problems are the operator's findings about one MeshPeer; an empty message
// means no problem.
type Problems struct {
	KeyConflict        string
	AllowedIPsConflict string
}

// maxListed caps how many other peers or CIDRs a condition message names.
const maxListed = 5

// FindConflicts computes, from all MeshPeers and Nodes, which peers share a
// public key and which non-node peers claim a node's pod CIDRs. Only peers
// with a problem are in the result.
func FindConflicts(peers []wgv1.MeshPeer, nodes []corev1.Node) map[string]Problems {
	out := map[string]Problems{}

	byKey := map[wgv1.PublicKey][]string{}
	for i := range peers {
		byKey[peers[i].Spec.PublicKey] = append(byKey[peers[i].Spec.PublicKey], peers[i].Name)
	}
	for key, names := range byKey {
		if len(names) < 2 {
			continue
		}
		sort.Strings(names)
		for _, n := range names {
			var others []string
			for _, o := range names {
				if o != n {
					others = append(others, o)
				}
			}
			p := out[n]
			p.KeyConflict = fmt.Sprintf("publicKey %s is also used by MeshPeer %s; both are left out of the mesh until one changes its key", key, listNames(others))
			out[n] = p
		}
	}

	type nodeCIDR struct {
		node   string
		prefix netip.Prefix
	}
	var podCIDRs []nodeCIDR
	for i := range nodes {
		for _, s := range nodePodCIDRs(&nodes[i]) {
			if p, err := netip.ParsePrefix(s); err == nil {
				podCIDRs = append(podCIDRs, nodeCIDR{node: nodes[i].Name, prefix: p.Masked()})
			}
		}
	}
	sort.Slice(podCIDRs, func(i, j int) bool { return podCIDRs[i].node < podCIDRs[j].node })
	for i := range peers {
		mp := &peers[i]
		if IsNodePeer(mp) {
			continue
		}
		var hits []string
		for _, a := range mp.Spec.AllowedIPs {
			ap, err := netip.ParsePrefix(string(a))
			if err != nil {
				continue
			}
			for _, nc := range podCIDRs {
				if ap.Overlaps(nc.prefix) {
					hits = append(hits, fmt.Sprintf("%s overlaps pod CIDR %s of node %s", a, nc.prefix, nc.node))
				}
			}
		}
		if len(hits) > 0 {
			p := out[mp.Name]
			p.AllowedIPsConflict = "allowedIPs " + listNames(hits) + "; this peer is left out of the mesh until its allowedIPs stay clear of node pod CIDRs"
			out[mp.Name] = p
		}
	}
	return out
}

func listNames(s []string) string {
	if len(s) <= maxListed {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(s[:maxListed], ", "), len(s)-maxListed)
}

// IsNodePeer reports whether a MeshPeer is a node's, written by the
// operator: its controller is the Node named in spec.nodeName. Every other
// MeshPeer is treated as external, whatever its nodeName says, so that only
// the operator decides which pod CIDRs a node peer carries.
func IsNodePeer(mp *wgv1.MeshPeer) bool {
	ref := metav1.GetControllerOf(mp)
	return mp.Spec.NodeName != "" && ref != nil && ref.APIVersion == "v1" && ref.Kind == "Node" && ref.Name == mp.Spec.NodeName
}

// nodePodCIDRs returns the node's podCIDRs, falling back to the single
// podCIDR field.
func nodePodCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	if n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return nil
}
