package egress

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/wgmesh/wgmesh/cni/guard"
)

// Names in the kernel (DESIGN.md: table wgmesh, families ip and ip6).
const (
	TableName         = guard.Table
	ChainName         = "egress-postrouting"
	GuardForwardChain = guard.ForwardChain
	GuardOutputChain  = guard.OutputChain
	DefaultTunnelIf   = "wgmesh0"
	DefaultBridgeIf   = "wgmesh-br0"
)

// Family is an IP family of the table.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv4 {
		return "ip"
	}
	return "ip6"
}

// Verdict is what a rule does with a matching packet.
type Verdict string

const (
	Return     Verdict = "return"
	Masquerade Verdict = "masquerade"
	Drop       Verdict = "drop"
	Accept     Verdict = "accept" // the policy of the guard chains; never a rule
)

// Rule matches when every field that is set matches.
type Rule struct {
	OIFName     string   // output interface is this one
	NotOIFNames []string // output interface is none of these
	Daddr       netip.Prefix
	Saddr       netip.Prefix
	Verdict     Verdict
}

// String is the rule in nft syntax; it is also stored as the rule's comment.
func (r Rule) String() string {
	var parts []string
	if r.OIFName != "" {
		parts = append(parts, fmt.Sprintf("oifname %q", r.OIFName))
	}
	for _, n := range r.NotOIFNames {
		parts = append(parts, fmt.Sprintf("oifname != %q", n))
	}
	if r.Daddr.IsValid() {
		parts = append(parts, fmt.Sprintf("%s daddr %s", familyOf(r.Daddr), r.Daddr))
	}
	if r.Saddr.IsValid() {
		parts = append(parts, fmt.Sprintf("%s saddr %s", familyOf(r.Saddr), r.Saddr))
	}
	return strings.Join(append(parts, string(r.Verdict)), " ")
}

func (r Rule) matches(pkt Packet) bool {
	if r.OIFName != "" && pkt.OIF != r.OIFName {
		return false
	}
	for _, n := range r.NotOIFNames {
		if pkt.OIF == n {
			return false
		}
	}
	if r.Daddr.IsValid() && !r.Daddr.Contains(pkt.Dst) {
		return false
	}
	if r.Saddr.IsValid() && !r.Saddr.Contains(pkt.Src) {
		return false
	}
	return true
}

// Program is the desired content of one family's chains: Rules for the
// egress masquerade chain, Guard for the two leak-guard chains (forward and
// output), which drop traffic to cluster pod ranges that would leave by any
// interface other than the tunnel or the pod bridge: before the route to a
// new node's pod range exists, such traffic would otherwise follow the
// default route and cross the underlay unencrypted.
type Program struct {
	Family Family
	Rules  []Rule
	Guard  []Rule
}

// Options are the inputs of Desired.
type Options struct {
	PodCIDRs     []netip.Prefix // the node's own podCIDRs
	ClusterCIDRs []netip.Prefix // --cluster-cidrs
	ServiceCIDRs []netip.Prefix // --service-cidrs
	// PeerRanges are the ranges only the tunnel may carry beyond the
	// cluster's: every node's pod CIDRs the agent knows of (node MeshPeers,
	// so nodes whose podCIDRs came from elsewhere are covered) and the
	// allowedIPs of the external peers in the mesh (a laptop, another
	// cluster's gateway). All are guarded.
	PeerRanges []netip.Prefix
	TunnelIf   string // defaults to DefaultTunnelIf
	BridgeIf   string // defaults to DefaultBridgeIf
}

// Desired computes the IPv4 and IPv6 programs. A family without a node
// podCIDR gets an empty program (nothing to masquerade).
func Desired(o Options) []Program {
	tun := o.TunnelIf
	if tun == "" {
		tun = DefaultTunnelIf
	}
	bridge := o.BridgeIf
	if bridge == "" {
		bridge = DefaultBridgeIf
	}
	var out []Program
	for _, fam := range []Family{IPv4, IPv6} {
		p := Program{Family: fam}
		for _, d := range GuardedRanges(o, fam) {
			p.Guard = append(p.Guard, Rule{NotOIFNames: []string{tun, bridge}, Daddr: d, Verdict: Drop})
		}
		srcs := ofFamily(o.PodCIDRs, fam)
		if len(srcs) > 0 {
			p.Rules = append(p.Rules, Rule{OIFName: tun, Verdict: Return})
			for _, d := range append(ofFamily(o.ClusterCIDRs, fam), ofFamily(o.ServiceCIDRs, fam)...) {
				p.Rules = append(p.Rules, Rule{Daddr: d, Verdict: Return})
			}
			for _, s := range srcs {
				p.Rules = append(p.Rules, Rule{Saddr: s, Verdict: Masquerade})
			}
		}
		out = append(out, p)
	}
	return out
}

// GuardedRanges are the destinations the leak guard keeps off every
// interface but the tunnel and the bridge: the cluster's pod CIDRs, every
// peer's range (node pod CIDRs, external peers' allowedIPs) and the service
// CIDRs, without ranges another one already covers, sorted.
func GuardedRanges(o Options, fam Family) []netip.Prefix {
	all := ofFamily(append(append(append([]netip.Prefix{}, o.ClusterCIDRs...), o.PeerRanges...), o.ServiceCIDRs...), fam)
	slices.SortFunc(all, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range all {
		if !slices.ContainsFunc(out, func(o netip.Prefix) bool { return o.Bits() <= p.Bits() && o.Contains(p.Addr()) }) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// Packet is what the model looks at.
type Packet struct {
	Src, Dst netip.Addr
	OIF      string
}

// Verdict traces pkt through the program: Drop when a guard rule stops it,
// else Masquerade, or Return when no masquerade rule applies (the packet
// leaves with its own source).
func (p Program) Verdict(pkt Packet) Verdict {
	if (p.Family == IPv4) != pkt.Src.Is4() {
		return Return
	}
	for _, r := range p.Guard {
		if r.matches(pkt) {
			return r.Verdict
		}
	}
	for _, r := range p.Rules {
		if r.matches(pkt) {
			return r.Verdict
		}
	}
	return Return
}

func ofFamily(ps []netip.Prefix, fam Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() == (fam == IPv4) {
			out = append(out, p.Masked())
		}
	}
	return out
}

func familyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}
