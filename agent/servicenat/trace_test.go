package servicenat

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// A packet tracer over the model's rendered ruleset, in the spirit of
// kube-proxy's nftables tracer: it walks the base chains in hook order,
// follows jumps, gotos and verdict maps, explores every numgen branch,
// and reports where the packet ends up. Tests assert behaviour (which
// endpoints, masqueraded or not, rejected or dropped), not rule text.

type tracePacket struct {
	Src, Dst netip.Addr
	Proto    Protocol
	DPort    uint16
	// FromNode: the packet originates on this node (output path).
	FromNode bool
}

type tracer struct {
	rs       *Ruleset
	local    map[netip.Addr]bool // the node's own addresses
	affinity map[string]map[netip.Addr]bool
	// oif is the interface a destination is routed through.
	oif func(netip.Addr) string
}

type pstate struct {
	src, dst   netip.Addr
	dport      uint16
	mark       bool
	dnat       netip.AddrPort
	masq       bool
	snat       netip.Addr
	verdict    VerdictKind // terminal verdict of the current hook
	terminated bool
}

// outcome is one possible fate of a packet.
type outcome struct {
	Verdict  VerdictKind // accept, drop or reject
	Endpoint netip.AddrPort
	Masq     bool
	SNAT     netip.Addr
	MarkLeft bool
}

func (o outcome) String() string {
	s := string(o.Verdict)
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

func (t *tracer) trace(p tracePacket) []outcome {
	st := pstate{src: p.Src, dst: p.Dst, dport: p.DPort}
	var states []pstate
	if p.FromNode {
		states = t.hook("filter-output-pre-dnat", p, []pstate{st})
		states = t.hook("nat-output", p, states)
		states = t.hook("filter-output", p, states)
	} else {
		states = t.hook("filter-prerouting-pre-dnat", p, []pstate{st})
		states = t.hook("nat-prerouting", p, states)
		var in, fwd []pstate
		for _, s := range states {
			if !s.terminated && t.local[s.dst] {
				in = append(in, s)
			} else {
				fwd = append(fwd, s)
			}
		}
		states = append(t.hook("filter-input", p, in), t.hook("filter-forward", p, fwd)...)
	}
	var out []outcome
	seen := map[string]bool{}
	for _, s := range states {
		if !s.terminated && !t.local[s.dst] {
			s = t.hook("nat-postrouting", p, []pstate{s})[0]
		}
		o := outcome{Verdict: VerdictAccept, Endpoint: s.dnat, Masq: s.masq, SNAT: s.snat, MarkLeft: s.mark}
		if s.terminated && s.verdict != VerdictAccept {
			o = outcome{Verdict: s.verdict}
		}
		if !seen[o.String()] {
			seen[o.String()] = true
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// hook runs a base chain; a terminal accept ends only this hook.
func (t *tracer) hook(name string, p tracePacket, in []pstate) []pstate {
	var out []pstate
	for _, s := range in {
		if s.terminated {
			out = append(out, s)
			continue
		}
		for _, r := range t.run(name, 0, p, s) {
			if r.terminated && r.verdict == VerdictAccept {
				r.terminated, r.verdict = false, ""
			}
			out = append(out, r)
		}
	}
	return out
}

// run evaluates chain from rule i; results are terminated, or returned
// (continue in the caller).
func (t *tracer) run(chain string, i int, p tracePacket, s pstate) []pstate {
	rules, ok := t.rs.Chains[chain]
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
			if t.affinity[r.Update] == nil {
				t.affinity[r.Update] = map[netip.Addr]bool{}
			}
			t.affinity[r.Update][s.src] = true
		}
		var next []Verdict
		switch {
		case r.VMap != "":
			k := MapKey{Proto: p.Proto, Port: s.dport}
			if r.VMapKey == KeyAddrProtoPort {
				k.Addr = s.dst
			}
			v, ok := t.rs.Maps[r.VMap][k]
			if !ok {
				continue
			}
			next = []Verdict{v}
		case r.NumgenMod > 0:
			// Both fates of the random draw.
			return append(t.run(chain, i+1, p, s), t.runVerdict(chain, i, p, s, r.Verdict)...)
		case r.DNAT.IsValid():
			s.dnat, s.dst, s.dport = r.DNAT, r.DNAT.Addr(), r.DNAT.Port()
			s.terminated, s.verdict = true, VerdictAccept
			return []pstate{s}
		case r.Masquerade || r.SNAT.IsValid():
			s.masq, s.snat = true, r.SNAT
			s.terminated, s.verdict = true, VerdictAccept
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
func (t *tracer) runVerdict(chain string, i int, p tracePacket, s pstate, v Verdict) []pstate {
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

func (t *tracer) match(r Rule, p tracePacket, s pstate) bool {
	// Every traced packet opens a new connection: ct state new holds.
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
	if r.SaddrSet != "" && !t.affinity[r.SaddrSet][s.src] {
		return false
	}
	if r.Daddr.IsValid() && !r.Daddr.Contains(s.dst) {
		return false
	}
	if r.DaddrSet != "" && !t.rs.Sets[r.DaddrSet][s.dst] {
		return false
	}
	if r.FibSaddrLocal && !t.local[s.src] {
		return false
	}
	if r.FibDaddrLocal && !t.local[s.dst] {
		return false
	}
	if r.OIFName != "" && t.oif(s.dst) != r.OIFName {
		return false
	}
	if r.Proto != "" && r.Proto != p.Proto {
		return false
	}
	if r.DPort != 0 && r.DPort != s.dport {
		return false
	}
	return true
}

func outcomes(os []outcome) string {
	s := make([]string, len(os))
	for i, o := range os {
		s[i] = o.String()
	}
	return strings.Join(s, "; ")
}
