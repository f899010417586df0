package servicenat

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/nft"
)

// Names in the kernel (DESIGN.md, "Service NAT layout"; kube-proxy's
// nftables mode spells them the same).
const (
	ChainServices               = "services"
	ChainMasquerading           = "masquerading"
	ChainMarkForMasquerade      = "mark-for-masquerade"
	ChainServiceEndpointsCheck  = "service-endpoints-check"
	ChainNodePortEndpointsCheck = "nodeport-endpoints-check"
	ChainClusterIPsCheck        = "cluster-ips-check"
	ChainFirewallCheck          = "firewall-check"
	ChainReject                 = "reject-chain"
	// The fast path's chains: chain services sends a fast Service's
	// ClusterIP keys to cluster-ip-dnat and its external keys to
	// external-ip-dnat, which mark for masquerade as needed and go to
	// endpoints-dnat, the DNAT rules (one per endpoint count). Other
	// traffic pays two set lookups, whatever the endpoint counts.
	ChainClusterIPDNAT  = "cluster-ip-dnat"
	ChainExternalIPDNAT = "external-ip-dnat"
	ChainEndpointsDNAT  = "endpoints-dnat"

	MapServiceIPs          = "service-ips"
	MapServiceNodePorts    = "service-nodeports"
	MapNoEndpointServices  = "no-endpoint-services"
	MapNoEndpointNodePorts = "no-endpoint-nodeports"
	MapFirewallIPs         = "firewall-ips"

	SetClusterIPs  = "cluster-ips"
	SetNodePortIPs = "nodeport-ips"

	// The element-only fast path (Services without session affinity,
	// traffic policies Local or load-balancer source ranges): a Service
	// is only elements of these sets and maps, so that adding, changing or
	// removing one writes no rule and no verdict (either makes the kernel
	// validate the whole table at commit).
	//
	// SetClusterIPPorts: ClusterIP . protocol . port of a fast Service with
	// endpoints; clients outside the pod ranges are masqueraded.
	// SetExternalIPPorts: externalIP, load-
	// balancer IP or NodePort address . protocol . port; always
	// masqueraded. SetNoEndpointPorts: address . protocol . port of a fast
	// Service without endpoints: refused. SetHairpin: endpoint . endpoint
	// (a pod reaching itself through its Service is masqueraded).
	SetClusterIPPorts  = "cluster-ip-ports"
	SetExternalIPPorts = "external-ip-ports"
	SetNoEndpointPorts = "no-endpoint-ports"
	SetHairpin         = "hairpin-endpoints"
	// PrefixEndpointsMod names the DNAT maps, one per endpoint count N:
	// endpoints-mod-N maps address . protocol . port . slot (0 to N-1) to
	// an endpoint, and chain endpoints-dnat has the rule "dnat to daddr .
	// l4proto . dport . numgen random mod N map @endpoints-mod-N" while a
	// Service port has N endpoints: the spread is exact, and a rule is
	// written only when a new N first occurs.
	PrefixEndpointsMod = "endpoints-mod-"
)

// Base chain priorities. The filter chains that reject run just before the
// leak guard (priority filter) so that a refused connection is answered,
// not silently dropped; the firewall runs before DNAT, the endpoint checks
// after it.
const (
	prioPreDNAT = -110
	prioDNAT    = -100
	prioFilter  = -5
	prioSNAT    = 100
)

// BaseChains are the hooked chains of the table (the same for both families).
func BaseChains() []nft.BaseChain {
	ctNewJump := func(c string) nft.Rule { return nft.Rule{CtStateNew: true, Verdict: nft.Jump(c)} }
	return []nft.BaseChain{
		{Name: "filter-prerouting-pre-dnat", Hook: nft.HookPrerouting, Priority: prioPreDNAT, Rules: nft.Chain{ctNewJump(ChainFirewallCheck)}},
		{Name: "filter-output-pre-dnat", Hook: nft.HookOutput, Priority: prioPreDNAT, Rules: nft.Chain{ctNewJump(ChainFirewallCheck)}},
		{Name: "nat-prerouting", NAT: true, Hook: nft.HookPrerouting, Priority: prioDNAT, Rules: nft.Chain{{Verdict: nft.Jump(ChainServices)}}},
		{Name: "nat-output", NAT: true, Hook: nft.HookOutput, Priority: prioDNAT, Rules: nft.Chain{{Verdict: nft.Jump(ChainServices)}}},
		{Name: "nat-postrouting", NAT: true, Hook: nft.HookPostrouting, Priority: prioSNAT, Rules: nft.Chain{{Verdict: nft.Jump(ChainMasquerading)}}},
		{Name: "filter-input", Hook: nft.HookInput, Priority: prioFilter, Rules: nft.Chain{ctNewJump(ChainNodePortEndpointsCheck), ctNewJump(ChainServiceEndpointsCheck)}},
		{Name: "filter-forward", Hook: nft.HookForward, Priority: prioFilter, Rules: nft.Chain{ctNewJump(ChainServiceEndpointsCheck), ctNewJump(ChainClusterIPsCheck)}},
		{Name: "filter-output", Hook: nft.HookOutput, Priority: prioFilter, Rules: nft.Chain{ctNewJump(ChainServiceEndpointsCheck), ctNewJump(ChainClusterIPsCheck)}},
	}
}

// Part is the service NAT's share of table wgmesh: its base chains, maps,
// sets and chain names. Nothing else in the table is read or written by it.
var Part = &nft.Part{
	Name:       "service NAT",
	BaseChains: BaseChains(),
	Maps: map[string]nft.KeyKind{
		MapServiceIPs:          nft.KeyAddrProtoPort,
		MapServiceNodePorts:    nft.KeyProtoPort,
		MapNoEndpointServices:  nft.KeyAddrProtoPort,
		MapNoEndpointNodePorts: nft.KeyProtoPort,
		MapFirewallIPs:         nft.KeyAddrProtoPort,
	},
	Sets: []string{SetClusterIPs, SetNodePortIPs},
	TypedSets: map[string]nft.SetKind{
		SetClusterIPPorts:  nft.SetAddrProtoPort,
		SetExternalIPPorts: nft.SetAddrProtoPort,
		SetNoEndpointPorts: nft.SetAddrProtoPort,
		SetHairpin:         nft.SetAddrAddr,
	},
	SetPrefixes: []string{PrefixEndpointsMod},
	Chains: []string{ChainServices, ChainClusterIPDNAT, ChainExternalIPDNAT, ChainEndpointsDNAT, ChainMasquerading, ChainMarkForMasquerade, ChainServiceEndpointsCheck,
		ChainNodePortEndpointsCheck, ChainClusterIPsCheck, ChainFirewallCheck, ChainReject},
	ChainPrefixes:  []string{prefixService, prefixExternal, prefixLocal, prefixFirewall, prefixEndpoint},
	AffinityPrefix: prefixAffinity,
}

// Render computes family f's whole table: the static chains plus every
// Service's fragment. It is pure: the same input gives the same ruleset.
func Render(in Input, f nft.Family) *nft.Ruleset {
	t := NewTable(in)
	for _, s := range in.Services {
		t.Update(s)
	}
	return t.Full(f)
}

// RenderStatic computes the chains and set elements that do not belong to
// one Service.
func RenderStatic(in Input, f nft.Family) *nft.Ruleset {
	rs := Part.Skeleton()
	rs.Chains[ChainServices] = nft.Chain{
		{VMap: MapServiceIPs, VMapKey: nft.KeyAddrProtoPort},
		{DaddrSet: SetNodePortIPs, VMap: MapServiceNodePorts, VMapKey: nft.KeyProtoPort},
		{DaddrProtoPortSet: SetClusterIPPorts, Verdict: nft.Goto(ChainClusterIPDNAT)},
		{DaddrProtoPortSet: SetExternalIPPorts, Verdict: nft.Goto(ChainExternalIPDNAT)},
	}
	var cluster nft.Chain
	if cidrs := prefixesOf(in.ClusterCIDRs, f); len(cidrs) > 0 {
		// Clients outside the pod ranges (the node itself, hosts routed
		// to the service range) are masqueraded, so replies come back
		// through this node.
		cluster = nft.Chain{{SaddrNotIn: cidrs, Verdict: nft.Jump(ChainMarkForMasquerade)}}
	}
	rs.Chains[ChainClusterIPDNAT] = append(cluster, nft.Rule{Verdict: nft.Goto(ChainEndpointsDNAT)})
	rs.Chains[ChainExternalIPDNAT] = nft.Chain{{Verdict: nft.Jump(ChainMarkForMasquerade)}, {Verdict: nft.Goto(ChainEndpointsDNAT)}}
	rs.Chains[ChainEndpointsDNAT] = endpointsDNAT(nil)
	masq := nft.Chain{
		{SaddrDaddrSet: SetHairpin, SetMark: true},
		{MarkUnset: true, Verdict: nft.Verdict{Kind: nft.VerdictReturn}},
		{ClearMark: true},
	}
	for _, a := range addrsOf(in.SNATAddrs, f) {
		// The first address of the family: the pod bridge gateway.
		masq = append(masq, nft.Rule{OIFName: in.TunnelIf, SNAT: a, FullyRandom: true})
		break
	}
	rs.Chains[ChainMasquerading] = append(masq, nft.Rule{Masquerade: true, FullyRandom: true})
	rs.Chains[ChainMarkForMasquerade] = nft.Chain{{SetMark: true}}
	rs.Chains[ChainServiceEndpointsCheck] = nft.Chain{
		{DaddrProtoPortSet: SetNoEndpointPorts, Verdict: nft.Goto(ChainReject)},
		{VMap: MapNoEndpointServices, VMapKey: nft.KeyAddrProtoPort},
	}
	rs.Chains[ChainNodePortEndpointsCheck] = nft.Chain{{DaddrSet: SetNodePortIPs, VMap: MapNoEndpointNodePorts, VMapKey: nft.KeyProtoPort}}
	check := nft.Chain{{DaddrSet: SetClusterIPs, Verdict: nft.Goto(ChainReject)}}
	for _, p := range prefixesOf(in.ServiceCIDRs, f) {
		check = append(check, nft.Rule{Daddr: p, Verdict: nft.Verdict{Kind: nft.VerdictDrop}})
	}
	rs.Chains[ChainClusterIPsCheck] = check
	rs.Chains[ChainFirewallCheck] = nft.Chain{{VMap: MapFirewallIPs, VMapKey: nft.KeyAddrProtoPort}}
	rs.Chains[ChainReject] = nft.Chain{{Proto: nft.TCP, Verdict: nft.Verdict{Kind: nft.VerdictReject}}, {Verdict: nft.Verdict{Kind: nft.VerdictReject}}}
	for _, a := range addrsOf(in.NodePortIPs, f) {
		rs.AddSetElement(SetNodePortIPs, a)
	}
	for m := range Part.Maps {
		rs.Maps[m] = map[nft.MapKey]nft.Verdict{}
	}
	for _, s := range Part.Sets {
		if rs.Sets[s] == nil {
			rs.Sets[s] = map[netip.Addr]bool{}
		}
	}
	return rs
}

// endpointsDNAT is chain endpoints-dnat: one DNAT rule per endpoint count
// in mods (ascending).
func endpointsDNAT(mods []int) nft.Chain {
	c := nft.Chain{}
	for _, n := range mods {
		c = append(c, nft.Rule{VMap: endpointsMap(n), VMapKey: nft.KeyAddrProtoPortSlot, NumgenMod: int32(n)})
	}
	return c
}

// endpointsMap names the DNAT map of the Service ports with n endpoints.
func endpointsMap(n int) string { return PrefixEndpointsMod + strconv.Itoa(n) }

// modOf is the endpoint count of a DNAT map's name (0: not one).
func modOf(name string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(name, PrefixEndpointsMod))
	if err != nil || !strings.HasPrefix(name, PrefixEndpointsMod) || n <= 0 {
		return 0
	}
	return n
}

// Fast reports whether s takes the element-only fast path: nothing of it
// needs a chain (session affinity, traffic policies Local and load-balancer
// source ranges do).
func Fast(s Service) bool {
	return s.AffinityTimeout == 0 && !s.InternalLocal && !s.ExternalLocal && (len(s.SourceRanges) == 0 || len(s.LoadBalancerIPs) == 0)
}

// Chain name prefixes of the per-Service chains.
const (
	prefixService  = "service-"
	prefixExternal = "external-"
	prefixLocal    = "local-"
	prefixFirewall = "firewall-"
	prefixEndpoint = "endpoint-"
	prefixAffinity = "affinity-"
)

// hashed is "<hash>-<id>", kube-proxy's way of keeping names unique and
// readable.
func hashed(id string) string {
	sum := sha256.Sum256([]byte(id))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:8] + "-" + id
}

// EndpointSets are the endpoints a Service port uses, after the traffic
// policies and the ready/terminating fallback.
type EndpointSets struct {
	// Cluster are the usable endpoints anywhere in the cluster, Local those
	// on this node.
	Cluster, Local []Endpoint
}

// usable returns the ready endpoints, or, when there are none, those that
// are serving while terminating (kube-proxy's fallback, so that a rolling
// update never leaves a moment with no endpoint).
func usable(es []Endpoint) []Endpoint {
	var ready, terminating []Endpoint
	for _, e := range es {
		switch {
		case e.Ready:
			ready = append(ready, e)
		case e.Serving && e.Terminating:
			terminating = append(terminating, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return terminating
}

// Categorize sorts one port's endpoints of one family into the cluster-wide
// and the node-local sets.
func Categorize(es []Endpoint) EndpointSets {
	var loc []Endpoint
	for _, e := range es {
		if e.Local {
			loc = append(loc, e)
		}
	}
	return EndpointSets{Cluster: usable(es), Local: usable(loc)}
}

// RenderService computes one Service's fragment of family f's table.
func RenderService(in Input, f nft.Family, s Service) *nft.Ruleset {
	rs := nft.NewRuleset()
	cips := addrsOf(s.ClusterIPs, f)
	if len(cips) == 0 {
		// The Service has no address of this family (single-stack of the
		// other): nothing to do here.
		return rs
	}
	externals := append(addrsOf(s.ExternalIPs, f), addrsOf(s.LoadBalancerIPs, f)...)
	lbs := addrsOf(s.LoadBalancerIPs, f)
	clusterCIDRs := prefixesOf(in.ClusterCIDRs, f)
	for _, cip := range cips {
		rs.AddSetElement(SetClusterIPs, cip)
	}
	for _, p := range s.Ports {
		if Fast(s) {
			renderFastPort(rs, in, f, p, cips, externals, Categorize(endpointsOf(p.Endpoints, f)).Cluster)
			continue
		}
		renderPort(rs, portInput{
			id: portID(s.ServiceKey, p), svc: s, port: p, cips: cips, externals: externals, lbs: lbs,
			clusterCIDRs: clusterCIDRs, sets: Categorize(endpointsOf(p.Endpoints, f)),
		})
	}
	return rs
}

// renderFastPort renders one port of a fast Service: elements only. Its
// destinations are the ClusterIPs, the external addresses and the NodePort
// on every NodePort address of the family.
func renderFastPort(rs *nft.Ruleset, in Input, f nft.Family, p Port, cips, externals []netip.Addr, eps []Endpoint) {
	type dest struct {
		addr     netip.Addr
		port     uint16
		external bool
	}
	var dests []dest
	for _, a := range cips {
		dests = append(dests, dest{a, p.Port, false})
	}
	for _, a := range externals {
		dests = append(dests, dest{a, p.Port, true})
	}
	if p.NodePort != 0 {
		for _, a := range addrsOf(in.NodePortIPs, f) {
			dests = append(dests, dest{a, p.NodePort, true})
		}
	}
	m := endpointsMap(len(eps))
	for _, d := range dests {
		key := nft.SetElem{Addr: d.addr, Proto: p.Protocol, Port: d.port}
		if len(eps) == 0 {
			rs.AddTypedElements(SetNoEndpointPorts, nft.SetAddrProtoPort, key)
			continue
		}
		for i, e := range eps {
			rs.AddTypedElements(m, nft.SetNATMap, nft.NATElem(nft.NATKey{Addr: d.addr, Proto: p.Protocol, Port: d.port, Slot: uint16(i)}, e.AddrPort()))
		}
		if d.external {
			rs.AddTypedElements(SetExternalIPPorts, nft.SetAddrProtoPort, key)
		} else {
			rs.AddTypedElements(SetClusterIPPorts, nft.SetAddrProtoPort, key)
		}
	}
	for _, e := range eps {
		rs.AddTypedElements(SetHairpin, nft.SetAddrAddr, nft.SetElem{Addr: e.Addr, Addr2: e.Addr})
	}
}

type portInput struct {
	id                   string
	svc                  Service
	port                 Port
	cips, externals, lbs []netip.Addr
	clusterCIDRs         []netip.Prefix
	sets                 EndpointSets
}

func renderPort(rs *nft.Ruleset, in portInput) {
	s, p, sets := in.svc, in.port, in.sets
	svcChain := prefixService + hashed(in.id)
	localChain := prefixLocal + hashed(in.id)
	extChain := prefixExternal + hashed(in.id)
	fwChain := prefixFirewall + hashed(in.id)

	// Endpoint chains: DNAT to one endpoint, masquerading hairpin traffic
	// (a pod reaching itself through its Service) and remembering the
	// client for session affinity.
	epChain := map[netip.AddrPort]string{}
	for _, e := range append(append([]Endpoint{}, sets.Cluster...), sets.Local...) {
		if _, ok := epChain[e.AddrPort()]; ok {
			continue
		}
		name := prefixEndpoint + hashed(in.id+"__"+e.AddrPort().String())
		epChain[e.AddrPort()] = name
		c := nft.Chain{{Saddr: nft.Host(e.Addr), Verdict: nft.Jump(ChainMarkForMasquerade)}}
		if s.AffinityTimeout > 0 {
			aff := affinityName(in.id, e, s.AffinityTimeout)
			rs.Affinity[aff] = nft.AffinitySet{Timeout: s.AffinityTimeout}
			c = append(c, nft.Rule{Update: aff})
		}
		rs.Chains[name] = append(c, nft.Rule{Proto: p.Protocol, DNAT: e.AddrPort()})
	}
	pick := func(es []Endpoint) nft.Chain {
		var c nft.Chain
		if s.AffinityTimeout > 0 {
			for _, e := range es {
				c = append(c, nft.Rule{SaddrSet: affinityName(in.id, e, s.AffinityTimeout), Verdict: nft.Goto(epChain[e.AddrPort()])})
			}
		}
		for i, e := range es {
			r := nft.Rule{Verdict: nft.Goto(epChain[e.AddrPort()])}
			if left := len(es) - i; left > 1 {
				r.NumgenMod = int32(left)
			}
			c = append(c, r)
		}
		return c
	}

	hasCluster, hasLocal := len(sets.Cluster) > 0, len(sets.Local) > 0
	if hasCluster {
		var c nft.Chain
		if !s.InternalLocal {
			// Clients outside the pod ranges (the node itself, hosts
			// routed to the service range) are masqueraded, so replies
			// come back through this node.
			for _, cip := range in.cips {
				if len(in.clusterCIDRs) > 0 {
					c = append(c, nft.Rule{Daddr: nft.Host(cip), Proto: p.Protocol, DPort: p.Port, SaddrNotIn: in.clusterCIDRs, Verdict: nft.Jump(ChainMarkForMasquerade)})
				}
			}
		}
		rs.Chains[svcChain] = append(c, pick(sets.Cluster)...)
	}
	if hasLocal && (s.InternalLocal || s.ExternalLocal) {
		rs.Chains[localChain] = pick(sets.Local)
	}

	// What to do with traffic that finds no endpoint: refuse it, but drop
	// when a traffic policy hides endpoints that exist elsewhere (a load
	// balancer's health check then moves traffic away).
	miss := func(policyLocal bool) nft.Verdict {
		if policyLocal && hasCluster {
			return nft.Verdict{Kind: nft.VerdictDrop}
		}
		return nft.Goto(ChainReject)
	}

	// Internal traffic: the ClusterIPs.
	internal, internalOK := svcChain, hasCluster
	if s.InternalLocal {
		internal, internalOK = localChain, hasLocal
	}
	for _, cip := range in.cips {
		if internalOK {
			rs.AddElement(MapServiceIPs, nft.MapKey{Addr: cip, Proto: p.Protocol, Port: p.Port}, nft.Goto(internal))
		} else {
			rs.AddElement(MapNoEndpointServices, nft.MapKey{Addr: cip, Proto: p.Protocol, Port: p.Port}, miss(s.InternalLocal))
		}
	}

	// External traffic: NodePorts, externalIPs, load-balancer IPs.
	if len(in.externals) == 0 && p.NodePort == 0 {
		return
	}
	externalOK := hasCluster
	if s.ExternalLocal {
		externalOK = hasLocal
	}
	if hasCluster {
		var c nft.Chain
		if !s.ExternalLocal {
			c = nft.Chain{{Verdict: nft.Jump(ChainMarkForMasquerade)}, {Verdict: nft.Goto(svcChain)}}
		} else {
			// Pods and the node itself are short-circuited to all
			// endpoints (the node masqueraded, so replies come back
			// here); outside clients reach only local endpoints and
			// keep their source address.
			for _, cidr := range in.clusterCIDRs {
				c = append(c, nft.Rule{Saddr: cidr, Verdict: nft.Goto(svcChain)})
			}
			c = append(c, nft.Rule{FibSaddrLocal: true, Verdict: nft.Jump(ChainMarkForMasquerade)}, nft.Rule{FibSaddrLocal: true, Verdict: nft.Goto(svcChain)})
			if hasLocal {
				c = append(c, nft.Rule{Verdict: nft.Goto(localChain)})
			}
		}
		rs.Chains[extChain] = c
		for _, a := range in.externals {
			rs.AddElement(MapServiceIPs, nft.MapKey{Addr: a, Proto: p.Protocol, Port: p.Port}, nft.Goto(extChain))
		}
		if p.NodePort != 0 {
			rs.AddElement(MapServiceNodePorts, nft.MapKey{Proto: p.Protocol, Port: p.NodePort}, nft.Goto(extChain))
		}
	}
	if !externalOK {
		for _, a := range in.externals {
			rs.AddElement(MapNoEndpointServices, nft.MapKey{Addr: a, Proto: p.Protocol, Port: p.Port}, miss(s.ExternalLocal))
		}
		if p.NodePort != 0 {
			rs.AddElement(MapNoEndpointNodePorts, nft.MapKey{Proto: p.Protocol, Port: p.NodePort}, miss(s.ExternalLocal))
		}
	}
	if len(s.SourceRanges) > 0 && len(in.lbs) > 0 {
		var fw nft.Chain
		for _, r := range prefixesOf(s.SourceRanges, nft.FamilyOf(in.lbs[0])) {
			fw = append(fw, nft.Rule{Saddr: r, Verdict: nft.Verdict{Kind: nft.VerdictReturn}})
		}
		rs.Chains[fwChain] = append(fw, nft.Rule{Verdict: nft.Verdict{Kind: nft.VerdictDrop}})
		for _, a := range in.lbs {
			rs.AddElement(MapFirewallIPs, nft.MapKey{Addr: a, Proto: p.Protocol, Port: p.Port}, nft.Goto(fwChain))
		}
	}
}

// affinityName names an endpoint's affinity set. The timeout is part of
// the hash: a new timeout is a new set, swapped in with the chains that use
// it, so a set is never deleted while a rule still refers to it.
func affinityName(id string, e Endpoint, timeout time.Duration) string {
	name := id + "__" + e.AddrPort().String()
	sum := sha256.Sum256([]byte(name + "__" + timeout.String()))
	return prefixAffinity + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:8] + "-" + name
}
