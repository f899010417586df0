package cluster

import "github.com/wgmesh/wgmesh/test/netns"

// AttachHost plugs a namespace a test made (a laptop, a VM outside the
// cluster) into the underlay bridge: link "eth0" inside, outside there
// (at most 15 characters). Its addresses are the test's to set; the link
// goes when the namespace does.
func (c *Cluster) AttachHost(ns *netns.NS, outside string) error {
	return c.plug(ns, "eth0", outside, c.net.underlay)
}
