package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// Fake is table wgmesh in memory, for unit tests: every writer's part
// (For) reads and writes it as it would the kernel, references are checked
// as the kernel checks them (a rule may not jump to a missing chain or
// look up a missing map or set, or a set of another kind; an element of an
// interval set may not overlap another), and the whole table can be traced
// (Tracer) or failed on purpose (FailWrites).
type Fake struct {
	mu     sync.Mutex
	tables map[Family]*Ruleset
	gen    uint32
	parts  []*Part
	counts map[ruleRef][2]uint64
	// FailWrites, when set, is returned by every Apply and EnsureSkeleton.
	FailWrites error
	// Writes counts the Apply calls that changed something.
	Writes int
}

// ruleRef is rule i of a chain of family f.
type ruleRef struct {
	f     Family
	chain string
	i     int
}

// NewFake returns an empty table.
func NewFake() *Fake {
	return &Fake{tables: map[Family]*Ruleset{IPv4: NewRuleset(), IPv6: NewRuleset()}, counts: map[ruleRef][2]uint64{}}
}

// Count adds packets and bytes to the counter of rule i of chain in
// family f, as traffic would; rewriting the chain resets it.
func (k *Fake) Count(f Family, chain string, i int, packets, bytes uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.counts[ruleRef{f, chain, i}]
	k.counts[ruleRef{f, chain, i}] = [2]uint64{c[0] + packets, c[1] + bytes}
}

// For returns the Programmer of one part of the fake table.
func (k *Fake) For(p *Part) Programmer {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.parts = append(k.parts, p)
	return &fakePart{k: k, p: p}
}

// Ruleset returns a copy of family f's whole table.
func (k *Fake) Ruleset(f Family) *Ruleset {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := NewRuleset()
	out.Merge(k.tables[f])
	return out
}

// Tracer traces packets through family f's whole table as it is now.
func (k *Fake) Tracer(f Family, local map[netip.Addr]bool, oif func(netip.Addr) string) *Tracer {
	k.mu.Lock()
	parts := append([]*Part{}, k.parts...)
	k.mu.Unlock()
	return NewTracer(k.Ruleset(f), local, oif, parts...)
}

// Touch moves the generation as a foreign write would (drift).
func (k *Fake) Touch() {
	k.mu.Lock()
	k.gen++
	k.mu.Unlock()
}

// Tamper changes the table behind the writers' backs (drift), for tests of
// drift repair.
func (k *Fake) Tamper(f Family, fn func(rs *Ruleset)) {
	k.mu.Lock()
	fn(k.tables[f])
	k.gen++
	k.mu.Unlock()
}

type fakePart struct {
	k *Fake
	p *Part
}

func (fp *fakePart) Read(f Family) (*Digest, error) {
	fp.k.mu.Lock()
	defer fp.k.mu.Unlock()
	t := fp.k.tables[f]
	owned := NewRuleset()
	for n, c := range t.Chains {
		if fp.p.OwnsChain(n) {
			owned.Chains[n] = c
		}
	}
	for n, els := range t.Maps {
		if fp.p.ownsMap(n) {
			owned.Maps[n] = els
		}
	}
	for n, els := range t.Sets {
		if fp.p.ownsSet(n) {
			owned.Sets[n] = els
		}
	}
	for n, a := range t.Affinity {
		if fp.p.ownsAffinity(n) {
			owned.Affinity[n] = a
		}
	}
	for n, ts := range t.TypedSets {
		if fp.p.ownsTypedSet(n) {
			owned.TypedSets[n] = ts
		}
	}
	d := DigestOf(owned)
	for n := range owned.TypedSets {
		if fp.p.staticSet(n) {
			d.static[n] = true
		}
	}
	return d, nil
}

func (fp *fakePart) Apply(f Family, ch *Changes, want *Ruleset) (int, error) {
	fp.k.mu.Lock()
	defer fp.k.mu.Unlock()
	if fp.k.FailWrites != nil {
		return 0, fp.k.FailWrites
	}
	if ch.Empty() {
		return 0, nil
	}
	if err := checkChanges(fp.p, f, ch, want); err != nil {
		return 0, fmt.Errorf("table %s %s: %w", f, Table, err)
	}
	// Work on a copy: a refused transaction leaves the table as it was.
	t := NewRuleset()
	t.Merge(fp.k.tables[f])
	if err := applyTypedSets(fp.p, t, ch); err != nil {
		return 0, fmt.Errorf("table %s %s: %w", f, Table, err)
	}
	for _, n := range ch.delAffinity {
		delete(t.Affinity, n)
	}
	for _, n := range ch.addAffinity {
		t.Affinity[n] = want.Affinity[n]
	}
	for _, n := range ch.writeChains {
		t.Chains[n] = append(Chain{}, want.Chains[n]...)
	}
	for m, ks := range ch.addElems {
		for _, key := range ks {
			t.AddElement(m, key, want.Maps[m][key])
		}
	}
	for m, ks := range ch.replaceElems {
		for _, key := range ks {
			t.AddElement(m, key, want.Maps[m][key])
		}
	}
	for m, ks := range ch.delElems {
		for _, key := range ks {
			delete(t.Maps[m], key)
		}
	}
	for s, as := range ch.addSet {
		for _, a := range as {
			t.AddSetElement(s, a)
		}
	}
	for s, as := range ch.delSet {
		for _, a := range as {
			delete(t.Sets[s], a)
		}
	}
	for _, n := range ch.delChains {
		delete(t.Chains, n)
	}
	if err := checkReferences(t, fp.k.mapKinds()); err != nil {
		return 0, fmt.Errorf("table %s %s: %w", f, Table, err)
	}
	fp.k.tables[f] = t
	fp.k.gen++
	fp.k.Writes++
	for ref := range fp.k.counts {
		if ref.f == f && (slices.Contains(ch.writeChains, ref.chain) || slices.Contains(ch.delChains, ref.chain)) {
			delete(fp.k.counts, ref)
		}
	}
	return 1, nil
}

// applyTypedSets applies the typed set changes to t as the kernel does: a
// dynamic set dropped from the ruleset is deleted, a static one emptied
// of the elements the ruleset had; an element deleted must exist, an
// interval may not overlap another (an identical one is no change).
func applyTypedSets(p *Part, t *Ruleset, ch *Changes) error {
	for _, n := range ch.delTyped {
		if ch.recreated(n) || !p.staticSet(n) {
			delete(t.TypedSets, n)
		}
	}
	for _, n := range ch.addTyped {
		if ts, ok := t.TypedSets[n]; ok && ts.Kind != ch.typedKinds[n] {
			return fmt.Errorf("set %s exists as a set of %s, not %s", n, ts.Kind, ch.typedKinds[n])
		}
		t.DeclareSet(n, ch.typedKinds[n])
	}
	for _, n := range ch.flushTyped {
		if ts, ok := t.TypedSets[n]; ok {
			clear(ts.Elems)
		}
	}
	for _, n := range sortedKeys(ch.delTypedElems) {
		ts, ok := t.TypedSets[n]
		if !ok && slices.Contains(ch.delTyped, n) {
			continue // deleted with its elements
		}
		for _, e := range ch.delTypedElems[n] {
			if !ts.Elems[e] {
				return fmt.Errorf("set %s: deleting %s: no such element", n, e)
			}
			delete(ts.Elems, e)
		}
	}
	for _, n := range sortedKeys(ch.addTypedElems) {
		ts, ok := t.TypedSets[n]
		if !ok || ts.Kind != ch.typedKinds[n] {
			return fmt.Errorf("set %s: adding elements: no set of %s", n, ch.typedKinds[n])
		}
		var keys map[NATKey]SetElem
		if ts.Kind == SetNATMap {
			keys = map[NATKey]SetElem{}
			for o := range ts.Elems {
				keys[o.NATKey()] = o
			}
		}
		for _, e := range ch.addTypedElems[n] {
			if o, ok := keys[e.NATKey()]; ok && o != e {
				return fmt.Errorf("map %s: adding %s: the key maps to %s", n, e, o.NATTo())
			}
			if keys != nil {
				keys[e.NATKey()] = e
			}
			if ts.Kind == SetInterval && !ts.Elems[e] {
				for o := range ts.Elems {
					if o.Addr.BitLen() == e.Addr.BitLen() && o.Addr.Compare(e.End) <= 0 && e.Addr.Compare(o.End) <= 0 {
						return fmt.Errorf("set %s: range %s overlaps %s", n, e, o)
					}
				}
			}
			ts.Elems[e] = true
		}
	}
	return nil
}

// mapKinds are the key kinds of every part's maps.
func (k *Fake) mapKinds() map[string]KeyKind {
	out := map[string]KeyKind{}
	for _, p := range k.parts {
		for m, kind := range p.Maps {
			out[m] = kind
		}
	}
	return out
}

// setKinds are the kinds of t's sets a lookup may name: address sets and
// affinity sets hold addresses (affinity sets alone take updates).
func setKinds(t *Ruleset) (kinds map[string]SetKind, affinity map[string]bool) {
	kinds, affinity = map[string]SetKind{}, map[string]bool{}
	for n := range t.Sets {
		kinds[n] = SetAddr
	}
	for n := range t.Affinity {
		kinds[n], affinity[n] = SetAddr, true
	}
	for n, ts := range t.TypedSets {
		kinds[n] = ts.Kind
	}
	return kinds, affinity
}

// checkReferences refuses what the kernel refuses: a jump or goto to a
// missing chain, a lookup in a missing map or set or in one of another key
// (maps names the maps' key kinds).
func checkReferences(t *Ruleset, maps map[string]KeyKind) error {
	kinds, affinity := setKinds(t)
	for n, c := range t.Chains {
		for _, r := range c {
			if target := r.Verdict.Chain; target != "" {
				if _, ok := t.Chains[target]; !ok {
					return fmt.Errorf("chain %s: rule %q: no chain %s", n, r, target)
				}
			}
			if r.VMap != "" && r.DNATMap() == "" {
				if _, ok := t.Maps[r.VMap]; !ok {
					return fmt.Errorf("chain %s: rule %q: no map %s", n, r, r.VMap)
				}
				if k, ok := maps[r.VMap]; ok && k != r.VMapKey {
					return fmt.Errorf("chain %s: rule %q: map %s is keyed by %s, not %s", n, r, r.VMap, k, r.VMapKey)
				}
			}
			refs := []struct {
				set   string
				kinds []SetKind
			}{
				{r.SaddrSet, []SetKind{SetAddr, SetInterval}}, {r.NotSaddrSet, []SetKind{SetAddr, SetInterval}},
				{r.DaddrSet, []SetKind{SetAddr, SetInterval}}, {r.NotDaddrSet, []SetKind{SetAddr, SetInterval}},
				{r.SaddrDaddrSet, []SetKind{SetAddrAddr}}, {r.DaddrProtoPortSet, []SetKind{SetAddrProtoPort}},
				{r.DNATMap(), []SetKind{SetNATMap}},
			}
			for _, ref := range refs {
				if ref.set == "" {
					continue
				}
				k, ok := kinds[ref.set]
				if !ok {
					return fmt.Errorf("chain %s: rule %q: no set %s", n, r, ref.set)
				}
				if !slices.Contains(ref.kinds, k) {
					return fmt.Errorf("chain %s: rule %q: set %s holds %s", n, r, ref.set, k)
				}
			}
			if r.Update != "" && !affinity[r.Update] {
				return fmt.Errorf("chain %s: rule %q: no affinity set %s", n, r, r.Update)
			}
		}
	}
	for m, els := range t.Maps {
		for key, v := range els {
			if v.Chain != "" {
				if _, ok := t.Chains[v.Chain]; !ok {
					return fmt.Errorf("map %s: element %s: no chain %s", m, key, v.Chain)
				}
			}
		}
	}
	return nil
}

func (fp *fakePart) EnsureSkeleton(f Family) error {
	fp.k.mu.Lock()
	defer fp.k.mu.Unlock()
	if fp.k.FailWrites != nil {
		return fp.k.FailWrites
	}
	t := fp.k.tables[f]
	for m := range fp.p.Maps {
		if t.Maps[m] == nil {
			t.Maps[m] = map[MapKey]Verdict{}
		}
	}
	for _, s := range fp.p.Sets {
		if t.Sets[s] == nil {
			t.Sets[s] = map[netip.Addr]bool{}
		}
	}
	for s, kind := range fp.p.TypedSets {
		if _, ok := t.TypedSets[s]; !ok {
			t.DeclareSet(s, kind)
		}
	}
	return nil
}

func (fp *fakePart) Generation() (uint32, error) {
	fp.k.mu.Lock()
	defer fp.k.mu.Unlock()
	return fp.k.gen, nil
}

// Counters are the counts Fake.Count added since the chain was written.
func (fp *fakePart) Counters(f Family, chain string) ([]RuleCounter, error) {
	if !fp.p.OwnsChain(chain) {
		return nil, fmt.Errorf("chain %s is not part %s's", chain, fp.p.Name)
	}
	fp.k.mu.Lock()
	defer fp.k.mu.Unlock()
	var out []RuleCounter
	for i, r := range fp.k.tables[f].Chains[chain] {
		if r.Counter {
			c := fp.k.counts[ruleRef{f, chain, i}]
			out = append(out, RuleCounter{Index: i, Fingerprint: Fingerprint(r.String()), Packets: c[0], Bytes: c[1]})
		}
	}
	return out, nil
}

func (fp *fakePart) HasStale() bool    { return false }
func (fp *fakePart) FlushStale() error { return nil }

func (fp *fakePart) Delete(f Family) error {
	cur, err := fp.Read(f)
	if err != nil {
		return err
	}
	empty := NewRuleset()
	if _, err := fp.Apply(f, Diff(cur, empty), empty); err != nil {
		return err
	}
	fp.k.mu.Lock()
	defer fp.k.mu.Unlock()
	t := fp.k.tables[f]
	for m := range fp.p.Maps {
		delete(t.Maps, m)
	}
	for _, s := range fp.p.Sets {
		delete(t.Sets, s)
	}
	for s := range fp.p.TypedSets {
		delete(t.TypedSets, s)
	}
	return nil
}
