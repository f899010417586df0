package cluster

import (
	"context"
	"fmt"
	"strings"

	"github.com/wgmesh/wgmesh/test/netns"
)

// network is the underlay: a bridge in its own namespace (so the host's links, routes and
// firewall stay untouched apart from one veth holding the API server address), a NAT router
// with the second cloud's bridge, and an "internet" host.
type network struct {
	underlay *netns.NS
	router   *netns.NS
	internet *netns.NS
}

func (c *Cluster) setupNetwork(ctx context.Context) error {
	if c.opts.Remote != "" {
		return c.setupRemoteNetwork()
	}
	mtu := c.opts.UnderlayMTU
	var err error
	n := &c.net
	if n.underlay, err = netns.New(UnderlayNS); err != nil {
		return err
	}
	if err := netns.Bridge(n.underlay, bridgeName, mtu); err != nil {
		return err
	}
	// The host end carries the API server address; the only route it adds on the host is
	// the connected route of the underlay subnet.
	if err := c.plug(netns.Host(), hostLink, "cp0", n.underlay); err != nil {
		return err
	}
	if err := netns.AddAddr(netns.Host(), hostLink, APIServerIP+"/24"); err != nil {
		return err
	}
	if c.opts.DualStack {
		if err := netns.AddAddr(netns.Host(), hostLink, APIServerIP6+"/64"); err != nil {
			return err
		}
	}

	// NAT router: eth0 on the underlay, br1 = the second cloud.
	if n.router, err = netns.New(RouterNS); err != nil {
		return err
	}
	if err := c.plug(n.router, "eth0", "router", n.underlay); err != nil {
		return err
	}
	if err := netns.Bridge(n.router, "br1", mtu); err != nil {
		return err
	}
	if err := c.addrs(n.router, "eth0", RouterOutside+"/24", RouterOutside6+"/64"); err != nil {
		return err
	}
	if err := c.addrs(n.router, "br1", RouterInside+"/24", RouterInside6+"/64"); err != nil {
		return err
	}
	for _, s := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if err := n.router.Sysctl(s, "1"); err != nil {
			return err
		}
	}
	// Masquerade the second cloud; from outside only replies get in, as through a home
	// router or a cloud NAT gateway.
	rules := fmt.Sprintf(`table inet wgm-nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" ip saddr %s masquerade
		oifname "eth0" ip6 saddr %s masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "eth0" oifname "br1" ct state established,related accept
		iifname "eth0" oifname "br1" drop
	}
}
`, Cloud2CIDR, Cloud2CIDR6)
	cmd := n.router.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", RouterNS, err, out)
	}

	// "Internet" host for egress tests.
	if n.internet, err = netns.New(InternetNS); err != nil {
		return err
	}
	if err := c.plug(n.internet, "eth0", "internet", n.underlay); err != nil {
		return err
	}
	return c.addrs(n.internet, "eth0", InternetIP+"/24", InternetIP6+"/64")
}

// plug connects ns (link name inside) to the bridge of the underlay or router namespace
// (link name there).
func (c *Cluster) plug(ns *netns.NS, inside, outside string, bridgeNS *netns.NS) error {
	if len(outside) > 15 {
		outside = outside[:15]
	}
	if err := netns.Veth(ns, inside, bridgeNS, outside, c.opts.UnderlayMTU); err != nil {
		return err
	}
	br := bridgeName
	if bridgeNS == c.net.router {
		br = "br1"
	}
	return netns.SetMaster(bridgeNS, outside, br)
}

// addrs adds the IPv4 address, and the IPv6 one in dual-stack clusters.
func (c *Cluster) addrs(ns *netns.NS, link, v4, v6 string) error {
	if err := netns.AddAddr(ns, link, v4); err != nil {
		return err
	}
	if c.opts.DualStack {
		return netns.AddAddr(ns, link, v6)
	}
	return nil
}

func (c *Cluster) teardownNetwork() error {
	var errs []error
	if err := netns.DeleteLink(netns.Host(), hostLink); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range []*netns.NS{c.net.internet, c.net.router, c.net.underlay} {
		if ns != nil {
			if err := ns.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("network teardown: %v", errs)
	}
	return nil
}
