package servicenat

import (
	"net/netip"
	"sort"
	"strings"
	"time"
)

// digest is a table's content reduced to what is compared: rule
// fingerprints per chain, map and set elements, affinity sets. It is what
// the kernel is read back into, and what a desired ruleset is compared as.
type digest struct {
	chains   map[string][]string
	maps     map[string]map[MapKey]Verdict
	sets     map[string]map[netip.Addr]bool
	affinity map[string]time.Duration
}

func newDigest() *digest {
	return &digest{chains: map[string][]string{}, maps: map[string]map[MapKey]Verdict{}, sets: map[string]map[netip.Addr]bool{}, affinity: map[string]time.Duration{}}
}

func digestOf(rs *Ruleset) *digest {
	d := newDigest()
	for n, c := range rs.Chains {
		fps := make([]string, len(c))
		for i, r := range c {
			fps[i] = fingerprint(r.String())
		}
		d.chains[n] = fps
	}
	for m, els := range rs.Maps {
		d.maps[m] = map[MapKey]Verdict{}
		for k, v := range els {
			d.maps[m][k] = v
		}
	}
	for s, els := range rs.Sets {
		d.sets[s] = map[netip.Addr]bool{}
		for a := range els {
			d.sets[s][a] = true
		}
	}
	for n, a := range rs.Affinity {
		d.affinity[n] = a.Timeout
	}
	return d
}

// owned tells the chains and sets of table wgmesh that service NAT manages
// from those of the other components (egress masquerade, leak guard).
func ownedChain(name string) bool {
	if _, ok := baseChainByName[name]; ok {
		return true
	}
	switch name {
	case ChainServices, ChainMasquerading, ChainMarkForMasquerade, ChainServiceEndpointsCheck,
		ChainNodePortEndpointsCheck, ChainClusterIPsCheck, ChainFirewallCheck, ChainReject:
		return true
	}
	for _, p := range []string{prefixService, prefixExternal, prefixLocal, prefixFirewall, prefixEndpoint} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

var baseChainByName = func() map[string]BaseChain {
	m := map[string]BaseChain{}
	for _, b := range BaseChains() {
		m[b.Name] = b
	}
	return m
}()

var staticMapKey = func() map[string]KeyKind {
	m := map[string]KeyKind{}
	for _, s := range StaticMaps {
		m[s.Name] = s.Key
	}
	return m
}()

func isStaticMap(name string) bool {
	_, ok := staticMapKey[name]
	return ok
}

func isStaticSet(name string) bool { return name == SetClusterIPs || name == SetNodePortIPs }

// changes is what turns one digest into a desired ruleset.
type changes struct {
	addAffinity []string
	// writeChains are written (created, or flushed and refilled);
	// newChains is the subset that does not exist yet.
	writeChains []string
	newChains   map[string]bool
	addElems    map[string][]MapKey
	// replaceElems exist with another verdict: deleted and re-added in
	// one batch.
	replaceElems map[string][]MapKey
	delElems     map[string][]MapKey
	addSet       map[string][]netip.Addr
	delSet       map[string][]netip.Addr
	delChains    []string
	delAffinity  []string
}

// Size is the number of objects written, rules counted.
func (c *changes) Size(want *Ruleset) int {
	n := len(c.addAffinity) + len(c.delChains) + len(c.delAffinity)
	for _, ch := range c.writeChains {
		n += 1 + len(want.Chains[ch])
	}
	for _, m := range []map[string][]MapKey{c.addElems, c.replaceElems, c.delElems} {
		for _, ks := range m {
			n += len(ks)
		}
	}
	for _, m := range []map[string][]netip.Addr{c.addSet, c.delSet} {
		for _, as := range m {
			n += len(as)
		}
	}
	return n
}

// Empty reports that nothing differs.
func (c *changes) Empty() bool {
	return len(c.addAffinity)+len(c.writeChains)+len(c.addElems)+len(c.replaceElems)+len(c.delElems)+
		len(c.addSet)+len(c.delSet)+len(c.delChains)+len(c.delAffinity) == 0
}

// diff computes the changes from cur to want. Everything in cur that want
// lacks is deleted, so cur must be limited to what want speaks for (one
// Service's old fragment, or the owned part of the kernel's table).
func diff(cur *digest, want *Ruleset) *changes {
	c := &changes{newChains: map[string]bool{}, addElems: map[string][]MapKey{}, replaceElems: map[string][]MapKey{},
		delElems: map[string][]MapKey{}, addSet: map[string][]netip.Addr{}, delSet: map[string][]netip.Addr{}}
	wd := digestOf(want)
	for _, n := range sortedKeys(wd.affinity) {
		if t, ok := cur.affinity[n]; !ok || t != wd.affinity[n] {
			if ok {
				// A new timeout: the set is recreated (the chains using
				// it are rewritten in the same pass).
				c.delAffinity = append(c.delAffinity, n)
			}
			c.addAffinity = append(c.addAffinity, n)
		}
	}
	for _, n := range sortedKeys(wd.chains) {
		old, ok := cur.chains[n]
		if !ok {
			c.newChains[n] = true
			c.writeChains = append(c.writeChains, n)
		} else if !equalStrings(old, wd.chains[n]) {
			c.writeChains = append(c.writeChains, n)
		}
	}
	for _, n := range sortedKeys(cur.chains) {
		if _, ok := wd.chains[n]; !ok {
			c.delChains = append(c.delChains, n)
		}
	}
	for _, n := range sortedKeys(cur.affinity) {
		if _, ok := wd.affinity[n]; !ok {
			c.delAffinity = append(c.delAffinity, n)
		}
	}
	for _, m := range unionKeys(cur.maps, wd.maps) {
		for k, v := range wd.maps[m] {
			old, ok := cur.maps[m][k]
			switch {
			case !ok:
				c.addElems[m] = append(c.addElems[m], k)
			case old != v:
				c.replaceElems[m] = append(c.replaceElems[m], k)
			}
		}
		for k := range cur.maps[m] {
			if _, ok := wd.maps[m][k]; !ok {
				c.delElems[m] = append(c.delElems[m], k)
			}
		}
		sortKeys(c.addElems[m])
		sortKeys(c.replaceElems[m])
		sortKeys(c.delElems[m])
	}
	for _, s := range unionKeys(cur.sets, wd.sets) {
		for a := range wd.sets[s] {
			if !cur.sets[s][a] {
				c.addSet[s] = append(c.addSet[s], a)
			}
		}
		for a := range cur.sets[s] {
			if !wd.sets[s][a] {
				c.delSet[s] = append(c.delSet[s], a)
			}
		}
	}
	for _, m := range []map[string][]MapKey{c.addElems, c.replaceElems, c.delElems} {
		for k, v := range m {
			if len(v) == 0 {
				delete(m, k)
			}
		}
	}
	for _, m := range []map[string][]netip.Addr{c.addSet, c.delSet} {
		for k, v := range m {
			if len(v) == 0 {
				delete(m, k)
			}
		}
	}
	return c
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func unionKeys[V any](a, b map[string]V) []string {
	seen := map[string]bool{}
	for k := range a {
		seen[k] = true
	}
	for k := range b {
		seen[k] = true
	}
	return sortedKeys(seen)
}

func sortKeys(ks []MapKey) {
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
}
