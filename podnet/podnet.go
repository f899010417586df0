// Package podnet holds the facts about the pod network that several
// components need: a Node's pod CIDRs, the bridge gateway of a pod CIDR, and
// the CIDR lists flags take. One definition each, so that the operator, the
// agent, the service NAT, the CNI configuration and the kubectl plugin
// cannot disagree. CIDR text is validated by api/v1alpha1's ParseCIDR, the
// one CIDR validator.
package podnet

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// NodeCIDRStrings are a Node's pod CIDRs as written: spec.podCIDRs, or the
// older single spec.podCIDR.
func NodeCIDRStrings(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	if n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return nil
}

// NodeCIDRs are a Node's pod CIDRs, masked. An entry that does not parse is
// left out: the API server validates the field, and the operator is its
// only writer (DESIGN.md), so this is leniency towards nodes whose CIDRs
// came from elsewhere, not a validator.
func NodeCIDRs(n *corev1.Node) []netip.Prefix {
	return Masked(NodeCIDRStrings(n))
}

// Masked parses each entry leniently (host bits allowed) and masks it,
// leaving out what does not parse.
func Masked(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Gateway is the bridge gateway of a pod CIDR: its first address after the
// network address, with the CIDR's prefix length. host-local uses the same
// default, and the agent puts it on the bridge. False when the CIDR has no
// room for it.
func Gateway(podCIDR netip.Prefix) (netip.Prefix, bool) {
	podCIDR = podCIDR.Masked()
	gw := podCIDR.Addr().Next()
	if !gw.IsValid() || !podCIDR.Contains(gw) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(gw, podCIDR.Bits()), true
}

// TunnelAddress is the address the agent puts on the WireGuard link for a
// pod CIDR: its network address, alone (/32 or /128). host-local never hands
// it to a pod (it starts after the gateway). With it, a masquerade into the
// tunnel (kube-proxy's, on clusters that keep it) takes a source inside the
// node's pod CIDR, which every peer's AllowedIPs accept, instead of the
// underlay address the kernel would otherwise pick from another link. flannel
// gives its tunnel device the same address. False for a single-address CIDR.
func TunnelAddress(podCIDR netip.Prefix) (netip.Prefix, bool) {
	podCIDR = podCIDR.Masked()
	if podCIDR.IsSingleIP() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(podCIDR.Addr(), podCIDR.Addr().BitLen()), true
}

// ParseCIDRs parses a list of canonical CIDRs, any number per family (a
// flag such as --nodeport-addresses); what names the input in errors.
// Empty entries are skipped.
func ParseCIDRs(what string, values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		p, err := wgv1.ParseCIDR(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseCIDRList parses a comma-separated list of canonical CIDRs with at
// most one per family (a flag such as --cluster-cidrs); what names the
// input in errors. Empty entries are skipped.
func ParseCIDRList(what, s string) ([]netip.Prefix, error) {
	ps, err := ParseCIDRs(what, strings.Split(s, ","))
	if err != nil {
		return nil, err
	}
	var seen [2]netip.Prefix
	for _, p := range ps {
		fam := 0
		if p.Addr().Is6() {
			fam = 1
		}
		if seen[fam].IsValid() {
			return nil, fmt.Errorf("%s: %q has two %s CIDRs (%s and %s): want at most one IPv4 and one IPv6 CIDR", what, s, []string{"IPv4", "IPv6"}[fam], seen[fam], p)
		}
		seen[fam] = p
	}
	return ps, nil
}
