// Package frame builds Ethernet frames byte by byte for tests that forge
// what a pod sends (another pod's source address, another MAC, ARP and
// neighbour-discovery answers): IPv4/UDP, IPv6/UDP, ARP and ICMPv6, with
// valid checksums. Send them with netns.PacketSocket.
package frame

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// EtherTypes.
const (
	TypeIPv4 = 0x0800
	TypeARP  = 0x0806
	TypeIPv6 = 0x86dd
)

// ARP operations.
const (
	ARPRequest = 1
	ARPReply   = 2
)

// ICMPv6 neighbour-discovery types.
const (
	RouterSolicit   = 133
	RouterAdvert    = 134
	NeighborSolicit = 135
	NeighborAdvert  = 136
	Redirect        = 137
)

// Broadcast is the Ethernet broadcast address.
var Broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Ether is a frame's link-layer header.
type Ether struct {
	Dst, Src net.HardwareAddr
}

func (e Ether) header(etherType uint16) []byte {
	b := make([]byte, 14)
	copy(b[0:6], e.Dst)
	copy(b[6:12], e.Src)
	binary.BigEndian.PutUint16(b[12:], etherType)
	return b
}

// UDP is a UDP datagram in IPv4 or IPv6 (by src's family) from src to dst.
func UDP(e Ether, src, dst netip.Addr, srcPort, dstPort uint16, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], srcPort)
	binary.BigEndian.PutUint16(udp[2:], dstPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	sum := checksum(pseudoHeader(src, dst, 17, len(udp)), udp)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	return ip(e, src, dst, 17, udp)
}

// ICMPv6 is an ICMPv6 message (type, code, then body) from src to dst, hop
// limit 255 as neighbour discovery requires.
func ICMPv6(e Ether, src, dst netip.Addr, typ, code byte, body []byte) []byte {
	msg := append([]byte{typ, code, 0, 0}, body...)
	binary.BigEndian.PutUint16(msg[2:], checksum(pseudoHeader(src, dst, 58, len(msg)), msg))
	return ip(e, src, dst, 58, msg)
}

// NA is a neighbour advertisement (solicited and override flags set) for
// target with a target link-layer address option.
func NA(e Ether, src, dst, target netip.Addr, targetMAC net.HardwareAddr) []byte {
	body := make([]byte, 4, 4+16+8)
	body[0] = 0x60 // solicited, override
	body = append(body, target.AsSlice()...)
	body = append(body, 2, 1)
	body = append(body, targetMAC...)
	return ICMPv6(e, src, dst, NeighborAdvert, 0, body)
}

// RA is a router advertisement with a router lifetime of 1800 s and a
// source link-layer address option.
func RA(e Ether, src netip.Addr) []byte {
	body := []byte{64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}
	body = append(body, e.Src...)
	return ICMPv6(e, src, netip.MustParseAddr("ff02::1"), RouterAdvert, 0, body)
}

// ARP is an Ethernet/IPv4 ARP packet.
func ARP(e Ether, op uint16, senderMAC net.HardwareAddr, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)
	binary.BigEndian.PutUint16(b[2:], TypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	copy(b[8:14], senderMAC)
	copy(b[14:18], senderIP.AsSlice())
	copy(b[18:24], targetMAC)
	copy(b[24:28], targetIP.AsSlice())
	return append(e.header(TypeARP), b...)
}

func ip(e Ether, src, dst netip.Addr, proto byte, payload []byte) []byte {
	if src.Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
		h[8] = 64
		h[9] = proto
		copy(h[12:16], src.AsSlice())
		copy(h[16:20], dst.AsSlice())
		binary.BigEndian.PutUint16(h[10:], checksum(nil, h))
		return append(append(e.header(TypeIPv4), h...), payload...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = proto
	h[7] = 255
	copy(h[8:24], src.AsSlice())
	copy(h[24:40], dst.AsSlice())
	return append(append(e.header(TypeIPv6), h...), payload...)
}

func pseudoHeader(src, dst netip.Addr, proto byte, length int) []byte {
	if src.Is4() {
		b := append(append([]byte{}, src.AsSlice()...), dst.AsSlice()...)
		return append(b, 0, proto, byte(length>>8), byte(length))
	}
	b := append(append([]byte{}, src.AsSlice()...), dst.AsSlice()...)
	return append(b, 0, 0, byte(length>>8), byte(length), 0, 0, 0, proto)
}

func checksum(pseudo, data []byte) uint16 {
	var sum uint32
	for _, b := range [][]byte{pseudo, data} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
