package nft

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// SetKind is what a typed named set holds, and so its kernel key type.
type SetKind int

const (
	// SetAddr holds addresses (type ipv4_addr, ipv6_addr).
	SetAddr SetKind = iota
	// SetInterval holds address ranges (flags interval): disjoint, as the
	// kernel refuses overlapping ones (Ranges builds them).
	SetInterval
	// SetAddrProtoPort holds address . protocol . port (ipv4_addr .
	// inet_proto . inet_service), e.g. the pods declaring a named port.
	SetAddrProtoPort
	// SetAddrAddr holds address pairs (ipv4_addr . ipv4_addr).
	SetAddrAddr
	// SetNATMap is a data map from address . protocol . port . slot to
	// the address . port a rule's DNATMap translates to (ipv4_addr .
	// inet_proto . inet_service . mark : ipv4_addr . inet_service; the slot
	// is numgen's host-order 32-bit number, which nft prints as a mark).
	// Its elements are SetElems with Addr, Proto, Port and Slot as the key
	// and Addr2 and ToPort as the value. Adding, changing or deleting one is
	// element-only: the kernel does not validate the table for it.
	SetNATMap

	// setKindUnknown is a kernel set of no kind the model knows (read
	// back; it is recreated).
	setKindUnknown SetKind = -1
)

func (k SetKind) String() string {
	switch k {
	case SetAddr:
		return "addr"
	case SetInterval:
		return "interval"
	case SetAddrProtoPort:
		return "addr . proto . port"
	case SetAddrAddr:
		return "addr . addr"
	case SetNATMap:
		return "addr . proto . port . slot : addr . port"
	default:
		return "unknown"
	}
}

// SetElem is an element of a typed set. The kind says which fields are set:
// SetAddr: Addr; SetInterval: Addr through End (inclusive); SetAddrProtoPort:
// Addr, Proto and Port; SetAddrAddr: Addr and Addr2; SetNATMap: Addr, Proto,
// Port and Slot map to Addr2 and ToPort.
type SetElem struct {
	Addr  netip.Addr
	End   netip.Addr
	Addr2 netip.Addr
	Proto Protocol
	Port  uint16
	// Slot and ToPort: SetNATMap only.
	Slot, ToPort uint16
}

// NATKey is the key of a SetNATMap element.
type NATKey struct {
	Addr  netip.Addr
	Proto Protocol
	Port  uint16
	Slot  uint16
}

// NATElem is the SetNATMap element mapping k to to.
func NATElem(k NATKey, to netip.AddrPort) SetElem {
	return SetElem{Addr: k.Addr, Proto: k.Proto, Port: k.Port, Slot: k.Slot, Addr2: to.Addr(), ToPort: to.Port()}
}

// NATKey and NATTo are a SetNATMap element's key and value.
func (e SetElem) NATKey() NATKey {
	return NATKey{Addr: e.Addr, Proto: e.Proto, Port: e.Port, Slot: e.Slot}
}
func (e SetElem) NATTo() netip.AddrPort { return netip.AddrPortFrom(e.Addr2, e.ToPort) }
func (e SetElem) isNAT() bool           { return e.Addr2.IsValid() && e.Proto != "" }

func (e SetElem) String() string {
	switch {
	case e.isNAT():
		return fmt.Sprintf("%s . %s . %d . %d : %s", e.Addr, e.Proto, e.Port, e.Slot, e.NATTo())
	case e.End.IsValid():
		return e.Addr.String() + "-" + e.End.String()
	case e.Addr2.IsValid():
		return e.Addr.String() + " . " + e.Addr2.String()
	case e.Proto != "":
		return fmt.Sprintf("%s . %s . %d", e.Addr, e.Proto, e.Port)
	default:
		return e.Addr.String()
	}
}

// unmapped is e with IPv4-mapped IPv6 addresses as IPv4 (as the kernel
// stores them).
func (e SetElem) unmapped() SetElem {
	unmap := func(a netip.Addr) netip.Addr {
		if a.IsValid() {
			return a.Unmap()
		}
		return a
	}
	e.Addr, e.End, e.Addr2 = unmap(e.Addr), unmap(e.End), unmap(e.Addr2)
	return e
}

// check refuses an element that is not of kind k in family f.
func (e SetElem) check(k SetKind, f Family) error {
	sameFamily := func(a netip.Addr) bool { return a.IsValid() && FamilyOf(a) == f && !a.Is4In6() }
	ok := sameFamily(e.Addr)
	switch k {
	case SetAddr:
		ok = ok && !e.End.IsValid() && !e.Addr2.IsValid() && e.Proto == "" && e.Port == 0
	case SetInterval:
		ok = ok && sameFamily(e.End) && e.Addr.Compare(e.End) <= 0 && !e.Addr2.IsValid() && e.Proto == "" && e.Port == 0
	case SetAddrProtoPort:
		ok = ok && !e.End.IsValid() && !e.Addr2.IsValid() && protocolName(e.Proto.Number()) == e.Proto
	case SetAddrAddr:
		ok = ok && !e.End.IsValid() && sameFamily(e.Addr2) && e.Proto == "" && e.Port == 0
	case SetNATMap:
		ok = ok && !e.End.IsValid() && sameFamily(e.Addr2) && protocolName(e.Proto.Number()) == e.Proto
	default:
		ok = false
	}
	if k != SetNATMap && (e.Slot != 0 || e.ToPort != 0) {
		ok = false
	}
	if !ok {
		return fmt.Errorf("element %s does not fit a set of %s in family %s", e, k, f)
	}
	return nil
}

func compareElems(a, b SetElem) int {
	return cmp.Or(a.Addr.Compare(b.Addr), a.End.Compare(b.End), a.Addr2.Compare(b.Addr2),
		strings.Compare(string(a.Proto), string(b.Proto)), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Slot, b.Slot), cmp.Compare(a.ToPort, b.ToPort))
}

func sortElems(es []SetElem) { slices.SortFunc(es, compareElems) }

// TypedSet is a typed named set: its kind and its elements.
type TypedSet struct {
	Kind  SetKind
	Elems map[SetElem]bool
}

// Contains reports whether the set holds key: the element itself, or for
// an interval set, a range holding key's address.
func (s TypedSet) Contains(key SetElem) bool {
	if s.Kind != SetInterval {
		return s.Elems[key]
	}
	for r := range s.Elems {
		if r.Addr.BitLen() == key.Addr.BitLen() && r.Addr.Compare(key.Addr) <= 0 && key.Addr.Compare(r.End) <= 0 {
			return true
		}
	}
	return false
}

// sorted lists the elements in order.
func (s TypedSet) sorted() []SetElem {
	out := make([]SetElem, 0, len(s.Elems))
	for e := range s.Elems {
		out = append(out, e)
	}
	sortElems(out)
	return out
}

// Ranges are the addresses within include and outside except, as the
// elements of an interval set (an ipBlock's cidr minus its except): both
// families, disjoint, sorted, adjacent ranges merged.
func Ranges(include, except []netip.Prefix) []SetElem {
	return subtractRanges(normalizeRanges(prefixRanges(include)), normalizeRanges(prefixRanges(except)))
}

func prefixRanges(ps []netip.Prefix) []SetElem {
	out := make([]SetElem, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, RangeOf(p))
		}
	}
	return out
}

// RangeOf is the range of the addresses of p.
func RangeOf(p netip.Prefix) SetElem {
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() {
		a, bits = a.Unmap(), max(bits-96, 0)
	}
	p = netip.PrefixFrom(a, bits).Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return SetElem{Addr: p.Addr(), End: last}
}

// normalizeRanges merges overlapping and adjacent ranges into disjoint,
// sorted ones. Elements that are no ranges are left as they are, for
// the writes to refuse.
func normalizeRanges(rs []SetElem) []SetElem {
	var good, bad []SetElem
	for _, r := range rs {
		r = r.unmapped()
		if r.Addr.IsValid() && r.End.IsValid() && r.Addr.BitLen() == r.End.BitLen() && r.Addr.Compare(r.End) <= 0 {
			good = append(good, r)
		} else {
			bad = append(bad, r)
		}
	}
	sortElems(good)
	var out []SetElem
	for _, r := range good {
		if n := len(out); n > 0 && out[n-1].Addr.BitLen() == r.Addr.BitLen() {
			last := &out[n-1]
			after := last.End.Next() // invalid: last reaches the family's end
			if !after.IsValid() || r.Addr.Compare(after) <= 0 {
				if r.End.Compare(last.End) > 0 {
					last.End = r.End
				}
				continue
			}
		}
		out = append(out, r)
	}
	return append(out, bad...)
}

// subtractRanges is in minus ex, both normalized.
func subtractRanges(in, ex []SetElem) []SetElem {
	var out []SetElem
	for _, r := range in {
		cur := r.Addr
		for _, x := range ex {
			if !cur.IsValid() || cur.Compare(r.End) > 0 {
				break
			}
			if x.Addr.BitLen() != r.Addr.BitLen() || x.End.Compare(cur) < 0 || x.Addr.Compare(r.End) > 0 {
				continue
			}
			if x.Addr.Compare(cur) > 0 {
				out = append(out, SetElem{Addr: cur, End: x.Addr.Prev()})
			}
			cur = x.End.Next()
		}
		if cur.IsValid() && cur.Compare(r.End) <= 0 {
			out = append(out, SetElem{Addr: cur, End: r.End})
		}
	}
	return out
}
