package servicenat

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/wgmesh/wgmesh/nft"
)

// Table is the rendered service NAT of every Service, kept per Service so
// that a change renders and writes only the Services it touches. It also
// settles verdict map keys two Services claim (two Services with the same
// externalIP and port, which the API server allows, or an externalIP equal
// to another Service's ClusterIP): a ClusterIP always belongs to the
// Service the API server allocated it to; among other claimants the
// Service first in namespace/name order owns the key. The others are
// reported, and one gets the key when the owner lets go. A fresh Table over
// the same Services gives the same result whatever the order of updates.
type Table struct {
	in  Input
	raw map[ServiceKey][2]*nft.Ruleset
	eff map[ServiceKey][2]*nft.Ruleset
	// cips are each Service's ClusterIPs: a claim on one of them wins.
	cips map[ServiceKey][]netip.Addr
	// claims: family, map, key -> the Services whose fragments have it.
	claims map[claimKey]map[ServiceKey]bool
	// pending are the Services whose effective fragment changed since the
	// last Commit, with the fragment they had then.
	pending map[ServiceKey][2]*nft.Ruleset
	// What Services share in the fast path, counted over the effective
	// fragments: hairpin elements (an endpoint may serve several
	// Services), and per family the fragments using each DNAT map
	// (endpoints-mod-N); committed are the maps that existed at the last
	// Commit. A partial write keeps what another Service still uses.
	hairpin   map[sharedElem]int
	mods      [2]map[int]int
	committed [2]map[int]bool
}

type sharedElem struct {
	fam int
	e   nft.SetElem
}

type claimKey struct {
	fam int
	m   string
	k   nft.MapKey
}

// NewTable returns an empty table for the node-wide input in (its
// Services are ignored: add them with Update).
func NewTable(in Input) *Table {
	in.Services = nil
	return &Table{in: in, raw: map[ServiceKey][2]*nft.Ruleset{}, eff: map[ServiceKey][2]*nft.Ruleset{}, cips: map[ServiceKey][]netip.Addr{},
		claims: map[claimKey]map[ServiceKey]bool{}, pending: map[ServiceKey][2]*nft.Ruleset{},
		hairpin: map[sharedElem]int{}, mods: [2]map[int]int{{}, {}}, committed: [2]map[int]bool{{}, {}}}
}

// Input is the node-wide input the table renders with.
func (t *Table) Input() Input { return t.in }

// Update renders s and records what changed.
func (t *Table) Update(s Service) {
	t.cips[s.ServiceKey] = s.ClusterIPs
	t.set(s.ServiceKey, [2]*nft.Ruleset{RenderService(t.in, nft.IPv4, s), RenderService(t.in, nft.IPv6, s)})
}

// Delete removes a Service.
func (t *Table) Delete(k ServiceKey) {
	if _, ok := t.raw[k]; ok {
		t.set(k, [2]*nft.Ruleset{})
	}
	delete(t.cips, k)
}

func (t *Table) set(k ServiceKey, raw [2]*nft.Ruleset) {
	affected := map[ServiceKey]bool{k: true}
	for _, ck := range claimsOf(t.raw[k]) {
		delete(t.claims[ck], k)
		for other := range t.claims[ck] {
			affected[other] = true
		}
		if len(t.claims[ck]) == 0 {
			delete(t.claims, ck)
		}
	}
	if raw[0] == nil && raw[1] == nil {
		delete(t.raw, k)
	} else {
		t.raw[k] = raw
		for _, ck := range claimsOf(raw) {
			if t.claims[ck] == nil {
				t.claims[ck] = map[ServiceKey]bool{}
			}
			t.claims[ck][k] = true
			for other := range t.claims[ck] {
				affected[other] = true
			}
		}
	}
	for a := range affected {
		if _, ok := t.pending[a]; !ok {
			t.pending[a] = t.eff[a]
		}
		t.count(t.eff[a], -1)
		if r, ok := t.raw[a]; ok {
			t.eff[a] = t.effective(a, r)
		} else {
			delete(t.eff, a)
		}
		t.count(t.eff[a], 1)
	}
}

// count adds d times what the fragments fr share with other Services.
func (t *Table) count(fr [2]*nft.Ruleset, d int) {
	for i, rs := range fr {
		if rs == nil {
			continue
		}
		for e := range rs.TypedSets[SetHairpin].Elems {
			k := sharedElem{i, e}
			if t.hairpin[k] += d; t.hairpin[k] == 0 {
				delete(t.hairpin, k)
			}
		}
		for name := range rs.TypedSets {
			if n := modOf(name); n > 0 {
				if t.mods[i][n] += d; t.mods[i][n] == 0 {
					delete(t.mods[i], n)
				}
			}
		}
	}
}

// modList are the endpoint counts with a DNAT map in family index i, ascending.
func (t *Table) modList(i int) []int {
	out := make([]int, 0, len(t.mods[i]))
	for n := range t.mods[i] {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

func claimsOf(fr [2]*nft.Ruleset) []claimKey {
	var out []claimKey
	for i, rs := range fr {
		if rs == nil {
			continue
		}
		for m, els := range rs.Maps {
			for k := range els {
				out = append(out, claimKey{i, m, k})
			}
		}
		seen := map[claimKey]bool{}
		for n, ts := range rs.TypedSets {
			for e := range ts.Elems {
				if ck, ok := fastClaim(i, n, e); ok && !seen[ck] {
					seen[ck] = true
					out = append(out, ck)
				}
			}
		}
	}
	return out
}

// fastClaim is the claim a fast-path element makes, in the terms of the
// verdict maps it stands in for: a DNAT map's key claims the address and
// port as service-ips does, a refused one as no-endpoint-services does.
// Hairpin elements claim nothing, and the masquerade sets follow their
// DNAT map's key.
func fastClaim(fam int, set string, e nft.SetElem) (claimKey, bool) {
	k := nft.MapKey{Addr: e.Addr, Proto: e.Proto, Port: e.Port}
	switch {
	case modOf(set) > 0:
		return claimKey{fam, MapServiceIPs, k}, true
	case set == SetNoEndpointPorts:
		return claimKey{fam, MapNoEndpointServices, k}, true
	case set == SetClusterIPPorts, set == SetExternalIPPorts:
		return claimKey{fam, MapServiceIPs, k}, true
	}
	return claimKey{}, false
}

func less(a, b ServiceKey) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// owner is the claimant of a key whose ClusterIP it is, else the first in
// namespace/name order.
func (t *Table) owner(ck claimKey) ServiceKey {
	var best ServiceKey
	bestCIP, first := false, true
	for s := range t.claims[ck] {
		cip := ck.k.Addr.IsValid() && slices.Contains(t.cips[s], ck.k.Addr)
		if first || (cip && !bestCIP) || (cip == bestCIP && less(s, best)) {
			best, bestCIP, first = s, cip, false
		}
	}
	return best
}

// isClusterIP reports whether the key's address is one of s's ClusterIPs.
func (t *Table) isClusterIP(s ServiceKey, ck claimKey) bool {
	return ck.k.Addr.IsValid() && slices.Contains(t.cips[s], ck.k.Addr)
}

// effective is a Service's fragments without the map keys another Service
// owns: the rendered fragments themselves (no copy) when it owns them all,
// which is the normal case.
func (t *Table) effective(k ServiceKey, raw [2]*nft.Ruleset) [2]*nft.Ruleset {
	lost := false
	for _, ck := range claimsOf(raw) {
		if len(t.claims[ck]) > 1 && t.owner(ck) != k {
			lost = true
			break
		}
	}
	if !lost {
		return raw
	}
	var out [2]*nft.Ruleset
	for i, rs := range raw {
		if rs == nil {
			continue
		}
		cp := nft.NewRuleset()
		cp.Merge(rs)
		for m, els := range cp.Maps {
			for key := range els {
				if t.owner(claimKey{i, m, key}) != k {
					delete(els, key)
				}
			}
		}
		for n, ts := range cp.TypedSets {
			for e := range ts.Elems {
				if ck, ok := fastClaim(i, n, e); ok && t.owner(ck) != k {
					delete(ts.Elems, e)
				}
			}
			if len(ts.Elems) == 0 && modOf(n) > 0 {
				delete(cp.TypedSets, n) // a map the Service no longer uses
			}
		}
		out[i] = cp
	}
	return out
}

// Conflict is one contested map key, as one of its claimants sees it.
type Conflict struct {
	Map   string
	Key   nft.MapKey
	Owner ServiceKey
	// Others are the other claimants, sorted.
	Others []ServiceKey
	// OwnerByClusterIP: the owner holds the key because the address is its
	// ClusterIP.
	OwnerByClusterIP bool
}

func (c Conflict) String() string {
	others := make([]string, len(c.Others))
	for i, o := range c.Others {
		others[i] = o.String()
	}
	rule := "the Service first in namespace/name order keeps it"
	if c.OwnerByClusterIP {
		rule = "it is the ClusterIP of Service " + c.Owner.String() + ", which keeps it"
	}
	return fmt.Sprintf("%s %s is claimed by Services %s and %s: %s", c.Map, c.Key, c.Owner, joinKeys(others), rule)
}

func joinKeys(ks []string) string {
	if len(ks) == 1 {
		return ks[0]
	}
	return fmt.Sprint(ks)
}

// Conflicts lists the map keys of k that another Service claims too, won
// or lost (for reports: both sides of a contest hear of it).
func (t *Table) Conflicts(k ServiceKey) []Conflict {
	var out []Conflict
	for _, ck := range claimsOf(t.raw[k]) {
		if len(t.claims[ck]) < 2 {
			continue
		}
		o := t.owner(ck)
		c := Conflict{Map: ck.m, Key: ck.k, Owner: o, OwnerByClusterIP: t.isClusterIP(o, ck)}
		for s := range t.claims[ck] {
			if s != o {
				c.Others = append(c.Others, s)
			}
		}
		sort.Slice(c.Others, func(i, j int) bool { return less(c.Others[i], c.Others[j]) })
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Changes returns, for family f, the old and new fragments of the Services
// changed since the last Commit (the input of diff for a partial sync).
//
// What Services share is settled against the whole table: a hairpin
// element is in before when a Service had it and in after when one has it
// now; a DNAT map is declared on either side when it existed then or
// exists now; and when the endpoint counts in use changed, chain services
// (its DNAT rules) is in both. The static typed sets are declared on both
// sides, so that a fragment that drops one only loses its elements.
func (t *Table) Changes(f nft.Family) (before, after *nft.Ruleset) {
	i := familyIndex(f)
	before, after = nft.NewRuleset(), nft.NewRuleset()
	hairpinBefore, hairpinAfter := map[nft.SetElem]int{}, map[nft.SetElem]int{}
	for k, old := range t.pending {
		if old[i] != nil {
			before.Merge(old[i])
			for e := range old[i].TypedSets[SetHairpin].Elems {
				hairpinBefore[e]++
			}
		}
		if cur := t.eff[k][i]; cur != nil {
			after.Merge(cur)
			for e := range cur.TypedSets[SetHairpin].Elems {
				hairpinAfter[e]++
			}
		}
	}
	for n, kind := range Part.TypedSets {
		before.DeclareSet(n, kind)
		after.DeclareSet(n, kind)
	}
	for e := range hairpinBefore {
		hairpinAfter[e] += 0
	}
	for e, changedNow := range hairpinAfter {
		now := t.hairpin[sharedElem{i, e}]
		was := now - changedNow + hairpinBefore[e]
		setElem(before, SetHairpin, e, was > 0)
		setElem(after, SetHairpin, e, now > 0)
	}
	for _, rs := range []*nft.Ruleset{before, after} {
		for n := range rs.TypedSets {
			if m := modOf(n); m > 0 {
				if t.committed[i][m] {
					before.DeclareSet(n, nft.SetNATMap)
				}
				if t.mods[i][m] > 0 {
					after.DeclareSet(n, nft.SetNATMap)
				}
			}
		}
	}
	if now := t.modList(i); !sameMods(now, t.committed[i]) {
		var was []int
		for n := range t.committed[i] {
			was = append(was, n)
		}
		sort.Ints(was)
		before.Chains[ChainEndpointsDNAT] = endpointsDNAT(was)
		after.Chains[ChainEndpointsDNAT] = endpointsDNAT(now)
	}
	return before, after
}

// setElem puts e in typed set s of rs, or takes it out.
func setElem(rs *nft.Ruleset, s string, e nft.SetElem, in bool) {
	if in {
		rs.TypedSets[s].Elems[e] = true
	} else {
		delete(rs.TypedSets[s].Elems, e)
	}
}

func sameMods(a []int, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for _, n := range a {
		if !b[n] {
			return false
		}
	}
	return true
}

// Changed lists the Services changed since the last Commit.
func (t *Table) Changed() []ServiceKey {
	out := make([]ServiceKey, 0, len(t.pending))
	for k := range t.pending {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out
}

// Commit marks the changes as written.
func (t *Table) Commit() {
	t.pending = map[ServiceKey][2]*nft.Ruleset{}
	for i := range t.committed {
		t.committed[i] = map[int]bool{}
		for n := range t.mods[i] {
			t.committed[i][n] = true
		}
	}
}

// Full is family f's whole desired table.
func (t *Table) Full(f nft.Family) *nft.Ruleset {
	i := familyIndex(f)
	rs := RenderStatic(t.in, f)
	for _, fr := range t.eff {
		if fr[i] != nil {
			rs.Merge(fr[i])
		}
	}
	rs.Chains[ChainEndpointsDNAT] = endpointsDNAT(t.modList(i))
	return rs
}

// Len is the number of Services in the table.
func (t *Table) Len() int { return len(t.raw) }

func familyIndex(f nft.Family) int {
	if f == nft.IPv4 {
		return 0
	}
	return 1
}
