package nft

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// A packet tracer over a desired (or faked) table, in the spirit of
// kube-proxy's nftables tracer: it walks the base chains of every part in
// hook order (prerouting, then input or forward, or output for the node's
// own packets, then postrouting; by priority within a hook), follows jumps,
// gotos and verdict maps, explores every numgen branch, and reports where
// the packet ends up. Tests assert behaviour (dropped, rejected, which
// endpoint, masqueraded or not), not rule text, and see the parts
// together: the leak guard, egress masquerade and the service NAT.

// Packet is what the tracer sends.
type Packet struct {
	Src, Dst netip.Addr
	Proto    Protocol
	DPort    uint16
	// ICMPv6Type is the type of an ICMPv6 packet (Proto ICMPv6).
	ICMPv6Type uint8
	// CtState is the packet's connection state, one of CtNew (the zero
	// value means new: the packet opens a connection), CtEstablished,
	// CtRelated or CtInvalid. Only a new connection's packet passes nat
	// chains: conntrack applies their mapping to the rest, and the tracer
	// does not (trace an established packet with the addresses it has
	// after NAT, e.g. a reply from the endpoint).
	CtState CtState
	// FromNode: the packet originates on this node (output path).
	FromNode bool
}

func (p Packet) ctState() CtState {
	if p.CtState == 0 {
		return CtNew
	}
	return p.CtState
}

// Tracer traces packets through Rules, hooked by Bases.
type Tracer struct {
	Rules *Ruleset
	// Bases are the base chains of every part in Rules.
	Bases []BaseChain
	// Local are the node's own addresses (fib ... type local, input).
	Local map[netip.Addr]bool
	// OIF is the interface a destination is routed through.
	OIF func(netip.Addr) string
	// Affinity holds the clients the affinity sets remember (update @set).
	Affinity map[string]map[netip.Addr]bool
	// nat indexes the SetNATMaps by key (built on first use).
	nat map[string]map[NATKey]netip.AddrPort
}

// NewTracer returns a tracer over rs with the base chains of parts.
func NewTracer(rs *Ruleset, local map[netip.Addr]bool, oif func(netip.Addr) string, parts ...*Part) *Tracer {
	t := &Tracer{Rules: rs, Local: local, OIF: oif, Affinity: map[string]map[netip.Addr]bool{}}
	for _, p := range parts {
		t.Bases = append(t.Bases, p.BaseChains...)
	}
	return t
}

type pstate struct {
	src, dst   netip.Addr
	dport      uint16
	mark       bool
	dnat       netip.AddrPort
	masq       bool
	snat       netip.Addr
	natDone    bool        // a nat chain of the current hook mapped the packet
	verdict    VerdictKind // terminal verdict
	terminated bool
}

// Outcome is one possible fate of a packet.
type Outcome struct {
	Verdict  VerdictKind // accept, drop or reject
	Endpoint netip.AddrPort
	Masq     bool
	SNAT     netip.Addr
	MarkLeft bool
}

func (o Outcome) String() string {
	s := o.Verdict.String()
	if o.Endpoint.IsValid() {
		s += " -> " + o.Endpoint.String()
	}
	if o.Masq {
		s += " masq"
		if o.SNAT.IsValid() {
			s += "(" + o.SNAT.String() + ")"
		}
	}
	if o.MarkLeft {
		s += " MARK-LEFT"
	}
	return s
}

// Outcomes joins outcomes for comparison in tests.
func Outcomes(os []Outcome) string {
	s := make([]string, len(os))
	for i, o := range os {
		s[i] = o.String()
	}
	return strings.Join(s, "; ")
}

// Trace returns every fate of p, sorted.
func (t *Tracer) Trace(p Packet) []Outcome {
	st := pstate{src: p.Src, dst: p.Dst, dport: p.DPort}
	var states []pstate
	if p.FromNode {
		states = t.hook(HookOutput, p, []pstate{st})
	} else {
		states = t.hook(HookPrerouting, p, []pstate{st})
		var in, fwd []pstate
		for _, s := range states {
			if !s.terminated && t.Local[s.dst] {
				in = append(in, s)
			} else {
				fwd = append(fwd, s)
			}
		}
		states = append(t.hook(HookInput, p, in), t.hook(HookForward, p, fwd)...)
	}
	var local, out []pstate
	for _, s := range states {
		if s.terminated || t.Local[s.dst] {
			local = append(local, s)
		} else {
			out = append(out, s)
		}
	}
	states = append(local, t.hook(HookPostrouting, p, out)...)
	var res []Outcome
	seen := map[string]bool{}
	for _, s := range states {
		o := Outcome{Verdict: VerdictAccept, Endpoint: s.dnat, Masq: s.masq, SNAT: s.snat, MarkLeft: s.mark}
		if s.terminated && s.verdict != VerdictAccept {
			o = Outcome{Verdict: s.verdict}
		}
		if !seen[o.String()] {
			seen[o.String()] = true
			res = append(res, o)
		}
	}
	sort.Slice(res, func(i, j int) bool { return res[i].String() < res[j].String() })
	return res
}

// hook runs the base chains of h by priority (then name). An accept ends
// one chain, not the hook; a drop or reject ends the packet; once a nat
// chain mapped the packet, the hook's later nat chains are skipped.
func (t *Tracer) hook(h Hook, p Packet, in []pstate) []pstate {
	var chains []BaseChain
	for _, b := range t.Bases {
		if b.Hook == h {
			chains = append(chains, b)
		}
	}
	sort.Slice(chains, func(i, j int) bool {
		if chains[i].Priority != chains[j].Priority {
			return chains[i].Priority < chains[j].Priority
		}
		return chains[i].Name < chains[j].Name
	})
	states := in
	for i := range states {
		states[i].natDone = false
	}
	for _, b := range chains {
		var out []pstate
		for _, s := range states {
			if s.terminated || (b.NAT && (s.natDone || p.ctState() != CtNew)) {
				out = append(out, s)
				continue
			}
			for _, r := range t.run(b.Name, 0, p, s) {
				if r.terminated && r.verdict == VerdictAccept {
					r.terminated, r.verdict = false, VerdictNone
				}
				out = append(out, r)
			}
		}
		states = out
	}
	return states
}

// run evaluates chain from rule i; results are terminated, or returned
// (continue in the caller).
func (t *Tracer) run(chain string, i int, p Packet, s pstate) []pstate {
	rules, ok := t.Rules.Chains[chain]
	if !ok {
		panic(fmt.Sprintf("trace: no chain %q", chain))
	}
	for ; i < len(rules); i++ {
		r := rules[i]
		if !t.match(r, p, s) {
			continue
		}
		if r.SetMark {
			s.mark = true
		}
		if r.ClearMark {
			s.mark = false
		}
		if r.Update != "" {
			if t.Affinity[r.Update] == nil {
				t.Affinity[r.Update] = map[netip.Addr]bool{}
			}
			t.Affinity[r.Update][s.src] = true
		}
		var next []Verdict
		switch {
		case r.DNATMap() != "":
			// Every slot of the random draw that the map holds.
			var out []pstate
			for slot := 0; slot < int(r.NumgenMod); slot++ {
				to, ok := t.natLookup(r.VMap, NATKey{Addr: s.dst, Proto: p.Proto, Port: s.dport, Slot: uint16(slot)})
				if !ok {
					continue
				}
				s2 := s
				s2.dnat, s2.dst, s2.dport = to, to.Addr(), to.Port()
				s2.natDone, s2.terminated, s2.verdict = true, true, VerdictAccept
				out = append(out, s2)
			}
			if len(out) == 0 {
				continue // no such key: the rule ends, the next one runs
			}
			if len(out) < int(r.NumgenMod) {
				// A draw that finds no element ends the rule too.
				out = append(out, t.run(chain, i+1, p, s)...)
			}
			return out
		case r.VMap != "":
			var k MapKey
			switch r.VMapKey {
			case KeyAddrProtoPort:
				k = MapKey{Addr: s.dst, Proto: p.Proto, Port: s.dport}
			case KeyProtoPort:
				k = MapKey{Proto: p.Proto, Port: s.dport}
			case KeyDaddr:
				k = MapKey{Addr: s.dst}
			case KeySaddr:
				k = MapKey{Addr: s.src}
			}
			v, ok := t.Rules.Maps[r.VMap][k]
			if !ok {
				continue
			}
			next = []Verdict{v}
		case r.NumgenMod > 0:
			// Both fates of the random draw.
			return append(t.run(chain, i+1, p, s), t.runVerdict(chain, i, p, s, r.Verdict)...)
		case r.DNAT.IsValid():
			s.dnat, s.dst, s.dport = r.DNAT, r.DNAT.Addr(), r.DNAT.Port()
			s.natDone, s.terminated, s.verdict = true, true, VerdictAccept
			return []pstate{s}
		case r.Masquerade || r.SNAT.IsValid():
			s.masq, s.snat = true, r.SNAT
			s.natDone, s.terminated, s.verdict = true, true, VerdictAccept
			return []pstate{s}
		case r.Verdict.Kind != VerdictNone:
			next = []Verdict{r.Verdict}
		default:
			continue
		}
		var out []pstate
		for _, v := range next {
			out = append(out, t.runVerdict(chain, i, p, s, v)...)
		}
		return out
	}
	return []pstate{s}
}

// runVerdict follows verdict v of rule i of chain.
func (t *Tracer) runVerdict(chain string, i int, p Packet, s pstate, v Verdict) []pstate {
	var out []pstate
	switch v.Kind {
	case VerdictJump:
		for _, sub := range t.run(v.Chain, 0, p, s) {
			if sub.terminated {
				out = append(out, sub)
			} else {
				out = append(out, t.run(chain, i+1, p, sub)...)
			}
		}
	case VerdictGoto:
		out = append(out, t.run(v.Chain, 0, p, s)...)
	case VerdictReturn:
		out = append(out, s)
	default:
		s2 := s
		s2.terminated, s2.verdict = true, v.Kind
		out = append(out, s2)
	}
	return out
}

// natLookup looks key up in SetNATMap m.
func (t *Tracer) natLookup(m string, key NATKey) (netip.AddrPort, bool) {
	if t.nat == nil {
		t.nat = map[string]map[NATKey]netip.AddrPort{}
	}
	idx, ok := t.nat[m]
	if !ok {
		idx = map[NATKey]netip.AddrPort{}
		for e := range t.Rules.TypedSets[m].Elems {
			idx[e.NATKey()] = e.NATTo()
		}
		t.nat[m] = idx
	}
	to, ok := idx[key]
	return to, ok
}

// inSet reports whether set holds key: an address set, an affinity set
// (what the tracer remembered) or a typed set.
func (t *Tracer) inSet(set string, key SetElem) bool {
	if ts, ok := t.Rules.TypedSets[set]; ok {
		return ts.Contains(key)
	}
	return t.Rules.Sets[set][key.Addr] || t.Affinity[set][key.Addr]
}

func (t *Tracer) match(r Rule, p Packet, s pstate) bool {
	if r.CtStateNew && p.ctState() != CtNew {
		return false
	}
	if r.CtState != 0 && r.CtState&p.ctState() == 0 {
		return false
	}
	if r.MarkUnset && s.mark {
		return false
	}
	if r.Saddr.IsValid() && !r.Saddr.Contains(s.src) {
		return false
	}
	for _, n := range r.SaddrNotIn {
		if n.Contains(s.src) {
			return false
		}
	}
	if r.SaddrSet != "" && !t.inSet(r.SaddrSet, SetElem{Addr: s.src}) {
		return false
	}
	if r.NotSaddrSet != "" && t.inSet(r.NotSaddrSet, SetElem{Addr: s.src}) {
		return false
	}
	if r.Daddr.IsValid() && !r.Daddr.Contains(s.dst) {
		return false
	}
	if r.DaddrSet != "" && !t.inSet(r.DaddrSet, SetElem{Addr: s.dst}) {
		return false
	}
	if r.NotDaddrSet != "" && t.inSet(r.NotDaddrSet, SetElem{Addr: s.dst}) {
		return false
	}
	if r.SaddrDaddrSet != "" && !t.inSet(r.SaddrDaddrSet, SetElem{Addr: s.src, Addr2: s.dst}) {
		return false
	}
	if r.FibSaddrLocal && !t.Local[s.src] {
		return false
	}
	if r.FibDaddrLocal && !t.Local[s.dst] {
		return false
	}
	if r.OIFName != "" && t.OIF(s.dst) != r.OIFName {
		return false
	}
	for _, n := range r.NotOIFNames {
		if t.OIF(s.dst) == n {
			return false
		}
	}
	if r.Proto != "" && r.Proto != p.Proto {
		return false
	}
	if r.DPort != 0 && r.DPortEnd == 0 && r.DPort != s.dport {
		return false
	}
	if r.DPortEnd != 0 && (s.dport < r.DPort || s.dport > r.DPortEnd) {
		return false
	}
	if r.ICMPv6TypeEnd != 0 && (p.ICMPv6Type < r.ICMPv6Type || p.ICMPv6Type > r.ICMPv6TypeEnd) {
		return false
	}
	if r.ICMPv6Type != 0 && r.ICMPv6TypeEnd == 0 && p.ICMPv6Type != r.ICMPv6Type {
		return false
	}
	if r.DaddrProtoPortSet != "" && !t.inSet(r.DaddrProtoPortSet, SetElem{Addr: s.dst, Proto: p.Proto, Port: s.dport}) {
		return false
	}
	return true
}
