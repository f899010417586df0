// Package antispoof keeps pods on wgmesh's bridge from sending as someone
// else: a frame a pod sends enters the bridge only with the pod's own MAC as
// source and, for IPv4, IPv6 and ARP, one of the pod's own addresses as
// source (IPv6 also: a link-local source or the unspecified address ::, with
// the pod's own MAC, so that neighbour discovery works). Pods may not send
// IPv6 router advertisements or redirects, nor neighbour advertisements for
// another pod's or the gateway's address.
//
// The check runs in the kernel, in nftables family bridge, table wgmesh,
// base chain antispoof-prerouting (hook prerouting, before the bridge learns
// the source MAC, before bridge DNAT, ebtables and br_netfilter), against
// four sets of (host-side veth, MAC, address) tuples:
//
//	pod-ports  ifname                          registered ports: checked
//	pod-macs   ifname . ether_addr              own MAC (IPv6 link-local and ::)
//	pod-ipv4   ifname . ether_addr . ipv4_addr  IPv4 and ARP sender
//	pod-ipv6   ifname . ether_addr . ipv6_addr  IPv6 source, NA target
//
// A frame from a registered port that matches no tuple is dropped (counted by
// the chain's drop rules). A port the kernel does not know as registered is
// not checked: `meta ibrname` (which bridge a frame enters) needs
// CONFIG_NFT_BRIDGE_META, which kernels do not all have, so the chain cannot
// tell a port of wgmesh-br0 from a port of another bridge on the node. Ports
// are registered by the CNI plugin wgmesh-guard in antiSpoof mode, the
// conflist's entry right after bridge, before ADD returns, so before any of
// the pod's containers runs; pods networked before anti-spoofing reached the
// node stay unchecked until they are recreated (an upgrade never cuts a
// running pod off).
//
// This file and rules.go are pure: Port.Elements and Rules render what goes
// into the kernel; kernel.go writes it over netlink.
package antispoof

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Names in the kernel. The table shares its name with the leak guard's and
// the service NAT's (DESIGN.md: table wgmesh), in its own family, bridge.
const (
	Table    = "wgmesh"
	Chain    = "antispoof-prerouting"
	SetPorts = "pod-ports"
	SetMACs  = "pod-macs"
	SetIPv4  = "pod-ipv4"
	SetIPv6  = "pod-ipv6"
	// Priority of the chain: bridge dstnat (-300) minus 100, so before
	// anything else a node is likely to hook into the bridge.
	Priority = -400
)

// Key layout: each field of a concatenation is padded to 4 bytes (the
// kernel's 32-bit registers).
const (
	ifNameLen = unix.IFNAMSIZ // 16
	macLen    = 6
	macPadded = 8
)

// Port is one pod interface on the bridge.
type Port struct {
	// HostIf is the host-side veth, the frame's input port (iifname).
	HostIf string
	// MAC is the pod interface's address.
	MAC net.HardwareAddr
	// IPs are the pod's addresses on that interface.
	IPs []netip.Addr
}

func (p Port) String() string {
	ips := make([]string, len(p.IPs))
	for i, ip := range p.IPs {
		ips[i] = ip.String()
	}
	return fmt.Sprintf("port %s (MAC %s, IPs %s)", p.HostIf, p.MAC, strings.Join(ips, ","))
}

// Validate checks the port; errors name the field and the bad value.
func (p Port) Validate() error {
	if p.HostIf == "" || len(p.HostIf) >= ifNameLen || strings.ContainsAny(p.HostIf, "/ \x00") {
		return fmt.Errorf("host interface %q is not an interface name (1-%d characters)", p.HostIf, ifNameLen-1)
	}
	if len(p.MAC) != macLen {
		return fmt.Errorf("MAC %q of %s is not an Ethernet address", p.MAC.String(), p.HostIf)
	}
	if p.MAC[0]&1 == 1 || bytes.Equal(p.MAC, make([]byte, macLen)) {
		return fmt.Errorf("MAC %s of %s is not a unicast address", p.MAC, p.HostIf)
	}
	if len(p.IPs) == 0 {
		return fmt.Errorf("%s has no IP address", p.HostIf)
	}
	for _, ip := range p.IPs {
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() || ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("IP %q of %s: want a plain unicast IPv4 or IPv6 address", ip.String(), p.HostIf)
		}
	}
	return nil
}

// Element is one set element.
type Element struct {
	Set string
	Key []byte
}

func (e Element) String() string { return e.Set + " " + FormatKey(e.Set, e.Key) }

// Elements are the set elements that register p, sorted by set and key.
func (p Port) Elements() ([]Element, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	name := ifName(p.HostIf)
	mac := make([]byte, macPadded)
	copy(mac, p.MAC)
	out := []Element{
		{Set: SetPorts, Key: name},
		{Set: SetMACs, Key: cat(name, mac)},
	}
	seen := map[netip.Addr]bool{}
	for _, ip := range p.IPs {
		if seen[ip] {
			continue
		}
		seen[ip] = true
		set := SetIPv6
		if ip.Is4() {
			set = SetIPv4
		}
		out = append(out, Element{Set: set, Key: cat(name, mac, ip.AsSlice())})
	}
	sortElements(out)
	return out, nil
}

// PortOf is the host interface named by a key of any of the sets.
func PortOf(key []byte) string {
	if len(key) < ifNameLen {
		return ""
	}
	return string(bytes.TrimRight(key[:ifNameLen], "\x00"))
}

// FormatKey renders a key as nft prints it (veth0 . 02:00:00:00:00:01 . 198.19.1.5).
func FormatKey(set string, key []byte) string {
	parts := []string{PortOf(key)}
	if set != SetPorts && len(key) >= ifNameLen+macPadded {
		parts = append(parts, net.HardwareAddr(key[ifNameLen:ifNameLen+macLen]).String())
		if ip, ok := netip.AddrFromSlice(key[ifNameLen+macPadded:]); ok && set != SetMACs {
			parts = append(parts, ip.String())
		}
	}
	return strings.Join(parts, " . ")
}

func ifName(s string) []byte {
	b := make([]byte, ifNameLen)
	copy(b, s)
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func sortElements(es []Element) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].Set != es[j].Set {
			return es[i].Set < es[j].Set
		}
		return bytes.Compare(es[i].Key, es[j].Key) < 0
	})
}
