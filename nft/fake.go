package nft

import (
	"fmt"
	"net/netip"
	"sync"
)

// Fake is table wgmesh in memory, for unit tests: every writer's part
// (For) reads and writes it as it would the kernel, references are checked
// as the kernel checks them (a rule may not jump to a missing chain or
// look up a missing map or set), and the whole table can be traced
// (Tracer) or failed on purpose (FailWrites).
type Fake struct {
	mu     sync.Mutex
	tables map[Family]*Ruleset
	gen    uint32
	parts  []*Part
	// FailWrites, when set, is returned by every Apply and EnsureSkeleton.
	FailWrites error
	// Writes counts the Apply calls that changed something.
	Writes int
}

// NewFake returns an empty table.
func NewFake() *Fake {
	return &Fake{tables: map[Family]*Ruleset{IPv4: NewRuleset(), IPv6: NewRuleset()}}
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
	return DigestOf(owned), nil
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
	// Work on a copy: a refused transaction leaves the table as it was.
	t := NewRuleset()
	t.Merge(fp.k.tables[f])
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
	if err := checkReferences(t); err != nil {
		return 0, fmt.Errorf("table %s %s: %w", f, Table, err)
	}
	fp.k.tables[f] = t
	fp.k.gen++
	fp.k.Writes++
	return 1, nil
}

// checkReferences refuses what the kernel refuses: a jump or goto to a
// missing chain, a lookup in a missing map or set.
func checkReferences(t *Ruleset) error {
	for n, c := range t.Chains {
		for _, r := range c {
			if target := r.Verdict.Chain; target != "" {
				if _, ok := t.Chains[target]; !ok {
					return fmt.Errorf("chain %s: rule %q: no chain %s", n, r, target)
				}
			}
			if r.VMap != "" {
				if _, ok := t.Maps[r.VMap]; !ok {
					return fmt.Errorf("chain %s: rule %q: no map %s", n, r, r.VMap)
				}
			}
			if s := r.DaddrSet; s != "" {
				if _, ok := t.Sets[s]; !ok {
					return fmt.Errorf("chain %s: rule %q: no set %s", n, r, s)
				}
			}
			for _, s := range []string{r.SaddrSet, r.Update} {
				if _, ok := t.Affinity[s]; s != "" && !ok {
					return fmt.Errorf("chain %s: rule %q: no set %s", n, r, s)
				}
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
	return nil
}

func (fp *fakePart) Generation() (uint32, error) {
	fp.k.mu.Lock()
	defer fp.k.mu.Unlock()
	return fp.k.gen, nil
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
	return nil
}
