package egress

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

const ifNameSize = unix.IFNAMSIZ

// IPv4 and IPv6 header offsets of the source and destination address.
var addrOffsets = map[Family]struct{ src, dst, len uint32 }{
	IPv4: {src: 12, dst: 16, len: 4},
	IPv6: {src: 8, dst: 24, len: 16},
}

func tableFamily(f Family) nftables.TableFamily {
	if f == IPv4 {
		return nftables.TableFamilyIPv4
	}
	return nftables.TableFamilyIPv6
}

// exprs translates a model rule into nftables expressions for family f.
func exprs(f Family, r Rule) []expr.Any {
	var out []expr.Any
	if r.OIFName != "" {
		out = append(out, oifMatch(r.OIFName, expr.CmpOpEq)...)
	}
	for _, n := range r.NotOIFNames {
		out = append(out, oifMatch(n, expr.CmpOpNeq)...)
	}
	if r.Daddr.IsValid() {
		out = append(out, prefixMatch(addrOffsets[f].dst, addrOffsets[f].len, r.Daddr.Addr().AsSlice(), r.Daddr.Bits())...)
	}
	if r.Saddr.IsValid() {
		out = append(out, prefixMatch(addrOffsets[f].src, addrOffsets[f].len, r.Saddr.Addr().AsSlice(), r.Saddr.Bits())...)
	}
	out = append(out, &expr.Counter{})
	switch r.Verdict {
	case Masquerade:
		out = append(out, &expr.Masq{})
	case Drop:
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	default:
		out = append(out, &expr.Verdict{Kind: expr.VerdictReturn})
	}
	return out
}

func oifMatch(name string, op expr.CmpOp) []expr.Any {
	b := make([]byte, ifNameSize)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

func prefixMatch(offset, length uint32, network []byte, bits int) []expr.Any {
	mask := make([]byte, length)
	for i := 0; i < bits; i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: length, Mask: mask, Xor: make([]byte, length)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network},
	}
}

func comment(r Rule) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, r.String())
}

func commentOf(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}
