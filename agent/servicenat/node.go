package servicenat

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
)

// localAddrs lists the addresses of the node's interfaces.
func localAddrs(netnsFd int) ([]netip.Addr, error) {
	h, err := netlinkHandle(netnsFd)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing local addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

func netlinkHandle(fd int) (*netlink.Handle, error) {
	if fd == 0 {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(netns.NsHandle(fd))
}

// KubeProxyRules reports where kube-proxy's rules were found on this node:
// its nftables table, or its iptables chains (iptables-nft).
func (k *Kernel) KubeProxyRules() ([]string, error) {
	c, err := k.conn()
	if err != nil {
		return nil, err
	}
	var found []string
	tables, err := c.ListTables()
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		if t.Name == "kube-proxy" {
			found = append(found, fmt.Sprintf("nftables table %s kube-proxy", familyName(t.Family)))
		}
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if ch.Name == "KUBE-SERVICES" && ch.Table != nil {
			found = append(found, fmt.Sprintf("iptables chain KUBE-SERVICES in table %s %s", familyName(ch.Table.Family), ch.Table.Name))
		}
	}
	return found, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprint(f)
}

// ReasonKubeProxyDetected is the Warning Event reason when kube-proxy runs
// beside wgmesh's service NAT.
const ReasonKubeProxyDetected = "KubeProxyDetected"

// detectKubeProxy warns (once per appearance) when kube-proxy's rules are
// on the node while ours are on: both would answer for every Service.
func (p *Proxy) detectKubeProxy() {
	found, err := p.k.KubeProxyRules()
	if err != nil {
		return
	}
	if len(found) == 0 {
		p.metrics.KubeProxyDetected.Set(0)
		p.kpWarned = false
		return
	}
	p.metrics.KubeProxyDetected.Set(1)
	if p.kpWarned {
		return
	}
	p.kpWarned = true
	msg := fmt.Sprintf("kube-proxy's rules are on node %s (%v) while wgmesh's service NAT is on: remove kube-proxy, or install wgmesh with agent.serviceProxy=false", p.o.NodeName, found)
	p.o.Log.Info("kube-proxy detected", "node", p.o.NodeName, "found", found)
	if p.events != nil {
		ref := &corev1.ObjectReference{Kind: "Node", Name: p.o.NodeName, UID: "", APIVersion: "v1"}
		if n, err := p.nodeLister.Get(p.o.NodeName); err == nil {
			ref.UID = n.UID
		}
		p.events.Event(ref, corev1.EventTypeWarning, ReasonKubeProxyDetected, msg)
	}
}
