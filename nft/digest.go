package nft

import (
	"net/netip"
	"slices"
	"sort"
	"time"
)

// Digest is a part's content reduced to what is compared: rule
// fingerprints per chain, map and set elements, affinity sets, typed sets
// (interval sets as disjoint ranges). It is what the kernel is read back
// into, and what a desired ruleset is compared as.
type Digest struct {
	Chains    map[string][]string
	Maps      map[string]map[MapKey]Verdict
	Sets      map[string]map[netip.Addr]bool
	Affinity  map[string]time.Duration
	TypedSets map[string]TypedSet
	// rehook are base chains the kernel has with another type, hook,
	// priority or policy than the part declares: they are recreated.
	rehook map[string]bool
	// reflush are typed sets whose kernel elements are not what is
	// written here (an interval set's ends not in pairs): they are emptied
	// and refilled.
	reflush map[string]bool
	// static are the part's static typed sets (read back): one the
	// ruleset does not declare is only emptied.
	static map[string]bool
}

// NewDigest is an empty digest (a part with nothing in the kernel).
func NewDigest() *Digest {
	return &Digest{Chains: map[string][]string{}, Maps: map[string]map[MapKey]Verdict{}, Sets: map[string]map[netip.Addr]bool{},
		Affinity: map[string]time.Duration{}, TypedSets: map[string]TypedSet{}, rehook: map[string]bool{}, reflush: map[string]bool{}, static: map[string]bool{}}
}

// DigestOf is the digest of a desired ruleset. It shares the elements of
// typed sets that need no normalizing with rs: change neither afterwards.
func DigestOf(rs *Ruleset) *Digest {
	d := NewDigest()
	for n, c := range rs.Chains {
		fps := make([]string, len(c))
		for i, r := range c {
			fps[i] = Fingerprint(r.String())
		}
		d.Chains[n] = fps
	}
	for m, els := range rs.Maps {
		d.Maps[m] = map[MapKey]Verdict{}
		for k, v := range els {
			d.Maps[m][k] = v
		}
	}
	for s, els := range rs.Sets {
		d.Sets[s] = map[netip.Addr]bool{}
		for a := range els {
			d.Sets[s][a] = true
		}
	}
	for n, a := range rs.Affinity {
		d.Affinity[n] = a.Timeout
	}
	for n, ts := range rs.TypedSets {
		if ts.Kind != SetInterval && !anyMapped(ts.Elems) {
			// Nothing to normalize: shared, not copied (a full sync's
			// DNAT maps hold hundreds of thousands of elements). A
			// digest is only read.
			d.TypedSets[n] = ts
			continue
		}
		els := make([]SetElem, 0, len(ts.Elems))
		for e := range ts.Elems {
			els = append(els, e.unmapped())
		}
		if ts.Kind == SetInterval {
			els = normalizeRanges(els)
		}
		d.TypedSets[n] = TypedSet{Kind: ts.Kind, Elems: map[SetElem]bool{}}
		for _, e := range els {
			d.TypedSets[n].Elems[e] = true
		}
	}
	return d
}

// anyMapped reports an element with an IPv4-mapped IPv6 address.
func anyMapped(es map[SetElem]bool) bool {
	for e := range es {
		if e.Addr.Is4In6() || e.End.Is4In6() || e.Addr2.Is4In6() {
			return true
		}
	}
	return false
}

// Changes is what turns one digest into a desired ruleset.
type Changes struct {
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
	// rehook are base chains deleted and created again (with the
	// declared hook) in the same write.
	rehook []string
	// Typed sets: addTyped are created, delTyped deleted (a static one
	// only loses delTypedElems); one in both is recreated with another
	// kind. flushTyped are emptied before their elements are added.
	addTyped, delTyped, flushTyped []string
	addTypedElems, delTypedElems   map[string][]SetElem
	// typedKinds are the kinds of the typed sets above.
	typedKinds map[string]SetKind
}

// Size is the number of objects written, rules counted.
func (c *Changes) Size(want *Ruleset) int {
	n := len(c.addAffinity) + len(c.delChains) + len(c.delAffinity) + len(c.rehook) +
		len(c.addTyped) + len(c.delTyped) + len(c.flushTyped)
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
	for _, m := range []map[string][]SetElem{c.addTypedElems, c.delTypedElems} {
		for _, es := range m {
			n += len(es)
		}
	}
	return n
}

// Empty reports that nothing differs.
func (c *Changes) Empty() bool {
	return len(c.addAffinity)+len(c.writeChains)+len(c.addElems)+len(c.replaceElems)+len(c.delElems)+
		len(c.addSet)+len(c.delSet)+len(c.delChains)+len(c.delAffinity)+len(c.rehook)+
		len(c.addTyped)+len(c.delTyped)+len(c.flushTyped)+len(c.addTypedElems)+len(c.delTypedElems) == 0
}

// recreated reports whether typed set s is deleted and created again.
func (c *Changes) recreated(s string) bool {
	return slices.Contains(c.delTyped, s) && slices.Contains(c.addTyped, s)
}

// Diff computes the changes from cur to want. Everything in cur that want
// lacks is deleted (a static typed set only emptied), so cur must be
// limited to what want speaks for (one Service's old fragment, or a part's
// share of the kernel's table).
func Diff(cur *Digest, want *Ruleset) *Changes {
	c := &Changes{newChains: map[string]bool{}, addElems: map[string][]MapKey{}, replaceElems: map[string][]MapKey{},
		delElems: map[string][]MapKey{}, addSet: map[string][]netip.Addr{}, delSet: map[string][]netip.Addr{},
		addTypedElems: map[string][]SetElem{}, delTypedElems: map[string][]SetElem{}, typedKinds: map[string]SetKind{}}
	wd := DigestOf(want)
	// Sets recreated (a new timeout, another kind): the chains using them
	// are flushed first and rewritten in the same pass.
	recreated := map[string]bool{}
	for _, n := range sortedKeys(wd.Affinity) {
		if t, ok := cur.Affinity[n]; !ok || t != wd.Affinity[n] {
			if ok {
				c.delAffinity = append(c.delAffinity, n)
				recreated[n] = true
			}
			c.addAffinity = append(c.addAffinity, n)
		}
	}
	for n, ts := range wd.TypedSets {
		if old, ok := cur.TypedSets[n]; ok && old.Kind != ts.Kind {
			recreated[n] = true
		}
	}
	for _, n := range sortedKeys(wd.Chains) {
		old, ok := cur.Chains[n]
		if cur.rehook[n] {
			c.rehook = append(c.rehook, n)
			c.newChains[n] = true
			c.writeChains = append(c.writeChains, n)
		} else if !ok {
			c.newChains[n] = true
			c.writeChains = append(c.writeChains, n)
		} else if !equalStrings(old, wd.Chains[n]) || usesAny(want.Chains[n], recreated) {
			c.writeChains = append(c.writeChains, n)
		}
	}
	for _, n := range sortedKeys(cur.Chains) {
		if _, ok := wd.Chains[n]; !ok {
			c.delChains = append(c.delChains, n)
		}
	}
	for _, n := range sortedKeys(cur.Affinity) {
		if _, ok := wd.Affinity[n]; !ok {
			c.delAffinity = append(c.delAffinity, n)
		}
	}
	for _, m := range unionKeys(cur.Maps, wd.Maps) {
		for k, v := range wd.Maps[m] {
			old, ok := cur.Maps[m][k]
			switch {
			case !ok:
				c.addElems[m] = append(c.addElems[m], k)
			case old != v:
				c.replaceElems[m] = append(c.replaceElems[m], k)
			}
		}
		for k := range cur.Maps[m] {
			if _, ok := wd.Maps[m][k]; !ok {
				c.delElems[m] = append(c.delElems[m], k)
			}
		}
		sortKeys(c.addElems[m])
		sortKeys(c.replaceElems[m])
		sortKeys(c.delElems[m])
	}
	for _, s := range unionKeys(cur.Sets, wd.Sets) {
		for a := range wd.Sets[s] {
			if !cur.Sets[s][a] {
				c.addSet[s] = append(c.addSet[s], a)
			}
		}
		for a := range cur.Sets[s] {
			if !wd.Sets[s][a] {
				c.delSet[s] = append(c.delSet[s], a)
			}
		}
	}
	c.diffTypedSets(cur, wd)
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

// diffTypedSets adds the changes of the typed sets: sets created, deleted,
// recreated with another kind or refilled, and elements.
func (c *Changes) diffTypedSets(cur, wd *Digest) {
	for _, s := range unionKeys(cur.TypedSets, wd.TypedSets) {
		old, inCur := cur.TypedSets[s]
		nw, inWant := wd.TypedSets[s]
		if !inWant && cur.static[s] {
			nw, inWant = TypedSet{Kind: old.Kind}, true
		}
		c.typedKinds[s] = nw.Kind
		switch {
		case !inWant:
			c.typedKinds[s] = old.Kind
			c.delTyped = append(c.delTyped, s)
		case !inCur:
			c.addTyped = append(c.addTyped, s)
		case old.Kind != nw.Kind:
			c.delTyped = append(c.delTyped, s)
			c.addTyped = append(c.addTyped, s)
			old = TypedSet{}
		case cur.reflush[s]:
			c.flushTyped = append(c.flushTyped, s)
			old = TypedSet{}
		}
		var add, del []SetElem
		for e := range nw.Elems {
			if !old.Elems[e] {
				add = append(add, e)
			}
		}
		for e := range old.Elems {
			if !nw.Elems[e] {
				del = append(del, e)
			}
		}
		if len(add) > 0 {
			sortElems(add)
			c.addTypedElems[s] = add
		}
		if len(del) > 0 {
			sortElems(del)
			c.delTypedElems[s] = del
		}
	}
}

// usesAny reports whether a rule of c uses any of sets.
func usesAny(c Chain, sets map[string]bool) bool {
	for s := range sets {
		for _, r := range c {
			if r.usesSet(s) {
				return true
			}
		}
	}
	return false
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
