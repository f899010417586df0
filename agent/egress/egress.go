package egress

import (
	"net/netip"

	"github.com/wgmesh/wgmesh/nft"
)

// ChainName is egress's base chain in table wgmesh.
const ChainName = "egress-postrouting"

// Part is egress masquerade's share of table wgmesh.
var Part = &nft.Part{
	Name:       "egress masquerade",
	BaseChains: []nft.BaseChain{{Name: ChainName, NAT: true, Hook: nft.HookPostrouting, Priority: nft.PrioritySNAT}},
}

// Defaults of Options.
const (
	DefaultTunnelIf = "wgmesh0"
)

// Options are the inputs of Desired.
type Options struct {
	PodCIDRs     []netip.Prefix // the node's own podCIDRs
	ClusterCIDRs []netip.Prefix // --cluster-cidrs
	ServiceCIDRs []netip.Prefix // --service-cidrs
	TunnelIf     string         // defaults to DefaultTunnelIf
}

// Desired is family f's egress chain. A family without a node podCIDR
// gets an empty chain (nothing to masquerade).
func Desired(o Options, f nft.Family) *nft.Ruleset {
	tun := o.TunnelIf
	if tun == "" {
		tun = DefaultTunnelIf
	}
	ret := nft.Verdict{Kind: nft.VerdictReturn}
	var rules nft.Chain
	if srcs := nft.OfFamily(o.PodCIDRs, f); len(srcs) > 0 {
		rules = append(rules, nft.Rule{OIFName: tun, Verdict: ret})
		for _, d := range nft.OfFamily(append(append([]netip.Prefix{}, o.ClusterCIDRs...), o.ServiceCIDRs...), f) {
			rules = append(rules, nft.Rule{Daddr: d, Verdict: ret})
		}
		for _, s := range srcs {
			rules = append(rules, nft.Rule{Saddr: s, Counter: true, Masquerade: true})
		}
	}
	rs := Part.Skeleton()
	rs.Chains[ChainName] = rules
	return rs
}
