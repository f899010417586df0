package cidr

import (
	"fmt"
	"net/netip"
)

// Pool hands out the node-sized subnets of one cluster CIDR (one address
// family). It is not safe for concurrent use; Allocator adds the locking.
type Pool struct {
	prefix   netip.Prefix
	maskSize int
	used     *bitmap
	next     int // where the next search starts, so released CIDRs are reused last
}

// ExhaustedError says that every node CIDR of a pool is in use.
type ExhaustedError struct {
	Pool     netip.Prefix
	MaskSize int
	Size     int
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("pod CIDR pool %s is exhausted: all %d /%d node CIDRs are in use (free one by deleting a Node, or add room with a larger --cluster-cidrs or a larger --node-cidr-mask-size-%s)",
		e.Pool, e.Size, e.MaskSize, familyName(e.Pool.Addr()))
}

// newPool makes a pool; the caller has validated prefix and maskSize (see
// Config.Validate).
func newPool(prefix netip.Prefix, maskSize int) *Pool {
	return &Pool{prefix: prefix, maskSize: maskSize, used: newBitmap(1 << (maskSize - prefix.Bits()))}
}

// Prefix is the cluster CIDR the pool splits.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

// MaskSize is the prefix length of each node CIDR.
func (p *Pool) MaskSize() int { return p.maskSize }

// Size is the number of node CIDRs in the pool.
func (p *Pool) Size() int { return p.used.size }

// Used is the number of node CIDRs in use.
func (p *Pool) Used() int { return p.used.count }

// Name identifies the pool in events and metrics.
func (p *Pool) Name() string { return p.prefix.String() }

// Allocate marks the next free node CIDR used and returns it.
func (p *Pool) Allocate() (netip.Prefix, error) {
	i := p.used.nextFree(p.next)
	if i < 0 {
		return netip.Prefix{}, &ExhaustedError{Pool: p.prefix, MaskSize: p.maskSize, Size: p.Size()}
	}
	p.used.set(i)
	p.next = i + 1
	return p.subnet(i), nil
}

// Occupy marks every node CIDR that overlaps c as used (a CIDR assigned by
// someone else, possibly with another size) and returns how many were newly
// marked. CIDRs of the other family or outside the pool are ignored.
func (p *Pool) Occupy(c netip.Prefix) int {
	first, n, ok := p.span(c)
	if !ok {
		return 0
	}
	marked := 0
	for i := first; i < first+n; i++ {
		if p.used.set(i) {
			marked++
		}
	}
	return marked
}

// Release frees the node CIDRs that c covers and returns how many were
// freed. A CIDR smaller than a node CIDR frees nothing: the rest of its node
// CIDR may belong to another node, so it stays used (conservative).
func (p *Pool) Release(c netip.Prefix) int {
	if !c.IsValid() || c.Bits() > p.maskSize {
		return 0
	}
	first, n, ok := p.span(c)
	if !ok {
		return 0
	}
	freed := 0
	for i := first; i < first+n; i++ {
		if p.used.clear(i) {
			freed++
		}
	}
	return freed
}

// IsUsed reports whether the node CIDR containing c's address is in use.
func (p *Pool) IsUsed(c netip.Prefix) bool {
	first, _, ok := p.span(c)
	return ok && p.used.has(first)
}

// Contains reports whether c lies inside the pool.
func (p *Pool) Contains(c netip.Prefix) bool {
	return c.IsValid() && c.Addr().BitLen() == p.prefix.Addr().BitLen() &&
		c.Bits() >= p.prefix.Bits() && p.prefix.Contains(c.Addr())
}

// span returns the index range of the node CIDRs that overlap c.
func (p *Pool) span(c netip.Prefix) (first, n int, ok bool) {
	if !c.IsValid() || c.Addr().BitLen() != p.prefix.Addr().BitLen() || !c.Overlaps(p.prefix) {
		return 0, 0, false
	}
	c = c.Masked()
	switch {
	case c.Bits() <= p.prefix.Bits():
		return 0, p.Size(), true
	case c.Bits() >= p.maskSize:
		return p.index(c.Addr()), 1, true
	default:
		return p.index(c.Addr()), 1 << (p.maskSize - c.Bits()), true
	}
}

// index is the number of the node CIDR that holds a (a is in the pool).
func (p *Pool) index(a netip.Addr) int {
	v := toU128(a).shr(uint(a.BitLen() - p.maskSize))
	return int(v.lo & (uint64(p.Size()) - 1))
}

// subnet is node CIDR number i.
func (p *Pool) subnet(i int) netip.Prefix {
	base := p.prefix.Addr()
	v := toU128(base).or(u128{lo: uint64(i)}.shl(uint(base.BitLen() - p.maskSize)))
	return netip.PrefixFrom(v.addr(base.Is4()), p.maskSize)
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}
