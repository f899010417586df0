package antispoof

import (
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Rule is one rule of the chain: its expressions and, as its comment, the
// same rule in nft syntax (what `nft list table bridge wgmesh` shows, and
// how the kernel's rules are compared with the wanted ones).
type Rule struct {
	Comment string
	Exprs   []expr.Any
}

// Registers of a concatenated key: the interface name fills the 16-byte
// register 1 (32-bit registers 8-11), the MAC the next two 32-bit registers,
// the address the ones after it (the layout nft itself uses).
const (
	regKey  = unix.NFT_REG_1
	regMAC  = unix.NFT_REG32_04
	regAddr = unix.NFT_REG32_06
)

// Header fields (offsets from the link, network and transport headers).
const (
	etherSaddr  = 6
	etherType   = 12
	ipv4Saddr   = 12
	ipv6Saddr   = 8
	arpHeader   = 0 // htype(2) ptype(2) hlen(1) plen(1)
	arpSha      = 8
	arpSpa      = 14
	icmpv6Type  = 0
	ndTarget    = 8
	protoICMPv6 = 58

	icmpv6RouterAdvert   = 134
	icmpv6NeighborAdvert = 136
	icmpv6Redirect       = 137
)

var (
	etherTypeIPv4 = []byte{0x08, 0x00}
	etherTypeIPv6 = []byte{0x86, 0xdd}
	etherTypeARP  = []byte{0x08, 0x06}
	// Ethernet (1), IPv4 (0x0800), hlen 6, plen 4.
	arpEthernetIPv4 = []byte{0x00, 0x01, 0x08, 0x00, 6, 4}
)

// Rules are the chain's rules, in order. The chain's policy is accept: a
// frame from a port that is not registered passes; a frame from a
// registered port passes only through one of the accept rules.
func Rules() []Rule {
	return []Rule{
		{
			Comment: "iifname != @" + SetPorts + " accept",
			Exprs: all(
				lookup(SetPorts, true, iifname(regKey)),
				accept(),
			),
		},
		{
			Comment: "ether type ip iifname . ether saddr . ip saddr @" + SetIPv4 + " accept",
			Exprs: all(
				etherTypeIs(etherTypeIPv4),
				lookup(SetIPv4, false, iifname(regKey), load(expr.PayloadBaseLLHeader, etherSaddr, macLen, regMAC), load(expr.PayloadBaseNetworkHeader, ipv4Saddr, 4, regAddr)),
				accept(),
			),
		},
		{
			Comment: "ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 " +
				"iifname . ether saddr . arp saddr ip @" + SetIPv4 + " iifname . arp saddr ether . arp saddr ip @" + SetIPv4 + " accept",
			Exprs: all(
				etherTypeIs(etherTypeARP),
				cmpEq(load(expr.PayloadBaseNetworkHeader, arpHeader, uint32(len(arpEthernetIPv4)), regKey), arpEthernetIPv4),
				lookup(SetIPv4, false, iifname(regKey), load(expr.PayloadBaseLLHeader, etherSaddr, macLen, regMAC), load(expr.PayloadBaseNetworkHeader, arpSpa, 4, regAddr)),
				lookup(SetIPv4, false, iifname(regKey), load(expr.PayloadBaseNetworkHeader, arpSha, macLen, regMAC), load(expr.PayloadBaseNetworkHeader, arpSpa, 4, regAddr)),
				accept(),
			),
		},
		{
			Comment: "ether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-router-advert counter drop",
			Exprs:   all(icmpv6Is(icmpv6RouterAdvert), counterDrop()),
		},
		{
			Comment: "ether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-redirect counter drop",
			Exprs:   all(icmpv6Is(icmpv6Redirect), counterDrop()),
		},
		{
			// A neighbour advertisement answers for its target address:
			// only for the pod's own addresses (or a link-local one).
			Comment: "ether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-neighbor-advert @th,64,16 & 0xffc0 != 0xfe80 " +
				"iifname . ether saddr . @th,64,128 != @" + SetIPv6 + " counter drop",
			Exprs: all(
				icmpv6Is(icmpv6NeighborAdvert),
				maskedCmp(expr.CmpOpNeq, load(expr.PayloadBaseTransportHeader, ndTarget, 2, regKey), []byte{0xff, 0xc0}, []byte{0xfe, 0x80}),
				lookup(SetIPv6, true, iifname(regKey), load(expr.PayloadBaseLLHeader, etherSaddr, macLen, regMAC), load(expr.PayloadBaseTransportHeader, ndTarget, 16, regAddr)),
				counterDrop(),
			),
		},
		{
			Comment: "ether type ip6 iifname . ether saddr . ip6 saddr @" + SetIPv6 + " accept",
			Exprs: all(
				etherTypeIs(etherTypeIPv6),
				lookup(SetIPv6, false, iifname(regKey), load(expr.PayloadBaseLLHeader, etherSaddr, macLen, regMAC), load(expr.PayloadBaseNetworkHeader, ipv6Saddr, 16, regAddr)),
				accept(),
			),
		},
		{
			Comment: "ether type ip6 ip6 saddr fe80::/10 iifname . ether saddr @" + SetMACs + " accept",
			Exprs: all(
				etherTypeIs(etherTypeIPv6),
				maskedCmp(expr.CmpOpEq, load(expr.PayloadBaseNetworkHeader, ipv6Saddr, 2, regKey), []byte{0xff, 0xc0}, []byte{0xfe, 0x80}),
				lookup(SetMACs, false, iifname(regKey), load(expr.PayloadBaseLLHeader, etherSaddr, macLen, regMAC)),
				accept(),
			),
		},
		{
			Comment: "ether type ip6 ip6 saddr :: iifname . ether saddr @" + SetMACs + " accept",
			Exprs: all(
				etherTypeIs(etherTypeIPv6),
				cmpEq(load(expr.PayloadBaseNetworkHeader, ipv6Saddr, 16, regKey), make([]byte, 16)),
				lookup(SetMACs, false, iifname(regKey), load(expr.PayloadBaseLLHeader, etherSaddr, macLen, regMAC)),
				accept(),
			),
		},
		{
			Comment: "counter drop",
			Exprs:   counterDrop(),
		},
	}
}

func all(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func iifname(reg uint32) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg}}
}

func load(base expr.PayloadBase, offset, length, reg uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: reg, Base: base, Offset: offset, Len: length}}
}

// lookup loads the key's fields (into regKey and the registers after it)
// and looks the concatenation up in set.
func lookup(set string, invert bool, key ...[]expr.Any) []expr.Any {
	return append(all(key...), &expr.Lookup{SourceRegister: regKey, SetName: set, Invert: invert})
}

func cmpEq(load []expr.Any, value []byte) []expr.Any {
	return append(load, &expr.Cmp{Op: expr.CmpOpEq, Register: regKey, Data: value})
}

func maskedCmp(op expr.CmpOp, load []expr.Any, mask, value []byte) []expr.Any {
	return append(load,
		&expr.Bitwise{SourceRegister: regKey, DestRegister: regKey, Len: uint32(len(mask)), Mask: mask, Xor: make([]byte, len(mask))},
		&expr.Cmp{Op: op, Register: regKey, Data: value})
}

func etherTypeIs(t []byte) []expr.Any {
	return cmpEq(load(expr.PayloadBaseLLHeader, etherType, 2, regKey), t)
}

func icmpv6Is(typ byte) []expr.Any {
	return all(
		etherTypeIs(etherTypeIPv6),
		[]expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regKey}, &expr.Cmp{Op: expr.CmpOpEq, Register: regKey, Data: []byte{protoICMPv6}}},
		cmpEq(load(expr.PayloadBaseTransportHeader, icmpv6Type, 1, regKey), []byte{typ}),
	)
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

func counterDrop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}
