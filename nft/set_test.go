package nft_test

import (
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/nft"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func rangesString(es []nft.SetElem) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.String()
	}
	return strings.Join(s, " ")
}

func TestRanges(t *testing.T) {
	for _, tc := range []struct {
		include, except []netip.Prefix
		want            string
	}{
		{prefixes("0.0.0.0/0"), prefixes("198.19.1.7/32"), "0.0.0.0-198.19.1.6 198.19.1.8-255.255.255.255"},
		{prefixes("10.0.0.0/8", "10.1.0.0/16"), nil, "10.0.0.0-10.255.255.255"},
		{prefixes("10.0.0.0/25", "10.0.0.128/25"), nil, "10.0.0.0-10.0.0.255"},
		{prefixes("10.0.0.0/24"), prefixes("10.0.0.0/16"), ""},
		{prefixes("10.0.0.0/24"), prefixes("10.0.0.0/32", "10.0.0.255/32"), "10.0.0.1-10.0.0.254"},
		{prefixes("10.0.0.0/24"), prefixes("10.0.0.16/28", "10.0.0.20/30", "10.0.0.64/26"), "10.0.0.0-10.0.0.15 10.0.0.32-10.0.0.63 10.0.0.128-10.0.0.255"},
		{prefixes("::/0"), prefixes("fd00::/8"), "::-fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff fe00::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{prefixes("fd00::/64", "10.0.0.0/30"), prefixes("10.0.0.0/8"), "fd00::-fd00::ffff:ffff:ffff:ffff"},
		{prefixes("::ffff:10.0.0.0/104"), nil, "10.0.0.0-10.255.255.255"},
		{prefixes("10.0.0.7/24"), nil, "10.0.0.0-10.0.0.255"},
	} {
		if got := rangesString(nft.Ranges(tc.include, tc.except)); got != tc.want {
			t.Errorf("Ranges(%v, %v) = %q, want %q", tc.include, tc.except, got, tc.want)
		}
	}
}

// TestRangesRandom checks Ranges against the naive model: an address is in
// the result when some include holds it and no except does; the ranges
// are sorted, disjoint and not adjacent (the kernel's interval set wants
// no overlap, and one range is one pair of elements).
func TestRangesRandom(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	base := netip.MustParseAddr("10.0.0.0").As4()
	randPrefixes := func() []netip.Prefix {
		out := make([]netip.Prefix, r.Intn(5))
		for i := range out {
			b := base
			b[3] = byte(r.Intn(256))
			out[i] = netip.PrefixFrom(netip.AddrFrom4(b), 24+r.Intn(9)).Masked()
		}
		return out
	}
	for round := 0; round < 2000; round++ {
		include, except := randPrefixes(), randPrefixes()
		got := nft.Ranges(include, except)
		set := nft.TypedSet{Kind: nft.SetInterval, Elems: map[nft.SetElem]bool{}}
		for i, e := range got {
			set.Elems[e] = true
			if e.End.Less(e.Addr) {
				t.Fatalf("%v minus %v: empty range %s", include, except, e)
			}
			if i > 0 && !got[i-1].End.Next().Less(e.Addr) {
				t.Fatalf("%v minus %v: %s and %s overlap or touch", include, except, got[i-1], e)
			}
		}
		for i := 0; i < 256; i++ {
			b := base
			b[3] = byte(i)
			a := netip.AddrFrom4(b)
			want := false
			for _, p := range include {
				want = want || p.Contains(a)
			}
			for _, p := range except {
				want = want && !p.Contains(a)
			}
			if set.Contains(nft.SetElem{Addr: a}) != want {
				t.Fatalf("%v minus %v = %s: %s in it is %v, want %v", include, except, rangesString(got), a, !want, want)
			}
		}
	}
}

func TestRangeOf(t *testing.T) {
	for p, want := range map[string]string{
		"198.19.1.0/24": "198.19.1.0-198.19.1.255",
		"198.19.1.7/32": "198.19.1.7-198.19.1.7",
		"0.0.0.0/0":     "0.0.0.0-255.255.255.255",
		"fd00::/127":    "fd00::-fd00::1",
	} {
		if got := nft.RangeOf(netip.MustParsePrefix(p)).String(); got != want {
			t.Errorf("RangeOf(%s) = %s, want %s", p, got, want)
		}
	}
}
