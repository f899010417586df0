package policy

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/nft"
)

// TestUnprogrammedPodFailsClosed: an address of the node's pod CIDRs that
// the agent has not judged sends and receives nothing through forward (to
// and from pods of this node, other nodes' pods and hosts), while the node
// itself still reaches it and it reaches the node; once programmed it
// follows its policies, and when its pod goes the address is denied again.
func TestUnprogrammedPodFailsClosed(t *testing.T) {
	var (
		host    = netip.MustParseAddr("198.18.0.11")
		remote  = netip.MustParseAddr("198.18.0.12") // another node's host
		newPod  = netip.MustParseAddr("198.19.1.10")
		oldPod  = netip.MustParseAddr("198.19.1.11")
		farPod  = netip.MustParseAddr("198.19.2.10") // a pod on the other node
		newPod6 = netip.MustParseAddr("2001:db8:100:1::10")
		oldPod6 = netip.MustParseAddr("2001:db8:100:1::11")
		node    = Node{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("2001:db8:100:1::/64")}}
		ix      = netpol.NewIndex()
		fake    = map[nft.Family]*nft.Fake{}
		pod     = func(name string, labels map[string]string, nodeName string, ips ...netip.Addr) *netpol.Pod {
			p := &netpol.Pod{Namespace: "x", Name: name, UID: types.UID("uid-" + name), Labels: labels, Node: nodeName, Phase: corev1.PodRunning}
			p.IPs = ips
			return p
		}
	)
	ix.SetNamespace(netpol.NamespaceFromAPI(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}))
	ix.SetPod(pod("old", map[string]string{"app": "client"}, "n1", oldPod, oldPod6))
	ix.SetPod(pod("far", map[string]string{"app": "client"}, "n2", farPod))
	sync := func() {
		t.Helper()
		for _, f := range nft.Families {
			if fake[f] == nil {
				fake[f] = nft.NewFake()
				if err := fake[f].For(Part).EnsureSkeleton(f); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := nft.Sync(fake[f].For(Part), f, Render(ix, node, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
	oif := func(a netip.Addr) string {
		if node.PodCIDRs[0].Contains(a) || node.PodCIDRs[1].Contains(a) {
			return "wgmesh-br0"
		}
		return "wgmesh0"
	}
	check := func(step string, src, dst netip.Addr, fromNode bool, want string) {
		t.Helper()
		f := nft.FamilyOf(src)
		tr := fake[f].Tracer(f, map[netip.Addr]bool{host: true}, oif)
		for _, ct := range []nft.CtState{nft.CtNew, nft.CtEstablished} {
			w := want
			if ct == nft.CtEstablished {
				w = "accept" // replies of what was allowed, conntrack's to judge
			}
			if got := nft.Outcomes(tr.Trace(nft.Packet{Src: src, Dst: dst, Proto: nft.TCP, DPort: 80, FromNode: fromNode, CtState: ct})); got != w {
				t.Errorf("%s: %s -> %s (from node %v, %v): %s, want %s\n%s", step, src, dst, fromNode, ct, got, w, fake[f].Ruleset(f))
			}
		}
	}

	sync()
	for _, c := range []struct {
		src, dst netip.Addr
		fromNode bool
		want     string
	}{
		{newPod, oldPod, false, "drop"}, {oldPod, newPod, false, "drop"},
		{newPod6, oldPod6, false, "drop"}, {oldPod6, newPod6, false, "drop"},
		{newPod, farPod, false, "drop"}, {farPod, newPod, false, "drop"},
		{remote, newPod, false, "drop"}, {newPod, netip.MustParseAddr("203.0.113.9"), false, "drop"},
		{host, newPod, true, "accept"}, {newPod, host, false, "accept"}, // the node and its pods
		{oldPod, farPod, false, "accept"}, {farPod, oldPod, false, "accept"}, // judged, no policy
	} {
		check("unprogrammed", c.src, c.dst, c.fromNode, c.want)
	}

	// Programmed under a default-deny-ingress policy that lets app=client
	// in: it follows the policy from then on.
	ix.SetPolicy(netpol.PolicyFromAPI(&networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "allow-client"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}},
		},
	}))
	ix.SetPod(pod("new", map[string]string{"app": "server"}, "n1", newPod, newPod6))
	ix.SetPod(pod("stranger", nil, "n2", netip.MustParseAddr("198.19.2.11")))
	sync()
	check("programmed", oldPod, newPod, false, "accept")
	check("programmed", oldPod6, newPod6, false, "accept")
	check("programmed", farPod, newPod, false, "accept")
	check("programmed", newPod, farPod, false, "accept") // egress not isolated
	check("programmed", netip.MustParseAddr("198.19.2.11"), newPod, false, "drop")
	check("programmed", remote, newPod, false, "drop")
	check("programmed", host, newPod, true, "accept")

	// The pod goes: its address is denied again (a new pod reusing it
	// starts unjudged), both ways.
	ix.DeletePod("x", "new")
	sync()
	check("deleted", oldPod, newPod, false, "drop")
	check("deleted", newPod, oldPod, false, "drop")
	check("deleted", host, newPod, true, "accept")
}
