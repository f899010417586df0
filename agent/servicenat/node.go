package servicenat

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
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
func KubeProxyRules(netnsFd int) ([]string, error) {
	var opts []nftables.ConnOption
	if netnsFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink connection: %w", err)
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

// FieldManager owns the service NAT's condition on the node's MeshPeer.
const FieldManager = "wgmesh-service-nat"

// detectKubeProxy warns (once per appearance) when kube-proxy's rules are
// on the node while ours are on: both would answer for every Service. The
// node's MeshPeer carries the KubeProxyConflict condition while it lasts.
func (p *Proxy) detectKubeProxy() {
	found, err := KubeProxyRules(p.o.NetNSFd)
	if err != nil {
		return
	}
	if len(found) == 0 {
		p.metrics.KubeProxyDetected.Set(0)
		if p.kpWarned || !p.kpChecked {
			p.setConflictCondition(metav1.ConditionFalse, "NoKubeProxy", "no kube-proxy rules on the node")
		}
		p.kpWarned, p.kpChecked = false, true
		return
	}
	p.kpChecked = true
	p.metrics.KubeProxyDetected.Set(1)
	if p.kpWarned {
		return
	}
	p.kpWarned = true
	msg := fmt.Sprintf("kube-proxy's rules are on node %s (%v) while wgmesh's service NAT is on: remove kube-proxy, or install wgmesh with agent.serviceProxy=false", p.o.NodeName, found)
	p.o.Log.Info("kube-proxy detected", "node", p.o.NodeName, "found", found)
	p.nodeEvent(corev1.EventTypeWarning, ReasonKubeProxyDetected, "%s", msg)
	p.setConflictCondition(metav1.ConditionTrue, ReasonKubeProxyDetected, msg)
}

// setConflictCondition writes the condition when it differs from what the
// MeshPeer has (one read per change of state, no write otherwise).
func (p *Proxy) setConflictCondition(status metav1.ConditionStatus, reason, msg string) {
	if p.status == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mp := &wgv1.MeshPeer{}
	if err := p.apiReader.Get(ctx, client.ObjectKey{Name: p.o.NodeName}, mp); err != nil {
		if !apierrors.IsNotFound(err) {
			p.o.Log.Error(err, "reading own MeshPeer for the KubeProxyConflict condition")
		}
		return
	}
	cur := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionKubeProxyConflict)
	if cur == nil && status == metav1.ConditionFalse {
		return
	}
	if cur != nil && cur.Status == status && cur.Reason == reason && cur.Message == msg {
		return
	}
	cond := metav1.Condition{Type: wgv1.ConditionKubeProxyConflict, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: mp.Generation, LastTransitionTime: metav1.Now()}
	if err := p.status.ApplyConditions(ctx, FieldManager, []metav1.Condition{cond}); err != nil {
		p.o.Log.Error(err, "writing the KubeProxyConflict condition")
	}
}
