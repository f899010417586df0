package cidr

import (
	"fmt"
	"net/netip"
	"strings"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Flag names, used in configuration errors so that a user knows what to fix.
const (
	FlagClusterCIDRs     = "--cluster-cidrs"
	FlagNodeMaskSizeIPv4 = "--node-cidr-mask-size-ipv4"
	FlagNodeMaskSizeIPv6 = "--node-cidr-mask-size-ipv6"
)

// Defaults for a real cluster.
const (
	DefaultClusterCIDRs     = "10.244.0.0/16"
	DefaultNodeMaskSizeIPv4 = 24
	DefaultNodeMaskSizeIPv6 = 64
)

// MaxSubnetBits caps a pool at 2^MaxSubnetBits node CIDRs (a 128 KiB
// bitmap), which covers an IPv6 /44 split into /64s.
const MaxSubnetBits = 20

// Config is the operator's pod CIDR configuration, as given on the command
// line.
type Config struct {
	// ClusterCIDRs is a comma list with at most one IPv4 and one IPv6 CIDR;
	// the first is the primary family (Node.spec.podCIDR).
	ClusterCIDRs string
	// NodeMaskSizeIPv4 and NodeMaskSizeIPv6 are the prefix lengths of each
	// node's CIDR per family.
	NodeMaskSizeIPv4 int
	NodeMaskSizeIPv6 int
}

// PoolSpec is one validated pool: a cluster CIDR and its node mask size.
type PoolSpec struct {
	Prefix   netip.Prefix
	MaskSize int
}

// Parse validates the configuration and returns one pool per family, in the
// order given. Errors name the flag and the bad value.
func (c Config) Parse() ([]PoolSpec, error) {
	var prefixes []netip.Prefix
	for _, s := range strings.Split(c.ClusterCIDRs, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := wgv1.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", FlagClusterCIDRs, err)
		}
		prefixes = append(prefixes, p)
	}
	if len(prefixes) == 0 {
		return nil, fmt.Errorf("%s: %q has no CIDR; want one IPv4 and/or one IPv6 CIDR such as 10.244.0.0/16", FlagClusterCIDRs, c.ClusterCIDRs)
	}
	for i, a := range prefixes {
		for _, b := range prefixes[i+1:] {
			if a.Overlaps(b) {
				return nil, fmt.Errorf("%s: %s and %s overlap", FlagClusterCIDRs, a, b)
			}
			if a.Addr().Is4() == b.Addr().Is4() {
				return nil, fmt.Errorf("%s: %s and %s are both %s; give at most one IPv4 and one IPv6 CIDR", FlagClusterCIDRs, a, b, familyLabel(a.Addr()))
			}
		}
	}
	specs := make([]PoolSpec, 0, len(prefixes))
	for _, p := range prefixes {
		flag, mask := FlagNodeMaskSizeIPv6, c.NodeMaskSizeIPv6
		if p.Addr().Is4() {
			flag, mask = FlagNodeMaskSizeIPv4, c.NodeMaskSizeIPv4
		}
		if err := checkMask(flag, mask, p); err != nil {
			return nil, err
		}
		specs = append(specs, PoolSpec{Prefix: p, MaskSize: mask})
	}
	return specs, nil
}

func checkMask(flag string, mask int, p netip.Prefix) error {
	maxBits := p.Addr().BitLen()
	if mask < 1 || mask > maxBits {
		return fmt.Errorf("%s: %d is out of range; want %d-%d", flag, mask, p.Bits()+1, maxBits)
	}
	if mask <= p.Bits() {
		return fmt.Errorf("%s: %d is not longer than the prefix of %s %s, so a node CIDR would not be smaller than the cluster CIDR; want %d-%d",
			flag, mask, FlagClusterCIDRs, p, p.Bits()+1, maxBits)
	}
	if mask-p.Bits() > MaxSubnetBits {
		return fmt.Errorf("%s: %d splits %s %s into 2^%d node CIDRs; at most 2^%d are supported: use a mask size of at most %d or a longer cluster prefix (at least /%d)",
			flag, mask, FlagClusterCIDRs, p, mask-p.Bits(), MaxSubnetBits, p.Bits()+MaxSubnetBits, mask-MaxSubnetBits)
	}
	return nil
}

func familyLabel(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
