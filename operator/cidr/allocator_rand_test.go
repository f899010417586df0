package cidr

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// naive is the obvious model: a set of used node CIDRs, listed one by one.
type naive struct {
	all  []netip.Prefix
	used map[netip.Prefix]bool
}

func newNaive(pool netip.Prefix, mask int) *naive {
	n := &naive{used: map[netip.Prefix]bool{}}
	for a := pool.Addr(); pool.Contains(a); {
		c := netip.PrefixFrom(a, mask)
		n.all = append(n.all, c)
		// Step to the next node CIDR: add 1 at bit position mask.
		next := toU128(a)
		step := u128{lo: 1}.shl(uint(a.BitLen() - mask))
		lo := next.lo + step.lo
		carry := uint64(0)
		if lo < next.lo {
			carry = 1
		}
		next = u128{hi: next.hi + step.hi + carry, lo: lo}
		a = next.addr(a.Is4())
		if a == pool.Addr() {
			break
		}
	}
	return n
}

func (n *naive) occupy(c netip.Prefix) {
	for _, s := range n.all {
		if s.Overlaps(c) {
			n.used[s] = true
		}
	}
}

func (n *naive) release(c netip.Prefix, mask int) {
	if c.Bits() > mask {
		return
	}
	for _, s := range n.all {
		if c.Contains(s.Addr()) {
			delete(n.used, s)
		}
	}
}

func TestPoolRandomAgainstModel(t *testing.T) {
	cases := []struct {
		pool string
		mask int
	}{
		{"198.19.0.0/20", 24},
		{"198.19.0.0/16", 26},
		{"2001:db8:100::/56", 64},
		{"2001:db8:0:ff00::/57", 68},
		{"198.18.0.0/15", 15 + 7},
	}
	for _, tc := range cases {
		t.Run(tc.pool, func(t *testing.T) {
			seed := uint64(len(tc.pool)*1000 + tc.mask)
			r := rand.New(rand.NewPCG(seed, 7))
			prefix := netip.MustParsePrefix(tc.pool)
			p := newPool(prefix, tc.mask)
			m := newNaive(prefix, tc.mask)
			if len(m.all) != p.Size() {
				t.Fatalf("model has %d node CIDRs, pool %d", len(m.all), p.Size())
			}
			var mine []netip.Prefix // handed out by Allocate, for Release
			for step := 0; step < 20000; step++ {
				switch op := r.IntN(10); {
				case op < 5:
					got, err := p.Allocate()
					if len(m.used) == len(m.all) {
						if err == nil {
							t.Fatalf("step %d: Allocate = %s on a full pool", step, got)
						}
						continue
					}
					if err != nil {
						t.Fatalf("step %d: Allocate: %v with %d of %d used", step, err, len(m.used), len(m.all))
					}
					if got.Bits() != tc.mask || !prefix.Contains(got.Addr()) || got.Masked() != got {
						t.Fatalf("step %d: Allocate = %s: not a /%d in %s", step, got, tc.mask, prefix)
					}
					if m.used[got] {
						t.Fatalf("step %d: Allocate = %s, which is in use", step, got)
					}
					m.used[got] = true
					mine = append(mine, got)
				case op < 8 && len(mine) > 0:
					i := r.IntN(len(mine))
					c := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					p.Release(c)
					m.release(c, tc.mask)
				default:
					// A CIDR someone else assigned: any size around the node size, maybe outside.
					base := m.all[r.IntN(len(m.all))].Addr()
					bitsAdj := r.IntN(5) - 2
					c := netip.PrefixFrom(base, tc.mask+bitsAdj).Masked()
					if r.IntN(10) == 0 {
						c = netip.MustParsePrefix("10.0.0.0/24")
					}
					p.Occupy(c)
					m.occupy(c)
					if r.IntN(4) == 0 {
						p.Release(c)
						if c.Bits() <= tc.mask {
							m.release(c, tc.mask)
						}
					}
				}
				if p.Used() != len(m.used) {
					t.Fatalf("step %d: pool says %d used, model %d", step, p.Used(), len(m.used))
				}
			}
			for _, s := range m.all {
				if p.IsUsed(s) != m.used[s] {
					t.Fatalf("%s: pool used=%v, model used=%v", s, p.IsUsed(s), m.used[s])
				}
			}
		})
	}
}
