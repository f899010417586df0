// Package cidr splits cluster CIDRs (one IPv4 and/or one IPv6) into node pod
// CIDRs. It is pure: the operator feeds it the CIDRs it sees on Nodes and
// writes the ones it hands out.
package cidr

import (
	"net/netip"
	"sync"
)

// Allocator hands out one node CIDR per configured family. It is safe for
// concurrent use.
type Allocator struct {
	mu    sync.Mutex
	pools []*Pool
}

// New makes an allocator from validated pools (see Config.Parse).
func New(specs []PoolSpec) *Allocator {
	a := &Allocator{}
	for _, s := range specs {
		a.pools = append(a.pools, newPool(s.Prefix, s.MaskSize))
	}
	return a
}

// Allocate returns one free node CIDR per pool, in pool order, and marks
// them used. When a pool is exhausted nothing is marked and the error is an
// *ExhaustedError naming that pool.
func (a *Allocator) Allocate() ([]netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]netip.Prefix, 0, len(a.pools))
	for _, p := range a.pools {
		c, err := p.Allocate()
		if err != nil {
			for i, got := range out {
				a.pools[i].Release(got)
			}
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Occupy marks CIDRs assigned elsewhere as used. CIDRs outside every pool
// are ignored.
func (a *Allocator) Occupy(cidrs ...netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range cidrs {
		for _, p := range a.pools {
			p.Occupy(c)
		}
	}
}

// Release frees CIDRs (those of a deleted node). CIDRs outside every pool
// are ignored.
func (a *Allocator) Release(cidrs ...netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range cidrs {
		for _, p := range a.pools {
			p.Release(c)
		}
	}
}

// PoolStats is a snapshot of one pool's use.
type PoolStats struct {
	Name  string
	Used  int
	Total int
}

// Stats reports each pool's use, in pool order.
func (a *Allocator) Stats() []PoolStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PoolStats, 0, len(a.pools))
	for _, p := range a.pools {
		out = append(out, PoolStats{Name: p.Name(), Used: p.Used(), Total: p.Size()})
	}
	return out
}
