package netpol

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// IPBlock is an ipBlock: the addresses of CIDR that are in none of Except.
// Prefixes are masked; every Except is a strict subset of CIDR.
type IPBlock struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// Contains says whether the block holds a.
func (b *IPBlock) Contains(a netip.Addr) bool {
	if !b.CIDR.Contains(a) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

func (b *IPBlock) String() string {
	if len(b.Except) == 0 {
		return b.CIDR.String()
	}
	ex := make([]string, len(b.Except))
	for i, e := range b.Except {
		ex[i] = e.String()
	}
	return b.CIDR.String() + " except " + strings.Join(ex, ",")
}

// AddrRange is the addresses From to To, both included, of one family.
type AddrRange struct {
	From, To netip.Addr
}

func (r AddrRange) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// Ranges are the addresses of the blocks (a rule's ipBlocks), as the
// disjoint, non-adjacent ranges an nftables interval set takes: sorted,
// IPv4 first.
func Ranges(blocks ...*IPBlock) []AddrRange {
	var out []AddrRange
	for _, b := range blocks {
		out = append(out, b.ranges()...)
	}
	slices.SortFunc(out, func(a, b AddrRange) int {
		if a.From.Is4() != b.From.Is4() {
			if a.From.Is4() {
				return -1
			}
			return 1
		}
		return cmp.Or(a.From.Compare(b.From), a.To.Compare(b.To))
	})
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if last.To.Is4() == r.From.Is4() {
				next := last.To.Next()
				if r.From.Compare(last.To) <= 0 || next == r.From {
					if r.To.Compare(last.To) > 0 {
						last.To = r.To
					}
					continue
				}
			}
		}
		merged = append(merged, r)
	}
	return merged
}

// ranges is the block as disjoint sorted ranges: CIDR minus each Except.
func (b *IPBlock) ranges() []AddrRange {
	ex := slices.Clone(b.Except)
	slices.SortFunc(ex, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	var out []AddrRange
	cur, end := b.CIDR.Addr(), lastAddr(b.CIDR)
	for _, e := range ex {
		if !cur.IsValid() {
			break
		}
		if first := e.Addr(); first.Compare(cur) > 0 {
			out = append(out, AddrRange{From: cur, To: first.Prev()})
		}
		if after := lastAddr(e).Next(); !after.IsValid() || after.Compare(cur) > 0 {
			cur = after // invalid past the last address: nothing is left
		}
	}
	if cur.IsValid() && cur.Compare(end) <= 0 {
		out = append(out, AddrRange{From: cur, To: end})
	}
	return out
}

// lastAddr is the last address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As16()
	off := 0
	if p.Addr().Is4() {
		off = 12
	}
	for i := off*8 + p.Bits(); i < 128; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	if p.Addr().Is4() {
		return netip.AddrFrom4([4]byte(a[12:]))
	}
	return netip.AddrFrom16(a)
}
