// Package bridge keeps the pod bridge (wgmesh-br0): the link, its MTU, a
// fixed MAC address derived from its name and gateways, and the gateway
// addresses, with drift repaired on each call.
package bridge

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/agent/linkaddr"
)

// Netlink is the part of *netlink.Handle this package uses; tests inject
// agent/netlinkfake.
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetHardwareAddr(link netlink.Link, hwaddr net.HardwareAddr) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
}

var _ Netlink = (*netlink.Handle)(nil)

// Options is the pod bridge's desired state.
type Options struct {
	Name string
	// Gateways are the bridge addresses (first address of each pod CIDR,
	// with the pod CIDR's length).
	Gateways []netip.Prefix
	MTU      int
	// HardwareAddr, when set, is kept on the bridge (see StableMAC).
	HardwareAddr net.HardwareAddr
}

// StableMAC is the pod bridge's hardware address. A Linux bridge whose
// address was never set takes the lowest address of its ports, so it changes
// as pods come and go, and every pod's neighbour entry for its gateway then
// points at an address nobody owns: IPv6 pods, which get no gratuitous
// announcement, lose traffic until the entry is re-resolved, or for as long
// as TCP keeps confirming the stale entry. A set address never follows the
// ports. It is derived from the bridge name and its gateways (the node's pod
// CIDRs, immutable), so it survives agent restarts and re-creating the bridge.
func StableMAC(name string, gateways []netip.Prefix) net.HardwareAddr {
	h := sha256.New()
	h.Write([]byte(name))
	for _, g := range gateways {
		h.Write([]byte("|" + g.String()))
	}
	sum := h.Sum(nil)
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}

// Ensure creates the bridge when missing, sets its MTU, makes its
// global addresses exactly Gateways and brings it up. The CNI bridge plugin
// reuses this bridge and finds its gateway address already there.
func Ensure(h Netlink, o Options) error {
	link, err := h.LinkByName(o.Name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("looking up bridge %s: %w", o.Name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: o.Name, MTU: o.MTU, HardwareAddr: o.HardwareAddr}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("creating bridge %s: %w", o.Name, err)
		}
		if link, err = h.LinkByName(o.Name); err != nil {
			return fmt.Errorf("bridge %s after creating it: %w", o.Name, err)
		}
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("link %s exists but is a %s, not a bridge; remove it so that wgmesh can create its pod bridge", o.Name, link.Type())
	}
	if len(o.HardwareAddr) > 0 && !bytes.Equal(link.Attrs().HardwareAddr, o.HardwareAddr) {
		if err := h.LinkSetHardwareAddr(link, o.HardwareAddr); err != nil {
			return fmt.Errorf("setting address %s on bridge %s: %w", o.HardwareAddr, o.Name, err)
		}
	}
	if o.MTU > 0 && link.Attrs().MTU != o.MTU {
		if err := h.LinkSetMTU(link, o.MTU); err != nil {
			return fmt.Errorf("setting MTU %d on bridge %s: %w", o.MTU, o.Name, err)
		}
	}
	if err := linkaddr.Sync(h, link, o.Gateways); err != nil {
		return fmt.Errorf("bridge %s: %w", o.Name, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting bridge %s up: %w", o.Name, err)
		}
	}
	return nil
}
