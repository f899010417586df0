package netpol

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
)

func TestRanges(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	for _, tc := range []struct {
		blocks []*IPBlock
		want   []AddrRange
	}{
		{[]*IPBlock{{CIDR: p("10.0.0.0/8"), Except: []netip.Prefix{p("10.1.0.0/16"), p("10.1.2.0/24")}}},
			[]AddrRange{{a("10.0.0.0"), a("10.0.255.255")}, {a("10.2.0.0"), a("10.255.255.255")}}},
		{[]*IPBlock{{CIDR: p("0.0.0.0/0"), Except: []netip.Prefix{p("0.0.0.0/8"), p("255.255.255.255/32")}}},
			[]AddrRange{{a("1.0.0.0"), a("255.255.255.254")}}},
		{[]*IPBlock{{CIDR: p("10.0.0.0/24"), Except: []netip.Prefix{p("10.0.0.7/32")}}, {CIDR: p("10.0.0.7/32")}, {CIDR: p("::/0")}},
			[]AddrRange{{a("10.0.0.0"), a("10.0.0.255")}, {a("::"), a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}}},
		{[]*IPBlock{{CIDR: p("10.0.0.0/31")}, {CIDR: p("10.0.0.2/31")}, {CIDR: p("10.0.0.5/32")}},
			[]AddrRange{{a("10.0.0.0"), a("10.0.0.3")}, {a("10.0.0.5"), a("10.0.0.5")}}},
	} {
		if got := Ranges(tc.blocks...); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Ranges(%v) = %v, want %v", tc.blocks, got, tc.want)
		}
	}
}

// TestRangesRandom checks Ranges against Contains: disjoint, sorted,
// never adjacent, and holding exactly the blocks' addresses (every range
// end and the addresses beside it are probed, and random ones).
func TestRangesRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	prefix := func(v6 bool, base netip.Prefix) netip.Prefix {
		bits := min(base.Bits()+r.IntN(9), base.Addr().BitLen())
		b := base.Addr().As16()
		for i := base.Bits(); i < bits; i++ {
			off := i
			if !v6 {
				off += 96
			}
			if r.IntN(2) == 0 {
				b[off/8] |= 1 << (7 - off%8)
			}
		}
		a := netip.AddrFrom16(b)
		if !v6 {
			a = a.Unmap()
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	for range 2000 {
		v6 := r.IntN(3) == 0
		var blocks []*IPBlock
		for range 1 + r.IntN(3) {
			root := netip.MustParsePrefix("10.0.0.0/20")
			if v6 {
				root = netip.MustParsePrefix("fd00::/116")
			}
			if r.IntN(10) == 0 {
				root = netip.MustParsePrefix("0.0.0.0/0")
				if v6 {
					root = netip.MustParsePrefix("::/0")
				}
			}
			b := &IPBlock{CIDR: prefix(v6, root)}
			for range r.IntN(4) {
				if e := prefix(v6, b.CIDR); e.Bits() > b.CIDR.Bits() {
					b.Except = append(b.Except, e)
				}
			}
			blocks = append(blocks, b)
		}
		rs := Ranges(blocks...)
		in := func(x netip.Addr) bool {
			for _, b := range blocks {
				if b.Contains(x) {
					return true
				}
			}
			return false
		}
		inRanges := func(x netip.Addr) bool {
			for _, rg := range rs {
				if rg.From.Compare(x) <= 0 && x.Compare(rg.To) <= 0 {
					return true
				}
			}
			return false
		}
		var probes []netip.Addr
		for i, rg := range rs {
			if rg.From.Compare(rg.To) > 0 || i > 0 && rs[i-1].To.Next().Compare(rg.From) >= 0 {
				t.Fatalf("%v: ranges %v overlap, touch or are out of order", blocks, rs)
			}
			probes = append(probes, rg.From, rg.To, rg.From.Prev(), rg.To.Next())
		}
		for _, b := range blocks {
			probes = append(probes, b.CIDR.Addr(), lastAddr(b.CIDR), b.CIDR.Addr().Prev(), lastAddr(b.CIDR).Next())
			for _, e := range b.Except {
				probes = append(probes, e.Addr(), lastAddr(e), e.Addr().Prev(), lastAddr(e).Next())
			}
			for range 20 {
				probes = append(probes, prefix(v6, b.CIDR).Addr())
			}
		}
		for _, x := range probes {
			if x.IsValid() && in(x) != inRanges(x) {
				t.Fatalf("%v: %s is in the blocks: %v, in the ranges %v: %v", blocks, x, in(x), rs, inRanges(x))
			}
		}
	}
}
