// Package routes keeps the kernel's routes to remote pod ranges (dev wgmesh0,
// src = this node's bridge gateway) and the pod bridge wgmesh-br0 in the
// desired state, and watches netlink so that drift is repaired at once.
package routes

import (
	"github.com/vishvananda/netlink"
	"net"
)

// Protocol marks the routes wgmesh installs (rtnetlink protocol number; see
// /etc/iproute2/rt_protos, where it is unassigned). Only routes on the
// WireGuard link with this protocol are ever removed.
const Protocol netlink.RouteProtocol = 87

// Netlink is the part of *netlink.Handle this package uses; tests inject a
// fake.
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetHardwareAddr(link netlink.Link, hwaddr net.HardwareAddr) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

var _ Netlink = (*netlink.Handle)(nil)
