package netns

import (
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func withHandle(ns *NS, fn func(h *netlink.Handle) error) error {
	h, err := ns.Netlink()
	if err != nil {
		return err
	}
	defer h.Close()
	return fn(h)
}

func checkHostLink(ns *NS, name string) error {
	if ns.IsHost() && !strings.HasPrefix(name, Prefix) {
		return fmt.Errorf("link %q in the host namespace: name must start with %q", name, Prefix)
	}
	return nil
}

// Veth creates a veth pair with end aName in a and end bName in b, both up, with the given
// MTU (0 keeps the default). A host end must be named with Prefix.
func Veth(a *NS, aName string, b *NS, bName string, mtu int) error {
	if err := checkHostLink(a, aName); err != nil {
		return err
	}
	if err := checkHostLink(b, bName); err != nil {
		return err
	}
	peerNS, err := vnetns.GetFromPath(b.Path())
	if err != nil {
		return fmt.Errorf("%s: %w", b, err)
	}
	defer peerNS.Close()
	err = withHandle(a, func(h *netlink.Handle) error {
		la := netlink.NewLinkAttrs()
		la.Name = aName
		if mtu > 0 {
			la.MTU = mtu
		}
		v := &netlink.Veth{LinkAttrs: la, PeerName: bName, PeerNamespace: netlink.NsFd(int(peerNS))}
		if mtu > 0 {
			v.PeerMTU = uint32(mtu)
		}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("veth %s (%s) - %s (%s): %w", aName, a, bName, b, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, side := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		if side.ns.IsHost() {
			if err := recordOwner("link." + side.name); err != nil {
				return err
			}
		}
		if err := LinkUp(side.ns, side.name); err != nil {
			return err
		}
	}
	return nil
}

// Bridge creates a bridge, up, with the given MTU (0 keeps the default).
func Bridge(ns *NS, name string, mtu int) error {
	if err := checkHostLink(ns, name); err != nil {
		return err
	}
	err := withHandle(ns, func(h *netlink.Handle) error {
		la := netlink.NewLinkAttrs()
		la.Name = name
		if mtu > 0 {
			la.MTU = mtu
		}
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return fmt.Errorf("bridge %s in %s: %w", name, ns, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if ns.IsHost() {
		if err := recordOwner("link." + name); err != nil {
			return err
		}
	}
	return LinkUp(ns, name)
}

// SetMaster attaches link to the bridge master.
func SetMaster(ns *NS, link, master string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(link)
		if err != nil {
			return fmt.Errorf("link %s in %s: %w", link, ns, err)
		}
		br, err := h.LinkByName(master)
		if err != nil {
			return fmt.Errorf("link %s in %s: %w", master, ns, err)
		}
		if err := h.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("attach %s to %s in %s: %w", link, master, ns, err)
		}
		return nil
	})
}

// LinkUp sets a link up.
func LinkUp(ns *NS, name string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("link %s in %s: %w", name, ns, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up in %s: %w", name, ns, err)
		}
		return nil
	})
}

// SetMTU sets a link's MTU.
func SetMTU(ns *NS, name string, mtu int) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("link %s in %s: %w", name, ns, err)
		}
		return h.LinkSetMTU(l, mtu)
	})
}

// DeleteLink removes a link; a missing link is not an error.
func DeleteLink(ns *NS, name string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			if _, ok := err.(netlink.LinkNotFoundError); ok {
				if ns.IsHost() {
					removeOwner("link." + name)
				}
				return nil
			}
			return fmt.Errorf("link %s in %s: %w", name, ns, err)
		}
		if err := h.LinkDel(l); err != nil {
			return fmt.Errorf("delete %s in %s: %w", name, ns, err)
		}
		if ns.IsHost() {
			removeOwner("link." + name)
		}
		return nil
	})
}

// AddAddr adds an address in CIDR form ("198.18.0.11/24", "2001:db8::11/64") to a link.
// IPv6 addresses skip duplicate address detection so that they are usable at once.
func AddAddr(ns *NS, link, cidr string) error {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("address %q: %w", cidr, err)
	}
	if a.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD
	}
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(link)
		if err != nil {
			return fmt.Errorf("link %s in %s: %w", link, ns, err)
		}
		if err := h.AddrReplace(l, a); err != nil {
			return fmt.Errorf("add %s to %s in %s: %w", cidr, link, ns, err)
		}
		return nil
	})
}

// AddRoute adds (replaces) a route. dst is a CIDR or "default" / "default6"; gw may be
// empty for an on-link route through dev; dev may be empty when gw is given.
func AddRoute(ns *NS, dst, gw, dev string) error {
	r := &netlink.Route{}
	switch dst {
	case "default":
		_, r.Dst, _ = net.ParseCIDR("0.0.0.0/0")
	case "default6":
		_, r.Dst, _ = net.ParseCIDR("::/0")
	default:
		_, n, err := net.ParseCIDR(dst)
		if err != nil {
			return fmt.Errorf("route destination %q: %w", dst, err)
		}
		r.Dst = n
	}
	if gw != "" {
		r.Gw = net.ParseIP(gw)
		if r.Gw == nil {
			return fmt.Errorf("route gateway %q: not an IP address", gw)
		}
	}
	return withHandle(ns, func(h *netlink.Handle) error {
		if dev != "" {
			l, err := h.LinkByName(dev)
			if err != nil {
				return fmt.Errorf("link %s in %s: %w", dev, ns, err)
			}
			r.LinkIndex = l.Attrs().Index
		}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %q dev %q in %s: %w", dst, gw, dev, ns, err)
		}
		return nil
	})
}

// LinkNames lists the names of the links in ns.
func LinkNames(ns *NS) ([]string, error) {
	var out []string
	err := withHandle(ns, func(h *netlink.Handle) error {
		ls, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range ls {
			out = append(out, l.Attrs().Name)
		}
		return nil
	})
	return out, err
}
