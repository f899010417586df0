package nft

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Registers: NFT_REG_1 is the 128-bit register 1; 32-bit registers start
// at NFT_REG32_00 (8) and overlay it, which is how concatenated keys are
// loaded (address, then protocol, then port, each padded to 4 bytes).
const (
	reg1    = 1
	reg2    = 2
	reg32_0 = 8
)

// udataFingerprint is a private userdata TLV type (nft ignores types it
// does not know) holding a hash of the rule's model text, so that a rule
// changed or replaced by hand is recognised without decoding expressions.
const udataFingerprint userdata.Type = 0xf0

// Fingerprint is the identity of a rule's model text as stored in the
// kernel (a hash, to keep large tables small).
func Fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return string(sum[:12])
}

func ruleUserData(r Rule) []byte {
	return userdata.Append(nil, udataFingerprint, []byte(Fingerprint(r.String())))
}

func tableFamily(f Family) nftables.TableFamily {
	if f == IPv4 {
		return nftables.TableFamilyIPv4
	}
	return nftables.TableFamilyIPv6
}

func addrType(f Family) nftables.SetDatatype {
	if f == IPv4 {
		return nftables.TypeIPAddr
	}
	return nftables.TypeIP6Addr
}

// concatenated reports whether a map's key is a concatenation.
func (k KeyKind) concatenated() bool { return k == KeyAddrProtoPort || k == KeyProtoPort }

func keyType(f Family, k KeyKind) nftables.SetDatatype {
	switch k {
	case KeyProtoPort:
		return nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	case KeyDaddr, KeySaddr:
		return addrType(f)
	default:
		return nftables.MustConcatSetType(addrType(f), nftables.TypeInetProto, nftables.TypeInetService)
	}
}

// encodeKey is a verdict map key as the kernel stores it: each field padded
// to 4 bytes.
func encodeKey(k MapKey) []byte {
	var b []byte
	if k.Addr.IsValid() {
		b = append(b, k.Addr.Unmap().AsSlice()...)
	}
	if k.Proto == "" {
		return b // KeyDaddr, KeySaddr
	}
	return appendProtoPort(b, k.Proto, k.Port)
}

func appendProtoPort(b []byte, p Protocol, port uint16) []byte {
	b = append(b, p.Number(), 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, port)
	return append(b, 0, 0)
}

func addrLen(f Family) int {
	if f == IPv6 {
		return 16
	}
	return 4
}

// cutAddr decodes the address of family f at the start of b.
func cutAddr(f Family, b []byte) (netip.Addr, []byte, bool) {
	n := addrLen(f)
	if len(b) < n {
		return netip.Addr{}, b, false
	}
	a, _ := netip.AddrFromSlice(b[:n])
	return a, b[n:], true
}

// cutProtoPort decodes a padded protocol and port at the start of b.
func cutProtoPort(b []byte) (Protocol, uint16, bool) {
	if len(b) < 8 {
		return "", 0, false
	}
	p, ok := protocolOf(b[0])
	return p, binary.BigEndian.Uint16(b[4:6]), ok
}

func decodeKey(f Family, kind KeyKind, b []byte) (MapKey, bool) {
	var k MapKey
	ok := true
	if kind != KeyProtoPort {
		if k.Addr, b, ok = cutAddr(f, b); !ok {
			return k, false
		}
		if kind == KeyDaddr || kind == KeySaddr {
			return k, len(b) == 0
		}
	}
	k.Proto, k.Port, ok = cutProtoPort(b)
	return k, ok
}

var addrOffsets = map[Family]struct{ src, dst, len uint32 }{
	IPv4: {src: 12, dst: 16, len: 4},
	IPv6: {src: 8, dst: 24, len: 16},
}

func nfproto(f Family) uint32 {
	if f == IPv4 {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}

func verdictExpr(v Verdict) *expr.Verdict {
	switch v.Kind {
	case VerdictJump:
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: v.Chain}
	case VerdictGoto:
		return &expr.Verdict{Kind: expr.VerdictGoto, Chain: v.Chain}
	case VerdictReturn:
		return &expr.Verdict{Kind: expr.VerdictReturn}
	case VerdictDrop:
		return &expr.Verdict{Kind: expr.VerdictDrop}
	default:
		return &expr.Verdict{Kind: expr.VerdictAccept}
	}
}

// Exprs compiles a model rule into nftables expressions of family f: its
// matches, then its statements, in the order Rule.String prints them.
func Exprs(f Family, r Rule) []expr.Any {
	return statements(f, r, matches(f, r))
}

func matches(f Family, r Rule) []expr.Any {
	var out []expr.Any
	off := addrOffsets[f]
	if r.CtStateNew {
		out = append(out, ctStateMatch(expr.CtStateBitNEW)...)
	}
	if r.CtState != 0 {
		out = append(out, ctStateMatch(uint32(r.CtState))...)
	}
	if r.MarkUnset {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(MasqMark), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: make([]byte, 4)})
	}
	if r.Saddr.IsValid() {
		out = append(out, prefixMatch(off.src, off.len, r.Saddr, expr.CmpOpEq)...)
	}
	for _, p := range r.SaddrNotIn {
		out = append(out, prefixMatch(off.src, off.len, p, expr.CmpOpNeq)...)
	}
	if r.SaddrSet != "" {
		out = append(out, addrLookup(off.src, off.len, r.SaddrSet, false)...)
	}
	if r.NotSaddrSet != "" {
		out = append(out, addrLookup(off.src, off.len, r.NotSaddrSet, true)...)
	}
	if r.Daddr.IsValid() {
		out = append(out, prefixMatch(off.dst, off.len, r.Daddr, expr.CmpOpEq)...)
	}
	if r.DaddrSet != "" {
		out = append(out, addrLookup(off.dst, off.len, r.DaddrSet, false)...)
	}
	if r.NotDaddrSet != "" {
		out = append(out, addrLookup(off.dst, off.len, r.NotDaddrSet, true)...)
	}
	if r.SaddrDaddrSet != "" {
		// saddr in register 1, daddr in the 32-bit registers after it.
		out = append(out,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off.src, Len: off.len},
			&expr.Payload{DestRegister: reg32_0 + off.len/4, Base: expr.PayloadBaseNetworkHeader, Offset: off.dst, Len: off.len},
			&expr.Lookup{SourceRegister: reg1, SetName: r.SaddrDaddrSet})
	}
	if r.NumgenMod > 0 && r.DNATMap() == "" {
		// In network byte order, so that < compares numbers.
		out = append(out,
			&expr.Numgen{Register: reg1, Modulus: uint32(r.NumgenMod), Type: unix.NFT_NG_RANDOM},
			&expr.Byteorder{SourceRegister: reg1, DestRegister: reg1, Op: expr.ByteorderHton, Len: 4, Size: 4},
			&expr.Cmp{Op: expr.CmpOpLt, Register: reg1, Data: binaryutil.BigEndian.PutUint32(1)})
	}
	if r.FibSaddrLocal || r.FibDaddrLocal {
		out = append(out,
			&expr.Fib{Register: reg1, FlagSADDR: r.FibSaddrLocal, FlagDADDR: r.FibDaddrLocal, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)})
	}
	if r.OIFName != "" {
		b := make([]byte, unix.IFNAMSIZ)
		copy(b, r.OIFName)
		out = append(out, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: b})
	}
	for _, n := range r.NotOIFNames {
		b := make([]byte, unix.IFNAMSIZ)
		copy(b, n)
		out = append(out, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: b})
	}
	if r.Proto != "" {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{r.Proto.Number()}})
	}
	if r.DPort != 0 && r.DPortEnd != 0 {
		out = append(out,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Range{Op: expr.CmpOpEq, Register: reg1,
				FromData: binaryutil.BigEndian.PutUint16(r.DPort), ToData: binaryutil.BigEndian.PutUint16(r.DPortEnd)})
	} else if r.DPort != 0 {
		out = append(out,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(r.DPort)})
	}
	if r.ICMPv6TypeEnd != 0 {
		out = append(out,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Range{Op: expr.CmpOpEq, Register: reg1, FromData: []byte{r.ICMPv6Type}, ToData: []byte{r.ICMPv6TypeEnd}})
	} else if r.ICMPv6Type != 0 {
		out = append(out,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{r.ICMPv6Type}})
	}
	if r.DaddrProtoPortSet != "" {
		out = append(out, addrProtoPort(off.dst, off.len)...)
		out = append(out, &expr.Lookup{SourceRegister: reg1, SetName: r.DaddrProtoPortSet})
	}
	return out
}

// ctStateMatch matches a connection in any state of mask.
func ctStateMatch(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)}}
}

// addrLookup looks the address at offset up in set (or its absence).
func addrLookup(offset, length uint32, set string, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
		&expr.Lookup{SourceRegister: reg1, SetName: set, Invert: invert}}
}

// addrProtoPort loads the key address (at offset) . l4proto . dport from
// register 1 on, each field padded to 4 bytes.
func addrProtoPort(offset, length uint32) []expr.Any {
	next := uint32(reg32_0 + length/4)
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next},
		&expr.Payload{DestRegister: next + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
}

func statements(f Family, r Rule, out []expr.Any) []expr.Any {
	off := addrOffsets[f]
	if r.SetMark || r.ClearMark {
		mask, xor := ^uint32(MasqMark), uint32(MasqMark) // mark | M
		if r.ClearMark {
			mask = ^uint32(0) // mark ^ M
		}
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(xor)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1})
	}
	if r.Update != "" {
		out = append(out,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off.src, Len: off.len},
			&expr.Dynset{SrcRegKey: reg1, SetName: r.Update, Operation: unix.NFT_DYNSET_OP_UPDATE})
	}
	if r.VMap != "" && r.DNATMap() == "" {
		switch r.VMapKey {
		case KeyAddrProtoPort:
			out = append(out, addrProtoPort(off.dst, off.len)...)
		case KeyDaddr:
			out = append(out, &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off.dst, Len: off.len})
		case KeySaddr:
			out = append(out, &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off.src, Len: off.len})
		default:
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_0},
				&expr.Payload{DestRegister: reg32_0 + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		}
		out = append(out, &expr.Lookup{SourceRegister: reg1, IsDestRegSet: true, DestRegister: 0, SetName: r.VMap})
	}
	if r.Counter {
		out = append(out, &expr.Counter{})
	}
	if r.Masquerade {
		out = append(out, &expr.Masq{FullyRandom: r.FullyRandom})
	}
	if r.SNAT.IsValid() {
		out = append(out,
			&expr.Immediate{Register: reg1, Data: r.SNAT.Unmap().AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: nfproto(f), RegAddrMin: reg1, FullyRandom: r.FullyRandom})
	}
	if r.DNAT.IsValid() {
		out = append(out,
			&expr.Immediate{Register: reg1, Data: r.DNAT.Addr().Unmap().AsSlice()},
			&expr.Immediate{Register: reg2, Data: binaryutil.BigEndian.PutUint16(r.DNAT.Port())},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: nfproto(f), RegAddrMin: reg1, RegProtoMin: reg2, Specified: true})
	}
	if r.DNATMap() != "" {
		out = append(out, dnatMap(f, r)...)
	}
	switch r.Verdict.Kind {
	case VerdictNone:
	case VerdictReject:
		out = append(out, rejectExpr(f, r.Proto))
	default:
		out = append(out, verdictExpr(r.Verdict))
	}
	return out
}

// dnatMap is "dnat to daddr . l4proto . dport . numgen random mod N map
// @m", as nft compiles it: the key in register 1 on (the slot in host
// order, as numgen writes it), the map's address . port back into
// register 1, the port in the 32-bit register after the address.
func dnatMap(f Family, r Rule) []expr.Any {
	off := addrOffsets[f]
	port := uint32(reg32_0 + off.len/4)
	out := addrProtoPort(off.dst, off.len)
	return append(out,
		&expr.Numgen{Register: port + 2, Modulus: uint32(r.NumgenMod), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: reg1, IsDestRegSet: true, DestRegister: reg1, SetName: r.VMap},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: nfproto(f), RegAddrMin: reg1, RegAddrMax: reg1, RegProtoMin: port, RegProtoMax: port, Specified: true})
}

// rejectExpr answers TCP with a reset and everything else with ICMP port
// unreachable.
func rejectExpr(f Family, p Protocol) *expr.Reject {
	if p == TCP {
		return &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}
	}
	if f == IPv4 {
		return &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3} // port unreachable
	}
	return &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 4} // ICMPv6 port unreachable
}

func prefixMatch(offset, length uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	out := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length}}
	if !p.IsSingleIP() {
		mask := make([]byte, length)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: length, Mask: mask, Xor: make([]byte, length)})
	}
	return append(out, &expr.Cmp{Op: op, Register: reg1, Data: p.Masked().Addr().Unmap().AsSlice()})
}
