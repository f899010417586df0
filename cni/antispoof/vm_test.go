package antispoof

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A model of the kernel running a bridge-family base chain on a frame
// entering a bridge port: the expressions the rules are made of (meta,
// payload, cmp, bitwise, lookup, counter, verdict) over the kernel's
// register file, with its break-on-failure semantics (a field beyond the
// frame, or a transport header the kernel did not find, ends the rule
// without a verdict). It runs the very expressions Rules renders, so the
// tests check behaviour, not rule text; the netns tests check the kernel
// agrees.

type vmResult struct {
	verdict string // "accept" or "drop"
	rule    int    // index of the deciding rule; -1 for the chain's policy
}

type vm struct {
	sets map[string][][]byte // set name -> keys
	klen map[string]int      // set name -> key length
}

func newVM(elements []Element) *vm {
	m := &vm{sets: map[string][][]byte{}, klen: map[string]int{}}
	for _, s := range sets(table()) {
		m.klen[s.Name] = int(s.KeyType.Bytes)
	}
	for _, e := range elements {
		m.sets[e.Set] = append(m.sets[e.Set], e.Key)
	}
	return m
}

// pktinfo is what the kernel's bridge hook works out before the chain runs
// (nft_set_pktinfo_ipv4/6_validate): the transport protocol and offset.
type pktinfo struct {
	frame    []byte
	iif      string
	tprotSet bool
	l4proto  byte
	thoff    int
}

func parse(iif string, frame []byte) pktinfo {
	p := pktinfo{frame: frame, iif: iif}
	if len(frame) < 14 {
		return p
	}
	nh := frame[14:]
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		if len(nh) >= 20 && nh[0]>>4 == 4 {
			ihl := int(nh[0]&0x0f) * 4
			frag := binary.BigEndian.Uint16(nh[6:]) & 0x1fff
			if ihl >= 20 && len(nh) >= ihl && frag == 0 {
				p.tprotSet, p.l4proto, p.thoff = true, nh[9], 14+ihl
			}
		}
	case 0x86dd:
		if len(nh) >= 40 && nh[0]>>4 == 6 {
			switch nh[6] { // no extension headers in these tests
			case 6, 17, 58:
				p.tprotSet, p.l4proto, p.thoff = true, nh[6], 14+40
			}
		}
	}
	return p
}

func regOffset(r uint32) int {
	if r >= unix.NFT_REG32_00 {
		return int(r-unix.NFT_REG32_00) * 4
	}
	return int(r-unix.NFT_REG_1) * 16
}

// run traces one frame through rules.
func (m *vm) run(rules []Rule, iif string, frame []byte) (vmResult, error) {
	p := parse(iif, frame)
	for i, r := range rules {
		v, err := m.rule(r.Exprs, p)
		if err != nil {
			return vmResult{}, fmt.Errorf("rule %d %q: %w", i, r.Comment, err)
		}
		if v != "" {
			return vmResult{verdict: v, rule: i}, nil
		}
	}
	return vmResult{verdict: "accept", rule: -1}, nil
}

func (m *vm) rule(exprs []expr.Any, p pktinfo) (string, error) {
	var regs [64]byte
	store := func(reg uint32, data []byte) {
		off := regOffset(reg)
		n := (len(data) + 3) / 4 * 4
		copy(regs[off:off+n], make([]byte, n))
		copy(regs[off:], data)
	}
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			switch e.Key {
			case expr.MetaKeyIIFNAME:
				store(e.Register, ifName(p.iif))
			case expr.MetaKeyL4PROTO:
				if !p.tprotSet {
					return "", nil
				}
				store(e.Register, []byte{p.l4proto})
			default:
				return "", fmt.Errorf("meta key %d not modelled", e.Key)
			}
		case *expr.Payload:
			var base int
			switch e.Base {
			case expr.PayloadBaseLLHeader:
				base = 0
			case expr.PayloadBaseNetworkHeader:
				base = 14
			case expr.PayloadBaseTransportHeader:
				if !p.tprotSet {
					return "", nil
				}
				base = p.thoff
			}
			start, end := base+int(e.Offset), base+int(e.Offset)+int(e.Len)
			if end > len(p.frame) {
				return "", nil
			}
			store(e.DestRegister, p.frame[start:end])
		case *expr.Cmp:
			off := regOffset(e.Register)
			eq := bytes.Equal(regs[off:off+len(e.Data)], e.Data)
			if eq != (e.Op == expr.CmpOpEq) {
				if e.Op != expr.CmpOpEq && e.Op != expr.CmpOpNeq {
					return "", fmt.Errorf("cmp op %d not modelled", e.Op)
				}
				return "", nil
			}
		case *expr.Bitwise:
			src := regOffset(e.SourceRegister)
			out := make([]byte, e.Len)
			for i := range out {
				out[i] = regs[src+i]&e.Mask[i] ^ e.Xor[i]
			}
			store(e.DestRegister, out)
		case *expr.Lookup:
			n, ok := m.klen[e.SetName]
			if !ok {
				return "", fmt.Errorf("lookup in unknown set %q", e.SetName)
			}
			off := regOffset(e.SourceRegister)
			key := regs[off : off+n]
			found := false
			for _, k := range m.sets[e.SetName] {
				found = found || bytes.Equal(k, key)
			}
			if found == e.Invert {
				return "", nil
			}
		case *expr.Counter:
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				return "accept", nil
			case expr.VerdictDrop:
				return "drop", nil
			}
			return "", fmt.Errorf("verdict %d not modelled", e.Kind)
		default:
			return "", fmt.Errorf("expression %T not modelled", e)
		}
	}
	return "", nil
}
