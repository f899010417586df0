// Package routes keeps the kernel's routes to remote pod ranges (dev wgmesh0,
// src = this node's bridge gateway) in the desired state, and watches
// netlink so that drift is repaired at once. The pod bridge is agent/bridge.
package routes

import (
	"github.com/vishvananda/netlink"
)

// Protocol marks the routes wgmesh installs (rtnetlink protocol number; see
// /etc/iproute2/rt_protos, where it is unassigned). Only routes on the
// WireGuard link with this protocol are ever removed.
const Protocol netlink.RouteProtocol = 87

// Netlink is the part of *netlink.Handle this package uses; tests inject a
// fake.
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

var _ Netlink = (*netlink.Handle)(nil)
