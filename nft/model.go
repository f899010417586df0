package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// Table is the one nftables table wgmesh programs, in the ip and ip6
// families (DESIGN.md). Its writers (the leak guard, egress masquerade, the
// service NAT) each own a Part of it; only the agent's uninstall deletes it.
const Table = "wgmesh"

// Family is an IP family of table wgmesh.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Families lists both, IPv4 first.
var Families = []Family{IPv4, IPv6}

func (f Family) String() string {
	if f == IPv4 {
		return "ip"
	}
	return "ip6"
}

// FamilyOf is the family of an address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// OfFamily returns the prefixes of family f, masked.
func OfFamily(ps []netip.Prefix, f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if FamilyOf(p.Addr()) == f {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Protocol is a transport protocol (meta l4proto).
type Protocol string

const (
	TCP    Protocol = "tcp"
	UDP    Protocol = "udp"
	SCTP   Protocol = "sctp"
	ICMPv6 Protocol = "ipv6-icmp"
)

// Number is the IP protocol number (meta l4proto).
func (p Protocol) Number() uint8 {
	switch p {
	case TCP:
		return 6
	case UDP:
		return 17
	case ICMPv6:
		return 58
	default:
		return 132
	}
}

// protocolOf is the protocol of an IP protocol number.
func protocolOf(n uint8) (Protocol, bool) {
	for _, p := range []Protocol{TCP, UDP, SCTP, ICMPv6} {
		if p.Number() == n {
			return p, true
		}
	}
	return "", false
}

// protocolName is the protocol of n, "" for one the model does not know.
func protocolName(n uint8) Protocol {
	p, _ := protocolOf(n)
	return p
}

// Hook is a netfilter hook of a base chain.
type Hook string

const (
	HookPrerouting  Hook = "prerouting"
	HookInput       Hook = "input"
	HookForward     Hook = "forward"
	HookOutput      Hook = "output"
	HookPostrouting Hook = "postrouting"
)

// BaseChain is a hooked chain (policy accept). Rules are its content in
// a Ruleset; here they serve writers that declare a base chain and its
// rules together.
type BaseChain struct {
	Name     string
	NAT      bool // type nat, else type filter
	Hook     Hook
	Priority int
	Rules    Chain
}

// Chain priorities of the standard names (nft's dstnat, filter, srcnat).
const (
	PriorityDNAT   = -100
	PriorityFilter = 0
	PrioritySNAT   = 100
)

// VerdictKind is what a rule or a map element does with a matching packet
// (a byte: every Rule has one, see Rule).
type VerdictKind uint8

const (
	VerdictNone VerdictKind = iota
	VerdictJump
	VerdictGoto
	VerdictReturn
	VerdictDrop
	VerdictAccept
	// VerdictReject answers TCP with a reset and everything else with
	// ICMP port unreachable.
	VerdictReject
)

var verdictNames = [...]string{VerdictNone: "", VerdictJump: "jump", VerdictGoto: "goto", VerdictReturn: "return",
	VerdictDrop: "drop", VerdictAccept: "accept", VerdictReject: "reject"}

func (k VerdictKind) String() string {
	if int(k) < len(verdictNames) {
		return verdictNames[k]
	}
	return fmt.Sprintf("VerdictKind(%d)", uint8(k))
}

// Verdict is a verdict, with the target chain for jump and goto.
type Verdict struct {
	Kind  VerdictKind
	Chain string
}

func (v Verdict) String() string {
	if v.Chain != "" {
		return v.Kind.String() + " " + v.Chain
	}
	return v.Kind.String()
}

// Goto and Jump build verdicts.
func Goto(chain string) Verdict { return Verdict{Kind: VerdictGoto, Chain: chain} }
func Jump(chain string) Verdict { return Verdict{Kind: VerdictJump, Chain: chain} }

// KeyKind says which packet fields form a verdict map's key.
type KeyKind uint8

const (
	// KeyAddrProtoPort is daddr . l4proto . dport.
	KeyAddrProtoPort KeyKind = iota
	// KeyProtoPort is l4proto . dport.
	KeyProtoPort
	// KeyDaddr is daddr alone.
	KeyDaddr
	// KeySaddr is saddr alone.
	KeySaddr
	// KeyAddrProtoPortSlot is daddr . l4proto . dport . numgen random mod
	// NumgenMod, the key of a rule's DNAT map (see Rule.VMap); no verdict
	// map has it.
	KeyAddrProtoPortSlot
)

func (k KeyKind) String() string {
	switch k {
	case KeyAddrProtoPort:
		return "daddr . l4proto . dport"
	case KeyProtoPort:
		return "l4proto . dport"
	case KeyDaddr:
		return "daddr"
	case KeySaddr:
		return "saddr"
	case KeyAddrProtoPortSlot:
		return "daddr . l4proto . dport . slot"
	default:
		return fmt.Sprintf("KeyKind(%d)", int(k))
	}
}

// MapKey is a verdict map element's key: Addr is unset for KeyProtoPort,
// Proto and Port for KeyDaddr and KeySaddr.
type MapKey struct {
	Addr  netip.Addr
	Proto Protocol
	Port  uint16
}

func (k MapKey) String() string {
	switch {
	case k.Proto == "":
		return k.Addr.String()
	case k.Addr.IsValid():
		return fmt.Sprintf("%s . %s . %d", k.Addr, k.Proto, k.Port)
	default:
		return fmt.Sprintf("%s . %d", k.Proto, k.Port)
	}
}

// CtState is a set of conntrack states (ct state), as a bitmask.
type CtState uint8

// The conntrack states (the kernel's NF_CT_STATE bits).
const (
	CtInvalid     CtState = 1 << 0
	CtEstablished CtState = 1 << 1
	CtRelated     CtState = 1 << 2
	CtNew         CtState = 1 << 3
)

func (c CtState) String() string {
	var s []string
	for _, b := range []struct {
		bit  CtState
		name string
	}{{CtInvalid, "invalid"}, {CtEstablished, "established"}, {CtRelated, "related"}, {CtNew, "new"}} {
		if c&b.bit != 0 {
			s = append(s, b.name)
		}
	}
	return strings.Join(s, ",")
}

// Rule is one nftables rule of the model. Every field that is set must
// match (String prints them in match order); then the statements run.
//
// Its size is most of the service NAT's memory: the service NAT keeps 31
// rules per Service of 10 endpoints (310,000 at 10,000 Services), nearly
// all with two or three fields set, and they are all live at once in a
// full sync. So the words come first and every field smaller than a word
// last, where they pad nothing, and the small enums are bytes (VerdictKind,
// KeyKind, CtState): 376 bytes. An endpoint chain's two rules (752 bytes
// and the allocator's 8-byte header) then take a 768-byte allocation, as
// they did before the policy matches were added; at 384 bytes they took
// 896 (TestRuleSize).
type Rule struct {
	// Matches.
	Saddr      netip.Prefix   // ip saddr within
	SaddrNotIn []netip.Prefix // ip saddr within none of these
	// Set lookups name an address set, an affinity set or a typed set of
	// the kind the field says (an address lookup takes SetAddr or
	// SetInterval).
	SaddrSet    string       // ip saddr @set
	NotSaddrSet string       // ip saddr != @set
	Daddr       netip.Prefix // ip daddr within
	DaddrSet    string       // ip daddr @set
	NotDaddrSet string       // ip daddr != @set
	// SaddrDaddrSet: ip saddr . ip daddr @set (SetAddrAddr).
	SaddrDaddrSet string
	OIFName       string // oifname
	// NotOIFNames: the output interface is none of these.
	NotOIFNames []string
	Proto       Protocol // meta l4proto
	// DaddrProtoPortSet: ip daddr . meta l4proto . th dport @set
	// (SetAddrProtoPort).
	DaddrProtoPortSet string

	// Statements.
	Update string // update @set { ip saddr }
	// Lookups that end the rule with the map's verdict (keyed by VMapKey).
	// With VMapKey KeyAddrProtoPortSlot, VMap is a SetNATMap and the rule
	// is "dnat to daddr . l4proto . dport . numgen random mod NumgenMod map
	// @VMap": the destination and a slot drawn at random pick the endpoint
	// (NumgenMod is then the modulus, not a match); a key the map lacks
	// ends the rule and the next one runs.
	VMap    string // <key> vmap @VMap
	SNAT    netip.Addr
	DNAT    netip.AddrPort
	Verdict Verdict

	// The small matches.
	// NumgenMod > 0 matches with probability 1/NumgenMod: numgen random
	// mod NumgenMod < 1. A cascade of such rules picks one of N endpoints
	// uniformly (mod N, then mod N-1, ..., then the last unconditionally)
	// without a set per Service: every anonymous set costs the kernel a
	// scan of all the table's sets to name it, quadratic at 10,000 Services.
	NumgenMod int32
	DPort     uint16 // th dport
	// DPortEnd makes DPort a range: th dport DPort-DPortEnd.
	DPortEnd uint16
	// ICMPv6Type (through ICMPv6TypeEnd when set): icmpv6 type, with
	// Proto ICMPv6.
	ICMPv6Type, ICMPv6TypeEnd uint8
	CtStateNew                bool
	// CtState: the connection is in any of these states.
	CtState CtState
	// MarkUnset: the masquerade mark is not set.
	MarkUnset bool
	// FibSaddrLocal: the source is an address of this node.
	FibSaddrLocal bool
	// FibDaddrLocal: the destination is an address of this node.
	FibDaddrLocal bool

	// The small statements.
	VMapKey   KeyKind
	SetMark   bool // meta mark set meta mark | MasqMark
	ClearMark bool // meta mark set meta mark ^ MasqMark
	// Counter counts the packets and bytes the rule's statements see.
	Counter    bool
	Masquerade bool
	// FullyRandom: masquerade and snat pick the source port at random
	// (no port is predictable from a connection's other fields).
	FullyRandom bool
}

// MasqMark is the packet mark that asks the masquerading chain to
// masquerade (kube-proxy uses the same bit). It is cleared as it is used,
// so it never rides along into the WireGuard-encapsulated packet.
const MasqMark = 0x4000

// String is the rule in nft syntax. It is also the rule's identity: its
// hash is stored with the rule in the kernel to detect drift.
func (r Rule) String() string {
	var b []string
	add := func(f string, a ...any) { b = append(b, fmt.Sprintf(f, a...)) }
	if r.CtStateNew {
		add("ct state new")
	}
	if r.CtState != 0 {
		add("ct state %s", r.CtState)
	}
	if r.MarkUnset {
		add("meta mark & 0x%x == 0", MasqMark)
	}
	if r.Saddr.IsValid() {
		add("%s saddr %s", pfxFamily(r.Saddr), pfxString(r.Saddr))
	}
	if len(r.SaddrNotIn) > 0 {
		s := make([]string, len(r.SaddrNotIn))
		for i, p := range r.SaddrNotIn {
			s[i] = pfxString(p)
		}
		add("%s saddr != { %s }", pfxFamily(r.SaddrNotIn[0]), strings.Join(s, ", "))
	}
	if r.SaddrSet != "" {
		add("saddr @%s", r.SaddrSet)
	}
	if r.NotSaddrSet != "" {
		add("saddr != @%s", r.NotSaddrSet)
	}
	if r.Daddr.IsValid() {
		add("%s daddr %s", pfxFamily(r.Daddr), pfxString(r.Daddr))
	}
	if r.DaddrSet != "" {
		add("daddr @%s", r.DaddrSet)
	}
	if r.NotDaddrSet != "" {
		add("daddr != @%s", r.NotDaddrSet)
	}
	if r.SaddrDaddrSet != "" {
		add("saddr . daddr @%s", r.SaddrDaddrSet)
	}
	if r.NumgenMod > 0 && r.DNATMap() == "" {
		add("numgen random mod %d < 1", r.NumgenMod)
	}
	if r.FibSaddrLocal {
		add("fib saddr type local")
	}
	if r.FibDaddrLocal {
		add("fib daddr type local")
	}
	if r.OIFName != "" {
		add("oifname %q", r.OIFName)
	}
	for _, n := range r.NotOIFNames {
		add("oifname != %q", n)
	}
	if r.Proto != "" {
		add("meta l4proto %s", r.Proto)
	}
	if r.DPort != 0 && r.DPortEnd != 0 {
		add("th dport %d-%d", r.DPort, r.DPortEnd)
	} else if r.DPort != 0 {
		add("th dport %d", r.DPort)
	}
	if r.ICMPv6TypeEnd != 0 {
		add("icmpv6 type %d-%d", r.ICMPv6Type, r.ICMPv6TypeEnd)
	} else if r.ICMPv6Type != 0 {
		add("icmpv6 type %d", r.ICMPv6Type)
	}
	if r.DaddrProtoPortSet != "" {
		add("daddr . meta l4proto . th dport @%s", r.DaddrProtoPortSet)
	}
	if r.SetMark {
		add("meta mark set meta mark | 0x%x", MasqMark)
	}
	if r.ClearMark {
		add("meta mark set meta mark ^ 0x%x", MasqMark)
	}
	if r.Update != "" {
		add("update @%s { saddr }", r.Update)
	}
	if r.VMap != "" {
		switch r.VMapKey {
		case KeyAddrProtoPortSlot:
		case KeyProtoPort:
			add("meta l4proto . th dport vmap @%s", r.VMap)
		case KeyDaddr:
			add("daddr vmap @%s", r.VMap)
		case KeySaddr:
			add("saddr vmap @%s", r.VMap)
		default:
			add("daddr . meta l4proto . th dport vmap @%s", r.VMap)
		}
	}
	if r.Counter {
		add("counter")
	}
	random := ""
	if r.FullyRandom {
		random = " fully-random"
	}
	if r.Masquerade {
		add("masquerade%s", random)
	}
	if r.SNAT.IsValid() {
		add("snat to %s%s", r.SNAT, random)
	}
	if r.DNAT.IsValid() {
		add("dnat to %s", r.DNAT)
	}
	if m := r.DNATMap(); m != "" {
		add("dnat to daddr . meta l4proto . th dport . numgen random mod %d map @%s", r.NumgenMod, m)
	}
	if r.Verdict.Kind != VerdictNone {
		add("%s", r.Verdict)
	}
	return strings.Join(b, " ")
}

// usesSet reports whether r looks up or updates set s.
func (r Rule) usesSet(s string) bool {
	return slices.Contains([]string{r.SaddrSet, r.NotSaddrSet, r.DaddrSet, r.NotDaddrSet, r.SaddrDaddrSet, r.DaddrProtoPortSet, r.Update, r.DNATMap()}, s)
}

// DNATMap is the SetNATMap the rule takes its DNAT destination from, if any.
func (r Rule) DNATMap() string {
	if r.VMapKey == KeyAddrProtoPortSlot {
		return r.VMap
	}
	return ""
}

// check refuses a rule of family f that would compile to something else
// than it says.
func (r Rule) check(f Family) error {
	switch {
	case r.DPortEnd != 0 && (r.DPort == 0 || r.DPortEnd < r.DPort):
		return fmt.Errorf("rule %q: port range %d-%d: want 0 < DPort <= DPortEnd", r, r.DPort, r.DPortEnd)
	case (r.ICMPv6Type != 0 || r.ICMPv6TypeEnd != 0) && (r.Proto != ICMPv6 || f != IPv6):
		return fmt.Errorf("rule %q: an icmpv6 type match needs Proto %s in family %s", r, ICMPv6, IPv6)
	case r.ICMPv6TypeEnd != 0 && r.ICMPv6TypeEnd < r.ICMPv6Type:
		return fmt.Errorf("rule %q: icmpv6 type range %d-%d is empty", r, r.ICMPv6Type, r.ICMPv6TypeEnd)
	case r.VMap != "" && (r.VMapKey < KeyAddrProtoPort || r.VMapKey > KeyAddrProtoPortSlot):
		return fmt.Errorf("rule %q: unknown map key kind %d (want one of KeyAddrProtoPort, KeyProtoPort, KeyDaddr, KeySaddr, KeyAddrProtoPortSlot)", r, int(r.VMapKey))
	case r.CtState&^(CtInvalid|CtEstablished|CtRelated|CtNew) != 0:
		return fmt.Errorf("rule %q: unknown ct state bits 0x%x", r, uint32(r.CtState))
	case r.DNATMap() != "" && (r.NumgenMod <= 0 || r.NumgenMod > 1<<16 || r.DNAT.IsValid() || r.Verdict.Kind != VerdictNone || r.Masquerade || r.SNAT.IsValid()):
		return fmt.Errorf("rule %q: a DNAT map rule needs 0 < NumgenMod <= 65536 and no other verdict or NAT", r)
	}
	return nil
}

func pfxFamily(p netip.Prefix) Family { return FamilyOf(p.Addr()) }

func pfxString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// Host is the single-address prefix of a.
func Host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()) }

// Chain is a regular (non-base) chain's rules.
type Chain []Rule

// Fingerprints are the rules' identities, in order.
func (c Chain) Fingerprints() []string {
	out := make([]string, len(c))
	for i, r := range c {
		out[i] = r.String()
	}
	return out
}

// AffinitySet is a dynamic set of client addresses with a timeout.
type AffinitySet struct{ Timeout time.Duration }

// Ruleset is the desired (or current) content of one family's table, or
// of one Service's part of it (a fragment).
type Ruleset struct {
	Chains map[string]Chain
	// Maps are the verdict maps: map name -> key -> verdict.
	Maps map[string]map[MapKey]Verdict
	// Sets are the address sets a Part declares in Part.Sets: set name ->
	// addresses.
	Sets map[string]map[netip.Addr]bool
	// Affinity are the session-affinity sets.
	Affinity map[string]AffinitySet
	// TypedSets are the typed sets (Part.TypedSets, Part.SetPrefixes): a
	// set is here when it should exist, empty or not.
	TypedSets map[string]TypedSet
}

// NewRuleset returns an empty Ruleset.
func NewRuleset() *Ruleset {
	return &Ruleset{Chains: map[string]Chain{}, Maps: map[string]map[MapKey]Verdict{}, Sets: map[string]map[netip.Addr]bool{},
		Affinity: map[string]AffinitySet{}, TypedSets: map[string]TypedSet{}}
}

// DeclareSet declares typed set s of kind k (so that it exists even
// empty); a declaration of another kind replaces the set, elements and all.
func (rs *Ruleset) DeclareSet(s string, k SetKind) {
	if old, ok := rs.TypedSets[s]; !ok || old.Kind != k {
		rs.TypedSets[s] = TypedSet{Kind: k, Elems: map[SetElem]bool{}}
	}
}

// AddTypedElements adds elements to typed set s of kind k, declaring it.
func (rs *Ruleset) AddTypedElements(s string, k SetKind, es ...SetElem) {
	rs.DeclareSet(s, k)
	for _, e := range es {
		rs.TypedSets[s].Elems[e] = true
	}
}

// AddElement adds a map element.
func (rs *Ruleset) AddElement(m string, k MapKey, v Verdict) {
	if rs.Maps[m] == nil {
		rs.Maps[m] = map[MapKey]Verdict{}
	}
	rs.Maps[m][k] = v
}

// AddSetElement adds an address to a set.
func (rs *Ruleset) AddSetElement(s string, a netip.Addr) {
	if rs.Sets[s] == nil {
		rs.Sets[s] = map[netip.Addr]bool{}
	}
	rs.Sets[s][a] = true
}

// Merge adds everything of o to rs (o's chains replace rs's of the same name).
func (rs *Ruleset) Merge(o *Ruleset) {
	for n, c := range o.Chains {
		rs.Chains[n] = c
	}
	// Empty maps and sets too: they exist.
	for m, els := range o.Maps {
		if rs.Maps[m] == nil {
			rs.Maps[m] = map[MapKey]Verdict{}
		}
		for k, v := range els {
			rs.AddElement(m, k, v)
		}
	}
	for s, els := range o.Sets {
		if rs.Sets[s] == nil {
			rs.Sets[s] = map[netip.Addr]bool{}
		}
		for a := range els {
			rs.AddSetElement(s, a)
		}
	}
	for n, a := range o.Affinity {
		rs.Affinity[n] = a
	}
	for n, ts := range o.TypedSets {
		rs.DeclareSet(n, ts.Kind)
		for e := range ts.Elems {
			rs.TypedSets[n].Elems[e] = true
		}
	}
}

// String lists the ruleset in nft-like syntax, sorted (for tests and logs).
func (rs *Ruleset) String() string {
	var b strings.Builder
	for _, n := range sortedKeys(rs.Sets) {
		fmt.Fprintf(&b, "set %s {", n)
		var as []netip.Addr
		for a := range rs.Sets[n] {
			as = append(as, a)
		}
		sort.Slice(as, func(i, j int) bool { return as[i].Less(as[j]) })
		fmt.Fprintf(&b, " %s }\n", joinAddrs(as))
	}
	for _, n := range sortedKeys(rs.Affinity) {
		fmt.Fprintf(&b, "set %s { timeout %s }\n", n, rs.Affinity[n].Timeout)
	}
	for _, n := range sortedKeys(rs.TypedSets) {
		ts := rs.TypedSets[n]
		es := ts.sorted()
		s := make([]string, len(es))
		for i, e := range es {
			s[i] = e.String()
		}
		if len(s) == 0 {
			fmt.Fprintf(&b, "set %s { %s }\n", n, ts.Kind)
		} else {
			fmt.Fprintf(&b, "set %s { %s: %s }\n", n, ts.Kind, strings.Join(s, ", "))
		}
	}
	for _, n := range sortedKeys(rs.Maps) {
		fmt.Fprintf(&b, "map %s {\n", n)
		var lines []string
		for k, v := range rs.Maps[n] {
			lines = append(lines, fmt.Sprintf("\t%s : %s\n", k, v))
		}
		sort.Strings(lines)
		b.WriteString(strings.Join(lines, ""))
		b.WriteString("}\n")
	}
	for _, n := range sortedKeys(rs.Chains) {
		fmt.Fprintf(&b, "chain %s {\n", n)
		for _, r := range rs.Chains[n] {
			fmt.Fprintf(&b, "\t%s\n", r)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
