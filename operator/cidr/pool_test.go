package cidr

import (
	"errors"
	"net/netip"
	"testing"
)

func mustPool(t *testing.T, prefix string, mask int) *Pool {
	t.Helper()
	return newPool(netip.MustParsePrefix(prefix), mask)
}

func TestPoolAllocatesInOrderAndExhausts(t *testing.T) {
	p := mustPool(t, "198.19.0.0/22", 24)
	want := []string{"198.19.0.0/24", "198.19.1.0/24", "198.19.2.0/24", "198.19.3.0/24"}
	for _, w := range want {
		got, err := p.Allocate()
		if err != nil {
			t.Fatalf("Allocate: %v", err)
		}
		if got.String() != w {
			t.Fatalf("Allocate = %s, want %s", got, w)
		}
	}
	_, err := p.Allocate()
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("Allocate on a full pool: err = %v, want *ExhaustedError", err)
	}
	if ex.Pool.String() != "198.19.0.0/22" || ex.Size != 4 {
		t.Fatalf("ExhaustedError = %+v", ex)
	}
	if msg := err.Error(); msg != "pod CIDR pool 198.19.0.0/22 is exhausted: all 4 /24 node CIDRs are in use (free one by deleting a Node, or add room with a larger --cluster-cidrs or a larger --node-cidr-mask-size-ipv4)" {
		t.Fatalf("message = %q", msg)
	}
	if p.Used() != 4 || p.Size() != 4 {
		t.Fatalf("Used/Size = %d/%d", p.Used(), p.Size())
	}
	// Freeing one makes exactly that one available again.
	if n := p.Release(netip.MustParsePrefix("198.19.2.0/24")); n != 1 {
		t.Fatalf("Release freed %d, want 1", n)
	}
	got, err := p.Allocate()
	if err != nil || got.String() != "198.19.2.0/24" {
		t.Fatalf("Allocate after release = %v, %v; want 198.19.2.0/24", got, err)
	}
}

func TestPoolReleasedCIDRsAreReusedLast(t *testing.T) {
	p := mustPool(t, "198.19.0.0/16", 24)
	first, _ := p.Allocate()
	p.Allocate()
	p.Release(first)
	got, _ := p.Allocate()
	if got == first {
		t.Fatalf("released %s handed out again before the rest of the pool", first)
	}
}

func TestPoolIPv6(t *testing.T) {
	p := mustPool(t, "2001:db8:100::/56", 64)
	if p.Size() != 256 {
		t.Fatalf("Size = %d, want 256", p.Size())
	}
	a, _ := p.Allocate()
	b, _ := p.Allocate()
	if a.String() != "2001:db8:100::/64" || b.String() != "2001:db8:100:1::/64" {
		t.Fatalf("got %s %s", a, b)
	}
	// Crossing the 64-bit boundary of the address.
	q := mustPool(t, "2001:db8:0:ff00::/56", 72)
	q.Occupy(netip.MustParsePrefix("2001:db8:0:ff00::/72"))
	c, _ := q.Allocate()
	if c.String() != "2001:db8:0:ff00:100::/72" {
		t.Fatalf("got %s", c)
	}
	if !q.IsUsed(c) {
		t.Fatalf("%s not used after Allocate", c)
	}
}

func TestPoolBigIPv6(t *testing.T) {
	p := mustPool(t, "2001:db8::/48", 64)
	if p.Size() != 65536 {
		t.Fatalf("Size = %d", p.Size())
	}
	seen := make(map[netip.Prefix]bool, 65536)
	for i := 0; i < 65536; i++ {
		c, err := p.Allocate()
		if err != nil {
			t.Fatalf("Allocate #%d: %v", i, err)
		}
		if seen[c] || !p.Contains(c) || c.Bits() != 64 {
			t.Fatalf("Allocate #%d = %s: duplicate or outside the pool", i, c)
		}
		seen[c] = true
	}
	if _, err := p.Allocate(); err == nil {
		t.Fatal("Allocate on a full /48 pool succeeded")
	}
	last := netip.MustParsePrefix("2001:db8:0:ffff::/64")
	if !seen[last] {
		t.Fatalf("%s never handed out", last)
	}
}

func TestPoolOccupy(t *testing.T) {
	tests := []struct {
		name   string
		cidr   string
		marked int
	}{
		{"exact", "198.19.5.0/24", 1},
		{"smaller marks its node CIDR", "198.19.6.128/25", 1},
		{"larger marks all it covers", "198.19.8.0/22", 4},
		{"not masked", "198.19.9.7/24", 1},
		{"outside", "10.0.0.0/24", 0},
		{"other family", "2001:db8::/64", 0},
		{"covers the pool", "198.0.0.0/8", 256},
		{"invalid", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPool(t, "198.19.0.0/16", 24)
			var c netip.Prefix
			if tt.cidr != "" {
				c = netip.MustParsePrefix(tt.cidr)
			}
			if got := p.Occupy(c); got != tt.marked {
				t.Fatalf("Occupy(%s) marked %d, want %d", tt.cidr, got, tt.marked)
			}
			if got := p.Occupy(c); got != 0 {
				t.Fatalf("second Occupy(%s) marked %d, want 0", tt.cidr, got)
			}
			if p.Used() != tt.marked {
				t.Fatalf("Used = %d, want %d", p.Used(), tt.marked)
			}
			for i := 0; i < p.Size()-tt.marked; i++ {
				got, err := p.Allocate()
				if err != nil {
					t.Fatalf("Allocate: %v", err)
				}
				if c.IsValid() && got.Overlaps(c) {
					t.Fatalf("Allocate = %s, overlaps occupied %s", got, c)
				}
			}
			if _, err := p.Allocate(); err == nil {
				t.Fatal("pool not full after allocating every free CIDR")
			}
		})
	}
}

func TestPoolReleaseSmallerFreesNothing(t *testing.T) {
	p := mustPool(t, "198.19.0.0/16", 24)
	p.Occupy(netip.MustParsePrefix("198.19.6.0/25"))
	if n := p.Release(netip.MustParsePrefix("198.19.6.0/25")); n != 0 {
		t.Fatalf("Release of a /25 freed %d node CIDRs, want 0", n)
	}
	p.Occupy(netip.MustParsePrefix("198.19.8.0/23"))
	if n := p.Release(netip.MustParsePrefix("198.19.8.0/23")); n != 2 {
		t.Fatalf("Release of a /23 freed %d, want 2", n)
	}
}

func TestBitmapScan(t *testing.T) {
	b := newBitmap(130)
	for i := 0; i < 130; i++ {
		if i != 64 && i != 129 {
			b.set(i)
		}
	}
	if got := b.nextFree(0); got != 64 {
		t.Fatalf("nextFree(0) = %d", got)
	}
	if got := b.nextFree(65); got != 129 {
		t.Fatalf("nextFree(65) = %d", got)
	}
	b.set(129)
	if got := b.nextFree(65); got != 64 {
		t.Fatalf("nextFree(65) wrapping = %d", got)
	}
	b.set(64)
	if got := b.nextFree(3); got != -1 {
		t.Fatalf("nextFree on full = %d", got)
	}
}
