package nft

import "strings"

// Part is one writer's share of table wgmesh: the base chains it hooks,
// the verdict maps and sets it declares, and the names of the regular
// chains, typed sets and session-affinity sets it creates. Parts never share a
// name; a writer reads, diffs and writes only its own part, so the leak
// guard, egress masquerade and the service NAT cannot overwrite each other.
type Part struct {
	Name       string
	BaseChains []BaseChain
	// Maps are the verdict maps and their key kinds.
	Maps map[string]KeyKind
	// Sets are the address sets (elements in Ruleset.Sets).
	Sets []string
	// TypedSets are typed sets that always exist (elements in
	// Ruleset.TypedSets): a write that drops one from the ruleset only
	// empties it; Delete removes it.
	TypedSets map[string]SetKind
	// SetPrefixes name the dynamic typed sets: each exists while the
	// ruleset declares it, created before the rules that use it and
	// deleted with the write after the one that left it unused.
	SetPrefixes []string
	// Chains and ChainPrefixes name the regular chains.
	Chains        []string
	ChainPrefixes []string
	// AffinityPrefix names the dynamic session-affinity sets.
	AffinityPrefix string
}

// Base is the base chain named name, if the part declares one.
func (p *Part) Base(name string) (BaseChain, bool) {
	for _, b := range p.BaseChains {
		if b.Name == name {
			return b, true
		}
	}
	return BaseChain{}, false
}

// OwnsChain reports whether the chain named name is the part's.
func (p *Part) OwnsChain(name string) bool {
	if _, ok := p.Base(name); ok {
		return true
	}
	for _, c := range p.Chains {
		if c == name {
			return true
		}
	}
	for _, pre := range p.ChainPrefixes {
		if strings.HasPrefix(name, pre) {
			return true
		}
	}
	return false
}

// ownsMap, ownsSet and ownsAffinity tell the part's maps and sets.
func (p *Part) ownsMap(name string) bool {
	_, ok := p.Maps[name]
	return ok
}

func (p *Part) ownsSet(name string) bool {
	for _, s := range p.Sets {
		if s == name {
			return true
		}
	}
	return false
}

func (p *Part) ownsAffinity(name string) bool {
	return p.AffinityPrefix != "" && strings.HasPrefix(name, p.AffinityPrefix)
}

// ownsTypedSet tells the part's typed sets, static or dynamic.
func (p *Part) ownsTypedSet(name string) bool {
	if p.staticSet(name) {
		return true
	}
	for _, pre := range p.SetPrefixes {
		if strings.HasPrefix(name, pre) {
			return true
		}
	}
	return false
}

// staticSet tells the typed sets that are never deleted but by Delete.
func (p *Part) staticSet(name string) bool {
	_, ok := p.TypedSets[name]
	return ok
}

// Skeleton is the part's base chains with their rules: the starting point
// of a desired ruleset.
func (p *Part) Skeleton() *Ruleset {
	rs := NewRuleset()
	for _, b := range p.BaseChains {
		rs.Chains[b.Name] = b.Rules
	}
	for n, k := range p.TypedSets {
		rs.DeclareSet(n, k)
	}
	return rs
}
