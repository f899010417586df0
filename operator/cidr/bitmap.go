package cidr

import "math/bits"

// bitmap is a fixed-size set of small integers, one bit each.
type bitmap struct {
	words []uint64
	size  int
	count int
}

func newBitmap(size int) *bitmap {
	return &bitmap{words: make([]uint64, (size+63)/64), size: size}
}

func (b *bitmap) has(i int) bool {
	return b.words[i/64]&(1<<(uint(i)%64)) != 0
}

// set marks i and reports whether it was free before.
func (b *bitmap) set(i int) bool {
	w, m := i/64, uint64(1)<<(uint(i)%64)
	if b.words[w]&m != 0 {
		return false
	}
	b.words[w] |= m
	b.count++
	return true
}

// clear frees i and reports whether it was used before.
func (b *bitmap) clear(i int) bool {
	w, m := i/64, uint64(1)<<(uint(i)%64)
	if b.words[w]&m == 0 {
		return false
	}
	b.words[w] &^= m
	b.count--
	return true
}

// nextFree returns the first free index at or after start, wrapping around
// once, or -1 when every index is used.
func (b *bitmap) nextFree(start int) int {
	if b.count >= b.size {
		return -1
	}
	if start < 0 || start >= b.size {
		start = 0
	}
	if i := b.scan(start, b.size); i >= 0 {
		return i
	}
	return b.scan(0, start)
}

// scan returns the first free index in [from, to), or -1.
func (b *bitmap) scan(from, to int) int {
	for i := from; i < to; {
		w := b.words[i/64] | (uint64(1)<<(uint(i)%64) - 1) // ignore bits below i
		if w != ^uint64(0) {
			j := i/64*64 + bits.TrailingZeros64(^w)
			if j < to {
				return j
			}
			return -1
		}
		i = (i/64 + 1) * 64
	}
	return -1
}
