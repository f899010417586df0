// Package policy enforces Kubernetes NetworkPolicy in the kernel: it renders
// the pure model of package netpol into the network policy's Part of
// nftables table wgmesh (package nft), for the pods of one node (render.go),
// and its Controller keeps the kernel equal to that rendering as Pods,
// Namespaces and NetworkPolicies change (controller.go; handlers.go, the
// informers' side; report.go, metrics and Events).
//
// Where: two base chains on hook forward, after every DNAT (so traffic to a
// Service is judged on the endpoint it reaches) and after the service NAT's
// filter chains (priority filter - 5, whose refusals answer first), before
// the leak guard (priority filter):
//
//	chain policy-egress-forward  { type filter hook forward priority filter - 3; policy accept;
//	    ct state established,related accept
//	    saddr . daddr @policy-self accept             # a pod reaching itself (hairpin)
//	    saddr <pod CIDR> saddr != @policy-programmed counter drop  # not judged yet
//	    saddr vmap @policy-egress-pods }              # local pod -> its combination chain
//	chain policy-ingress-forward { type filter hook forward priority filter - 2; policy accept;
//	    ... daddr <pod CIDR> daddr != @policy-programmed counter drop
//	    daddr vmap @policy-ingress-pods }
//
// Fail closed: an address of this node's pod CIDRs that the agent has not
// judged (policy-programmed holds every local pod address rendered, isolated
// or not) sends and receives nothing through forward, so a new pod is never
// judged without its own policies, and an address a new pod reuses starts
// denied again. The CNI hook (server.go) programs a pod before its ADD
// returns; the Pod watch does it otherwise. The node's own traffic to its
// pods (output, input) and replies are not affected.
//
// Egress is judged on the source pod's node, ingress on the destination
// pod's node: same-node pod traffic passes the ip forward hook through
// br_netfilter, traffic across the mesh passes forward on both nodes. The
// node's own traffic to its pods never passes forward (output hook): it is
// always allowed, as upstream requires. A separate chain per direction,
// because an accept ends only its own base chain.
//
// Pods selected by the same policies in a direction share a combination
// chain (policy-in-<hash>, policy-out-<hash>): ct state invalid drop, a jump
// to each policy's chain (netpol-<hash>-...), which holds only accepts, and
// a counted drop. Peers are named sets shared by every policy using the same
// selector (peers-<hash>-<readable>, pod addresses cluster-wide); ipBlocks
// are interval sets (cidrs-<hash>, cidr minus except); named ports are one
// set per name of address . protocol . port (named-port-<name>). A pod
// coming, going or changing labels changes set and map elements only.
package policy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"

	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/nft"
)

// Names in table wgmesh.
const (
	ChainEgress  = "policy-egress-forward"
	ChainIngress = "policy-ingress-forward"
	MapEgress    = "policy-egress-pods"
	MapIngress   = "policy-ingress-pods"
	SetSelf      = "policy-self"
	// SetProgrammed holds every local pod address the agent has judged.
	SetProgrammed = "policy-programmed"

	prefixCombinationIn  = "policy-in-"
	prefixCombinationOut = "policy-out-"
	prefixPolicy         = "netpol-"
	prefixPeers          = "peers-"
	prefixCIDRs          = "cidrs-"
	prefixNamedPort      = "named-port-"
)

// Base chain priorities: after the service NAT's filter chains (filter -
// 5), before the leak guard (filter).
const (
	PriorityEgress  = nft.PriorityFilter - 3
	PriorityIngress = nft.PriorityFilter - 2
)

// Part is the network policy's share of table wgmesh.
var Part = &nft.Part{
	Name: "network policy",
	BaseChains: []nft.BaseChain{
		{Name: ChainEgress, Hook: nft.HookForward, Priority: PriorityEgress},
		{Name: ChainIngress, Hook: nft.HookForward, Priority: PriorityIngress},
	},
	Maps:          map[string]nft.KeyKind{MapEgress: nft.KeySaddr, MapIngress: nft.KeyDaddr},
	TypedSets:     map[string]nft.SetKind{SetSelf: nft.SetAddrAddr, SetProgrammed: nft.SetAddr},
	ChainPrefixes: []string{prefixCombinationIn, prefixCombinationOut, prefixPolicy},
	SetPrefixes:   []string{prefixPeers, prefixCIDRs, prefixNamedPort},
}

var accept = nft.Verdict{Kind: nft.VerdictAccept}

// baseRules are a base chain's rules: replies and related packets pass,
// so do a pod's packets to itself, IPv6 neighbour discovery between pods on
// the bridge (it passes ip6 forward through br_netfilter), then addresses
// of the node's pod CIDRs not judged yet are dropped, then the local pods'
// combination chains.
func baseRules(f nft.Family, podCIDRs []netip.Prefix, vmap string, key nft.KeyKind) nft.Chain {
	c := nft.Chain{
		{CtState: nft.CtEstablished | nft.CtRelated, Verdict: accept},
		{SaddrDaddrSet: SetSelf, Verdict: accept},
	}
	if f == nft.IPv6 {
		// Router solicitation (133) to redirect (137).
		c = append(c, nft.Rule{Proto: nft.ICMPv6, ICMPv6Type: 133, ICMPv6TypeEnd: 137, Verdict: accept})
	}
	for _, p := range podCIDRs {
		if nft.FamilyOf(p.Addr()) != f {
			continue
		}
		r := nft.Rule{Counter: true, Verdict: nft.Verdict{Kind: nft.VerdictDrop}}
		if key == nft.KeySaddr {
			r.Saddr, r.NotSaddrSet = p.Masked(), SetProgrammed
		} else {
			r.Daddr, r.NotDaddrSet = p.Masked(), SetProgrammed
		}
		c = append(c, r)
	}
	return append(c, nft.Rule{VMap: vmap, VMapKey: key})
}

// Node is what Render needs to know of the node it renders for.
type Node struct {
	Name string
	// PodCIDRs are the node's pod CIDRs (spec.podCIDRs): their addresses
	// not in policy-programmed are dropped. None: nothing fails closed
	// (the node has no pods yet).
	PodCIDRs []netip.Prefix
}

// Render is family f's network policy part for the pods of node: the
// combination chains of its isolated pods, the chains of the policies
// selecting them, the sets those reference, and every local pod address in
// policy-programmed.
func Render(ix *netpol.Index, node Node, f nft.Family) *nft.Ruleset {
	rs := Part.Skeleton()
	rs.Chains[ChainEgress] = baseRules(f, node.PodCIDRs, MapEgress, nft.KeySaddr)
	rs.Chains[ChainIngress] = baseRules(f, node.PodCIDRs, MapIngress, nft.KeyDaddr)
	for m := range Part.Maps {
		rs.Maps[m] = map[nft.MapKey]nft.Verdict{}
	}
	r := &renderer{ix: ix, f: f, rs: rs, policies: map[string]bool{}}
	snap := ix.Snapshot()
	for _, p := range snap.Pods {
		if p.Node != node.Name || !p.Selectable() {
			continue
		}
		for _, a := range p.IPs {
			if nft.FamilyOf(a) != f {
				continue
			}
			rs.AddTypedElements(SetSelf, nft.SetAddrAddr, nft.SetElem{Addr: a, Addr2: a})
			rs.AddTypedElements(SetProgrammed, nft.SetAddr, nft.SetElem{Addr: a})
			for _, d := range []netpol.Direction{netpol.Ingress, netpol.Egress} {
				if chain := r.combination(p, d); chain != "" {
					m := MapIngress
					if d == netpol.Egress {
						m = MapEgress
					}
					rs.AddElement(m, nft.MapKey{Addr: a}, nft.Goto(chain))
				}
			}
		}
	}
	return rs
}

type renderer struct {
	ix       *netpol.Index
	f        nft.Family
	rs       *nft.Ruleset
	policies map[string]bool // policy chains rendered (by chain name)
}

// combination renders the chain of the policies selecting p in direction
// d, and returns its name ("" when none do: p is not isolated in d).
func (r *renderer) combination(p *netpol.Pod, d netpol.Direction) string {
	keys := r.ix.PoliciesFor(p.Key(), d)
	if len(keys) == 0 {
		return ""
	}
	prefix := prefixCombinationIn
	if d == netpol.Egress {
		prefix = prefixCombinationOut
	}
	name := prefix + hashed(strings.Join(keys, ","))
	if _, ok := r.rs.Chains[name]; ok {
		return name
	}
	c := nft.Chain{{CtState: nft.CtInvalid, Counter: true, Verdict: nft.Verdict{Kind: nft.VerdictDrop}}}
	for _, k := range keys {
		pol, ok := r.ix.Policy(k)
		if !ok {
			continue
		}
		if chain := r.policy(pol, d); chain != "" {
			c = append(c, nft.Rule{Verdict: nft.Jump(chain)})
		}
	}
	r.rs.Chains[name] = append(c, nft.Rule{Counter: true, Verdict: nft.Verdict{Kind: nft.VerdictDrop}})
	return name
}

// policy renders the chain of pol's rules of direction d: one accept per
// peer and port of each rule, for what matches in family f. It returns ""
// when nothing can match (no rules, or none in f): the policy only
// isolates.
func (r *renderer) policy(pol *netpol.Policy, d netpol.Direction) string {
	name := prefixPolicy + hashed(pol.Key()+"/"+d.String()) + "-" + d.String() + "-" + pol.Namespace + "/" + pol.Name
	if r.policies[name] {
		if _, ok := r.rs.Chains[name]; ok {
			return name
		}
		return ""
	}
	r.policies[name] = true
	var c nft.Chain
	for i, rule := range pol.Rules(d) {
		peers := rule.Peers
		if len(peers) == 0 {
			peers = []netpol.Peer{{}} // any address
		}
		ports := rule.Ports
		if len(ports) == 0 {
			ports = []netpol.Port{{}} // any protocol and port
		}
		for j, peer := range peers {
			addr, ok := r.peer(pol, d, i, j, peer)
			if !ok {
				continue
			}
			for _, port := range ports {
				m, ok := r.port(port)
				if !ok {
					continue
				}
				c = append(c, merge(addr, m))
			}
		}
	}
	if len(c) == 0 {
		return ""
	}
	r.rs.Chains[name] = c
	return name
}

// peer is the address match of a peer (the source for ingress, the
// destination for egress); false when it matches nothing in family f.
func (r *renderer) peer(pol *netpol.Policy, d netpol.Direction, rule, idx int, p netpol.Peer) (nft.Rule, bool) {
	var set string
	switch {
	case p.Err != nil:
		return nft.Rule{}, false
	case p.Pods != nil:
		set = p.Pods.Key.Name
		r.rs.DeclareSet(set, nft.SetAddr)
		for _, a := range r.ix.Members(p.Pods.Key.ID) {
			if nft.FamilyOf(a) == r.f {
				r.rs.AddTypedElements(set, nft.SetAddr, nft.SetElem{Addr: a.Unmap()})
			}
		}
	case p.Block != nil:
		if nft.FamilyOf(p.Block.CIDR.Addr()) != r.f {
			return nft.Rule{}, false
		}
		set = prefixCIDRs + hashed(fmt.Sprintf("%s/%s/%d/%d", pol.Key(), d, rule, idx))
		r.rs.DeclareSet(set, nft.SetInterval)
		r.rs.AddTypedElements(set, nft.SetInterval, nft.Ranges([]netip.Prefix{p.Block.CIDR}, p.Block.Except)...)
	default:
		return nft.Rule{Verdict: accept}, true // any address
	}
	if d == netpol.Ingress {
		return nft.Rule{SaddrSet: set, Verdict: accept}, true
	}
	return nft.Rule{DaddrSet: set, Verdict: accept}, true
}

// port is the protocol and port match of a port; false when it matches
// nothing.
func (r *renderer) port(p netpol.Port) (nft.Rule, bool) {
	if p.Err != nil {
		return nft.Rule{}, false
	}
	if p.Protocol == 0 {
		return nft.Rule{}, true // no ports: any protocol and port
	}
	proto, ok := protocols[p.Protocol]
	if !ok {
		return nft.Rule{}, false
	}
	switch {
	case p.Name != "":
		set := prefixNamedPort + p.Name
		r.rs.DeclareSet(set, nft.SetAddrProtoPort)
		for _, t := range r.ix.NamedPort(p.Name) {
			if nft.FamilyOf(t.Addr) != r.f {
				continue
			}
			if tp, ok := protocols[t.Protocol]; ok {
				r.rs.AddTypedElements(set, nft.SetAddrProtoPort, nft.SetElem{Addr: t.Addr.Unmap(), Proto: tp, Port: t.Port})
			}
		}
		return nft.Rule{Proto: proto, DaddrProtoPortSet: set}, true
	case p.Port == 0:
		return nft.Rule{Proto: proto}, true
	case p.EndPort != 0:
		return nft.Rule{Proto: proto, DPort: p.Port, DPortEnd: p.EndPort}, true
	}
	return nft.Rule{Proto: proto, DPort: p.Port}, true
}

// protocols are the transport protocols a policy port may name.
var protocols = map[netpol.Protocol]nft.Protocol{netpol.TCP: nft.TCP, netpol.UDP: nft.UDP, netpol.SCTP: nft.SCTP}

// merge is a rule matching both a's address and b's protocol and port.
func merge(a, b nft.Rule) nft.Rule {
	a.Proto, a.DPort, a.DPortEnd, a.DaddrProtoPortSet = b.Proto, b.DPort, b.DPortEnd, b.DaddrProtoPortSet
	a.Verdict = accept
	return a
}

// hashed is a short, stable name part for s.
func hashed(s string) string {
	sum := sha256.Sum256([]byte(s))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:8]
}
