package nft

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
)

// typedSetObj is typed set name of kind k in family f.
func typedSetObj(f Family, name string, k SetKind) *nftables.Set {
	s := &nftables.Set{Table: table(f), Name: name, KeyType: addrType(f)}
	switch k {
	case SetInterval:
		s.Interval = true
	case SetAddrProtoPort:
		s.Concatenation = true
		s.KeyType = nftables.MustConcatSetType(addrType(f), nftables.TypeInetProto, nftables.TypeInetService)
	case SetAddrAddr:
		s.Concatenation = true
		s.KeyType = nftables.MustConcatSetType(addrType(f), addrType(f))
	case SetNATMap:
		s.IsMap, s.Concatenation = true, true
		s.KeyType = nftables.MustConcatSetType(addrType(f), nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark)
		s.DataType = nftables.MustConcatSetType(addrType(f), nftables.TypeInetService)
	}
	return s
}

// setKindOf is the kind of a set the kernel has (setKindUnknown for one
// typedSetObj would not create).
func setKindOf(f Family, s *nftables.Set) SetKind {
	if s.HasTimeout {
		return setKindUnknown
	}
	for _, k := range []SetKind{SetAddr, SetInterval, SetAddrProtoPort, SetAddrAddr, SetNATMap} {
		w := typedSetObj(f, "", k)
		if s.KeyType.Name == w.KeyType.Name && s.KeyType.Bytes == w.KeyType.Bytes &&
			s.Interval == w.Interval && s.Concatenation == w.Concatenation && s.IsMap == w.IsMap &&
			(!s.IsMap || s.DataType.Name == w.DataType.Name && s.DataType.Bytes == w.DataType.Bytes) {
			return k
		}
	}
	return setKindUnknown
}

// kernelElems are the kernel's elements of es, of kind k. A range is a
// start element and an end element one past its last address, flagged
// NFT_SET_ELEM_INTERVAL_END (none when the range reaches the family's last
// address): that is how interval sets store ranges.
func kernelElems(k SetKind, es []SetElem) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(es))
	for _, e := range es {
		key := e.Addr.AsSlice()
		switch k {
		case SetInterval:
			out = append(out, nftables.SetElement{Key: key})
			if end := e.End.Next(); end.IsValid() {
				out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
			}
			continue
		case SetAddrProtoPort:
			key = appendProtoPort(key, e.Proto, e.Port)
		case SetAddrAddr:
			key = append(key, e.Addr2.AsSlice()...)
		case SetNATMap:
			key = binary.NativeEndian.AppendUint32(appendProtoPort(key, e.Proto, e.Port), uint32(e.Slot))
			val := binary.BigEndian.AppendUint16(e.Addr2.AsSlice(), e.ToPort)
			out = append(out, nftables.SetElement{Key: key, Val: append(val, 0, 0)})
			continue
		}
		out = append(out, nftables.SetElement{Key: key})
	}
	return out
}

// decodeElems reads a typed set's kernel elements back. It reports false
// when they are not what kernelElems writes (an element of another shape,
// an interval set's ends not in pairs): the set is then emptied and
// refilled.
func decodeElems(f Family, k SetKind, els []nftables.SetElement) (map[SetElem]bool, bool) {
	out := map[SetElem]bool{}
	if k == SetInterval {
		ranges, ok := decodeRanges(f, els)
		for _, r := range ranges {
			out[r] = true
		}
		return out, ok
	}
	ok := true
	for _, el := range els {
		var e SetElem
		a, rest, good := cutAddr(f, el.Key)
		e.Addr = a
		switch k {
		case SetAddrProtoPort:
			e.Proto, e.Port, good = cutProtoPort(rest)
			good = good && len(rest) == 8
		case SetAddrAddr:
			e.Addr2, rest, good = cutAddr(f, rest)
			good = good && len(rest) == 0
		case SetNATMap:
			e.Proto, e.Port, good = cutProtoPort(rest)
			good = good && len(rest) == 12
			if good {
				e.Slot = uint16(binary.NativeEndian.Uint32(rest[8:]))
				var val []byte
				e.Addr2, val, good = cutAddr(f, el.Val)
				good = good && len(val) == 4 && binary.NativeEndian.Uint32(rest[8:]) <= 0xffff
				if good {
					e.ToPort = binary.BigEndian.Uint16(val)
				}
			}
		default:
			good = good && len(rest) == 0
		}
		if !good || el.IntervalEnd {
			ok = false
			continue
		}
		out[e] = true
	}
	return out, ok
}

// decodeRanges pairs an interval set's start and end elements.
func decodeRanges(f Family, els []nftables.SetElement) ([]SetElem, bool) {
	els = slices.Clone(els)
	slices.SortFunc(els, func(a, b nftables.SetElement) int { return bytes.Compare(a.Key, b.Key) })
	var out []SetElem
	ok := true
	for i := 0; i < len(els); i++ {
		start, rest, good := cutAddr(f, els[i].Key)
		if !good || len(rest) != 0 || els[i].IntervalEnd {
			ok = false
			continue
		}
		if i+1 == len(els) {
			out = append(out, SetElem{Addr: start, End: lastAddr(f)})
			break
		}
		next, rest, good := cutAddr(f, els[i+1].Key)
		if !good || len(rest) != 0 || next.Compare(start) <= 0 {
			ok = false
			continue
		}
		out = append(out, SetElem{Addr: start, End: next.Prev()})
		if els[i+1].IntervalEnd {
			i++
		} else {
			ok = false // a start ended by the next start
		}
	}
	return out, ok
}

// lastAddr is the last address of family f.
func lastAddr(f Family) netip.Addr {
	b := bytes.Repeat([]byte{0xff}, addrLen(f))
	a, _ := netip.AddrFromSlice(b)
	return a
}

// typedElements adds or deletes typed set elements, a range's two kernel
// elements always in one message.
func typedElements(c *nftables.Conn, b *batch, f Family, name string, k SetKind, es []SetElem, del bool) error {
	per := elemsPerMessage
	if k == SetInterval {
		per /= 2
	}
	s := typedSetObj(f, name, k)
	for len(es) > 0 {
		n := min(len(es), per)
		if err := sendElements(c, b, s, kernelElems(k, es[:n]), del, 4); err != nil {
			return err
		}
		es = es[n:]
	}
	return nil
}

// typedSets creates, recreates and empties typed sets and writes their
// elements, before any rule that uses them is written. A set recreated
// with another kind has its users flushed first (chains rewrites them); a
// dynamic set dropped from the ruleset is emptied now and deleted with the
// next write, once no rule uses it; a static one only loses its elements.
func (w *write) typedSets() error {
	for _, n := range w.ch.delTyped {
		switch {
		case w.ch.recreated(n):
			for _, user := range usersOf(w.want, n) {
				if !w.ch.newChains[user] {
					w.c.FlushChain(&nftables.Chain{Name: user, Table: w.t})
				}
			}
			w.c.DelSet(&nftables.Set{Table: w.t, Name: n})
		case !w.k.Part.staticSet(n):
			w.c.FlushSet(&nftables.Set{Table: w.t, Name: n})
		default:
			continue
		}
		if err := w.b.add(1); err != nil {
			return wrap("deleting typed sets", err)
		}
	}
	for _, n := range w.ch.addTyped {
		if err := w.c.AddSet(typedSetObj(w.f, n, w.ch.typedKinds[n]), nil); err != nil {
			return wrap("set "+n, err)
		}
		if err := w.b.add(1); err != nil {
			return wrap("creating typed sets", err)
		}
	}
	for _, n := range w.ch.flushTyped {
		w.c.FlushSet(&nftables.Set{Table: w.t, Name: n})
		if err := w.b.add(1); err != nil {
			return wrap("emptying typed sets", err)
		}
	}
	// Deletions first: a range split or moved is deleted before its
	// parts are added (the kernel refuses overlapping ranges).
	for _, n := range sortedKeys(w.ch.delTypedElems) {
		if w.dropped(n) {
			continue // emptied above
		}
		if err := typedElements(w.c, w.b, w.f, n, w.ch.typedKinds[n], w.ch.delTypedElems[n], true); err != nil {
			return wrap("deleting elements of set "+n, err)
		}
	}
	// DNAT maps first: a destination is routed before anything that
	// announces it (a masquerade mark, a set a probe reads) is in place.
	adds := sortedKeys(w.ch.addTypedElems)
	slices.SortStableFunc(adds, func(a, b string) int {
		return cmp.Compare(addOrder(w.ch.typedKinds[a]), addOrder(w.ch.typedKinds[b]))
	})
	for _, n := range adds {
		if err := typedElements(w.c, w.b, w.f, n, w.ch.typedKinds[n], w.ch.addTypedElems[n], false); err != nil {
			return wrap("adding elements to set "+n, err)
		}
	}
	return nil
}

// addOrder sorts DNAT maps before the other typed sets.
func addOrder(k SetKind) int {
	if k == SetNATMap {
		return 0
	}
	return 1
}

// dropped reports a dynamic typed set this write deletes (not recreates).
func (w *write) dropped(n string) bool {
	return slices.Contains(w.ch.delTyped, n) && !w.ch.recreated(n) && !w.k.Part.staticSet(n)
}

// checkChanges refuses typed sets the part does not own, elements not of
// their set's kind and family, and rules the compiler would misread.
func checkChanges(p *Part, f Family, ch *Changes, want *Ruleset) error {
	for _, names := range [][]string{ch.addTyped, ch.delTyped, ch.flushTyped, sortedKeys(ch.addTypedElems), sortedKeys(ch.delTypedElems)} {
		for _, n := range names {
			if !p.ownsTypedSet(n) {
				return fmt.Errorf("set %s is not part %s's (Part.TypedSets, Part.SetPrefixes)", n, p.Name)
			}
		}
	}
	for _, n := range sortedKeys(ch.addTypedElems) {
		for _, e := range ch.addTypedElems[n] {
			if err := e.check(ch.typedKinds[n], f); err != nil {
				return fmt.Errorf("set %s: %w", n, err)
			}
		}
	}
	for _, n := range ch.writeChains {
		for _, r := range want.Chains[n] {
			if err := r.check(f); err != nil {
				return fmt.Errorf("chain %s: %w", n, err)
			}
		}
	}
	return nil
}

// readTypedSet reads typed set s of part p into d.
func readTypedSet(c *nftables.Conn, p *Part, f Family, s *nftables.Set, d *Digest, settling bool) error {
	kind := setKindOf(f, s)
	ts := TypedSet{Kind: kind, Elems: map[SetElem]bool{}}
	if kind != setKindUnknown {
		els, err := setElements(c, s, settling)
		if err != nil {
			return fmt.Errorf("listing set %s: %w", s.Name, err)
		}
		var ok bool
		if ts.Elems, ok = decodeElems(f, kind, els); !ok {
			d.reflush[s.Name] = true
		}
	}
	d.TypedSets[s.Name] = ts
	if p.staticSet(s.Name) {
		d.static[s.Name] = true
	}
	return nil
}
