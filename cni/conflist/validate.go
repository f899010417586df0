package conflist

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
)

const (
	minMTU     = 576
	minMTUIPv6 = 1280
	maxMTU     = 65535
	// Smallest ranges that leave room for a gateway and at least one pod.
	maxPrefixBitsIPv4 = 30
	maxPrefixBitsIPv6 = 126
	maxBridgeNameLen  = 15
)

// Validate checks opts and returns the pod ranges sorted IPv4 first.
// Every error names the field, the bad value and what would be accepted.
func Validate(opts Options) ([]netip.Prefix, error) {
	if len(opts.PodCIDRs) == 0 {
		return nil, fmt.Errorf("podCIDRs is empty: the node has no pod CIDR yet; need one IPv4 and/or one IPv6 CIDR")
	}
	if len(opts.PodCIDRs) > 2 {
		return nil, fmt.Errorf("podCIDRs %v has %d entries: at most one IPv4 and one IPv6 CIDR are accepted", opts.PodCIDRs, len(opts.PodCIDRs))
	}
	var prefixes []netip.Prefix
	seen := map[bool]string{}
	for _, s := range opts.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("podCIDRs entry %q is not a CIDR (want e.g. 10.244.1.0/24 or fd00:10::/64): %w", s, err)
		}
		if p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return nil, fmt.Errorf("podCIDRs entry %q: want a plain IPv4 or IPv6 CIDR", s)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("podCIDRs entry %q has host bits set: want %s", s, p.Masked())
		}
		is4 := p.Addr().Is4()
		if prev, ok := seen[is4]; ok {
			return nil, fmt.Errorf("podCIDRs has two %s ranges (%q and %q): at most one per family is accepted", family(is4), prev, s)
		}
		seen[is4] = s
		if is4 && p.Bits() > maxPrefixBitsIPv4 || !is4 && p.Bits() > maxPrefixBitsIPv6 {
			limit := maxPrefixBitsIPv4
			if !is4 {
				limit = maxPrefixBitsIPv6
			}
			return nil, fmt.Errorf("podCIDRs entry %q is too small for a gateway and pods: want a prefix length of at most /%d", s, limit)
		}
		prefixes = append(prefixes, p)
	}
	sort.Slice(prefixes, func(i, j int) bool { return prefixes[i].Addr().Is4() && !prefixes[j].Addr().Is4() })

	lo := minMTU
	if _, ok := seen[false]; ok {
		lo = minMTUIPv6
	}
	if opts.MTU < lo || opts.MTU > maxMTU {
		return nil, fmt.Errorf("mtu %d is out of range: want %d-%d (IPv6 needs at least %d)", opts.MTU, lo, maxMTU, minMTUIPv6)
	}
	if n := opts.BridgeName; n != "" && (len(n) > maxBridgeNameLen || filepath.Base(n) != n || n == "." || n == "..") {
		return nil, fmt.Errorf("bridgeName %q is not a valid interface name: want 1-%d characters without '/'", n, maxBridgeNameLen)
	}
	switch opts.PortMapBackend {
	case PortMapNFTables, PortMapIPTables:
	default:
		return nil, fmt.Errorf("portMapBackend %q is not supported: want %q or %q", opts.PortMapBackend, PortMapNFTables, PortMapIPTables)
	}
	if opts.PolicySocket != "" && !filepath.IsAbs(opts.PolicySocket) {
		return nil, fmt.Errorf("policySocket %q is not an absolute path", opts.PolicySocket)
	}
	if opts.DataDir != "" && !filepath.IsAbs(opts.DataDir) {
		return nil, fmt.Errorf("dataDir %q is not an absolute path", opts.DataDir)
	}
	return prefixes, nil
}

func family(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}
