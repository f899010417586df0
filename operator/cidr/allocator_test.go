package cidr

import (
	"errors"
	"net/netip"
	"testing"
)

func mustAllocator(t *testing.T, cfg Config) *Allocator {
	t.Helper()
	specs, err := cfg.Parse()
	if err != nil {
		t.Fatal(err)
	}
	return New(specs)
}

func TestAllocatorDualStack(t *testing.T) {
	a := mustAllocator(t, Config{ClusterCIDRs: "198.19.0.0/23,2001:db8:100::/56", NodeMaskSizeIPv4: 24, NodeMaskSizeIPv6: 64})
	got, err := a.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "198.19.0.0/24" || got[1].String() != "2001:db8:100::/64" {
		t.Fatalf("Allocate = %v", got)
	}
	a.Allocate()
	// IPv4 is exhausted: the IPv6 CIDR must not be consumed by a failed allocation.
	_, err = a.Allocate()
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Pool.String() != "198.19.0.0/23" {
		t.Fatalf("Allocate on full IPv4 pool: %v", err)
	}
	st := a.Stats()
	if st[0] != (PoolStats{Name: "198.19.0.0/23", Used: 2, Total: 2}) || st[1] != (PoolStats{Name: "2001:db8:100::/56", Used: 2, Total: 256}) {
		t.Fatalf("Stats = %+v", st)
	}
	a.Release(got...)
	again, err := a.Allocate()
	if err != nil || again[0] != got[0] {
		t.Fatalf("Allocate after release = %v, %v", again, err)
	}
}

func TestAllocatorOccupyIgnoresForeign(t *testing.T) {
	a := mustAllocator(t, Config{ClusterCIDRs: "198.19.0.0/16", NodeMaskSizeIPv4: 24})
	a.Occupy(netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("198.19.0.0/24"))
	a.Release(netip.MustParsePrefix("10.0.0.0/24"))
	if st := a.Stats(); st[0].Used != 1 {
		t.Fatalf("Stats = %+v", st)
	}
	got, _ := a.Allocate()
	if got[0].String() != "198.19.1.0/24" {
		t.Fatalf("Allocate = %v", got)
	}
}
