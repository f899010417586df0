package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/podnet"
)

// world is a random cluster: three nodes, each with its pod CIDRs (one per
// family), pods on them, namespaces and policies, as API objects.
type world struct {
	nodes      []*corev1.Node
	namespaces []*corev1.Namespace
	pods       []*corev1.Pod
	policies   []*networkingv1.NetworkPolicy
}

var (
	nodeNames  = []string{"n1", "n2", "n3"}
	nsNames    = []string{"x", "y", "z"}
	labelVals  = []string{"a", "b", "c"}
	portNames  = []string{"serve-80-tcp", "serve-81-udp", "dns"}
	protocols3 = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
)

func nodeAddr(i int) netip.Addr  { return netip.AddrFrom4([4]byte{198, 18, 0, byte(11 + i)}) }
func nodeAddr6(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", 11+i)) }
func podAddr(n, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(1 + n), byte(10 + i)})
}
func podAddr6(n, i int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:100:%d::%d", 1+n, 10+i))
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func randomLabels(r *rand.Rand) map[string]string {
	l := map[string]string{}
	for _, k := range []string{"app", "tier"} {
		if r.IntN(3) > 0 {
			l[k] = pick(r, labelVals)
		}
	}
	return l
}

func randomSelector(r *rand.Rand) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	switch r.IntN(4) {
	case 0: // everything
	case 1:
		s.MatchLabels = map[string]string{pick(r, []string{"app", "tier"}): pick(r, labelVals)}
	case 2:
		s.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{pick(r, labelVals), pick(r, labelVals)}}}
	default:
		s.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "tier", Operator: pick(r, []metav1.LabelSelectorOperator{metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist})}}
	}
	return s
}

func randomWorld(r *rand.Rand) *world {
	w := &world{}
	for i, n := range nodeNames {
		w.nodes = append(w.nodes, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n},
			Spec:       corev1.NodeSpec{PodCIDRs: []string{fmt.Sprintf("198.19.%d.0/24", 1+i), fmt.Sprintf("2001:db8:100:%d::/64", 1+i)}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: nodeAddr(i).String()}, {Type: corev1.NodeInternalIP, Address: nodeAddr6(i).String()}}},
		})
	}
	for _, ns := range nsNames {
		w.namespaces = append(w.namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: randomLabels(r)}})
	}
	for n := range nodeNames {
		for i := range 2 + r.IntN(3) {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: pick(r, nsNames), Name: fmt.Sprintf("p%d-%d", n, i), Labels: randomLabels(r)},
				Spec:       corev1.PodSpec{NodeName: nodeNames[n]},
				Status:     corev1.PodStatus{Phase: corev1.PodRunning},
			}
			var c corev1.Container
			for _, pn := range portNames {
				if r.IntN(2) == 0 {
					c.Ports = append(c.Ports, corev1.ContainerPort{Name: pn, ContainerPort: int32(pick(r, []int{80, 81, 53})), Protocol: pick(r, protocols3)})
				}
			}
			p.Spec.Containers = []corev1.Container{c}
			switch r.IntN(8) {
			case 0: // hostNetwork: the node's addresses
				p.Spec.HostNetwork = true
				p.Status.PodIPs = []corev1.PodIP{{IP: nodeAddr(n).String()}, {IP: nodeAddr6(n).String()}}
			case 1: // not started yet
				p.Status.Phase = corev1.PodPending
			default:
				p.Status.PodIPs = []corev1.PodIP{{IP: podAddr(n, i).String()}, {IP: podAddr6(n, i).String()}}
			}
			if len(p.Status.PodIPs) > 0 {
				p.Status.PodIP = p.Status.PodIPs[0].IP
			}
			w.pods = append(w.pods, p)
		}
	}
	for i := range 1 + r.IntN(4) {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: pick(r, nsNames), Name: fmt.Sprintf("np%d", i)}}
		np.Spec.PodSelector = *randomSelector(r)
		switch r.IntN(4) {
		case 0:
		case 1:
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		case 2:
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		default:
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		}
		for range r.IntN(3) {
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: randomPeers(r), Ports: randomPorts(r)})
		}
		for range r.IntN(3) {
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: randomPeers(r), Ports: randomPorts(r)})
		}
		w.policies = append(w.policies, np)
	}
	return w
}

func randomPeers(r *rand.Rand) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for range r.IntN(3) {
		var p networkingv1.NetworkPolicyPeer
		switch r.IntN(4) {
		case 0:
			p.PodSelector = randomSelector(r)
		case 1:
			p.NamespaceSelector = randomSelector(r)
		case 2:
			p.PodSelector, p.NamespaceSelector = randomSelector(r), randomSelector(r)
		default:
			b := &networkingv1.IPBlock{}
			switch r.IntN(4) {
			case 0:
				b.CIDR = "198.19.0.0/16"
				b.Except = []string{fmt.Sprintf("198.19.%d.0/24", 1+r.IntN(3)), podAddr(r.IntN(3), r.IntN(4)).String() + "/32"}
			case 1:
				b.CIDR = "198.18.0.0/24" // the nodes
			case 2:
				b.CIDR = "2001:db8:100::/56"
				b.Except = []string{podAddr6(r.IntN(3), r.IntN(4)).String() + "/128"}
			default:
				b.CIDR = podAddr(r.IntN(3), r.IntN(4)).String() + "/32"
			}
			p.IPBlock = b
		}
		out = append(out, p)
	}
	return out
}

func randomPorts(r *rand.Rand) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for range r.IntN(3) {
		proto := pick(r, protocols3)
		p := networkingv1.NetworkPolicyPort{Protocol: &proto}
		switch r.IntN(4) {
		case 0: // every port of the protocol
		case 1:
			v := intstr.FromInt32(int32(pick(r, []int{80, 81, 53})))
			p.Port = &v
		case 2:
			v := intstr.FromString(pick(r, portNames))
			p.Port = &v
		default:
			v, end := intstr.FromInt32(79), int32(81)
			p.Port, p.EndPort = &v, &end
		}
		out = append(out, p)
	}
	return out
}

func (w *world) index() *netpol.Index {
	ix := netpol.NewIndex()
	for _, ns := range w.namespaces {
		ix.SetNamespace(netpol.NamespaceFromAPI(ns))
	}
	for _, n := range w.nodes {
		ix.SetNode(netpol.NodeFromAPI(n))
	}
	for _, p := range w.pods {
		ix.SetPod(netpol.PodFromAPI(p))
	}
	for _, np := range w.policies {
		ix.SetPolicy(netpol.PolicyFromAPI(np))
	}
	return ix
}

// endpoint is where a traced address lives: a pod's node, or a node's own
// host (hostNetwork pods too), or outside the cluster (node -1).
type endpoint struct {
	node int
	host bool
}

func locate(a netip.Addr) endpoint {
	for n := range nodeNames {
		if a == nodeAddr(n) || a == nodeAddr6(n) {
			return endpoint{node: n, host: true}
		}
		for i := range 5 {
			if a == podAddr(n, i) || a == podAddr6(n, i) {
				return endpoint{node: n}
			}
		}
	}
	return endpoint{node: -1}
}

// unjudged: a is in a node's pod CIDRs (not its host) but no pod the
// policy can select holds it.
func unjudged(c *netpol.Cluster, a netip.Addr) bool {
	if e := locate(a); e.node < 0 || e.host {
		return false
	}
	for _, p := range c.Pods {
		if p.Selectable() && p.HasIP(a) {
			return false
		}
	}
	return true
}

// kernelAllows traces the connection through the rendered tables of the
// nodes that see it: the source pod's node (its forward hook: egress, and
// ingress when the destination is local too), and the destination pod's
// node when another one.
func kernelAllows(t *testing.T, fakes map[int]map[nft.Family]*nft.Fake, src, dst netip.Addr, proto nft.Protocol, port uint16) bool {
	f := nft.FamilyOf(src)
	s, d := locate(src), locate(dst)
	oif := func(a netip.Addr) string {
		if e := locate(a); e.node >= 0 && !e.host {
			return "wgmesh-br0"
		}
		return "eth0"
	}
	trace := func(node int, fromNode bool) bool {
		local := map[netip.Addr]bool{nodeAddr(node): true, nodeAddr6(node): true}
		tr := fakes[node][f].Tracer(f, local, oif)
		out := nft.Outcomes(tr.Trace(nft.Packet{Src: src, Dst: dst, Proto: proto, DPort: port, FromNode: fromNode}))
		switch out {
		case "accept":
			return true
		case "drop":
			return false
		}
		t.Fatalf("%s -> %s %s/%d at node %d: outcome %q", src, dst, proto, port, node, out)
		return false
	}
	judged := -1
	if s.node >= 0 {
		judged = s.node
		if !trace(s.node, s.host) {
			return false
		}
	}
	if d.node >= 0 && !d.host && d.node != judged {
		if !trace(d.node, false) {
			return false
		}
	}
	return true
}

// TestRenderMatchesEvaluate: random clusters rendered for every node into
// the fake table (which refuses what the kernel refuses), and random
// connections traced through them, agree with netpol.Evaluate, the
// reference reading of the NetworkPolicy spec.
func TestRenderMatchesEvaluate(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 50
	}
	checked, denied := 0, 0
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		w := randomWorld(r)
		ix := w.index()
		cluster := ix.Snapshot()
		fakes := map[int]map[nft.Family]*nft.Fake{}
		for n, name := range nodeNames {
			fakes[n] = map[nft.Family]*nft.Fake{}
			for _, f := range nft.Families {
				fake := nft.NewFake()
				p := fake.For(Part)
				if err := p.EnsureSkeleton(f); err != nil {
					t.Fatal(err)
				}
				node := Node{Name: name, PodCIDRs: podnet.NodeCIDRs(w.nodes[n])}
				if _, err := nft.Sync(p, f, Render(ix, node, f)); err != nil {
					t.Fatalf("seed %d node %s %s: %v\n%s", seed, name, f, err, Render(ix, node, f))
				}
				fakes[n][f] = fake
			}
		}
		var addrs []netip.Addr
		for n := range nodeNames {
			addrs = append(addrs, nodeAddr(n), nodeAddr6(n))
			for i := range 5 {
				addrs = append(addrs, podAddr(n, i), podAddr6(n, i))
			}
		}
		addrs = append(addrs, netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("2001:db8:ffff::9"))
		for range 150 {
			src, dst := pick(r, addrs), pick(r, addrs)
			if src.Is4() != dst.Is4() || src == dst {
				continue
			}
			if s, d := locate(src), locate(dst); s.node < 0 && d.node < 0 || s.host && d.host {
				continue // neither end is a pod: no policy is involved
			}
			proto := pick(r, []netpol.Protocol{netpol.TCP, netpol.UDP, netpol.SCTP})
			port := uint16(pick(r, []int{53, 79, 80, 81, 8080}))
			want := netpol.Evaluate(cluster, netpol.Conn{Src: src, Dst: dst, Proto: proto, DPort: port})
			// An address of a node's pod CIDRs that no pod holds is not
			// judged yet: it fails closed, except with its own node.
			if s, d := locate(src), locate(dst); (unjudged(cluster, src) || unjudged(cluster, dst)) && !((s.host || d.host) && s.node == d.node) {
				want.Allowed = false
			}
			got := kernelAllows(t, fakes, src, dst, protocols[proto], port)
			if got != want.Allowed {
				var rendered strings.Builder
				for n, name := range nodeNames {
					fmt.Fprintf(&rendered, "--- node %s\n%s", name, fakes[n][nft.FamilyOf(src)].Ruleset(nft.FamilyOf(src)))
				}
				t.Fatalf("seed %d: %s -> %s %s/%d: kernel allows %v, the model %v (%s; %s)\n%s", seed, src, dst, proto, port, got, want.Allowed,
					want.Egress, want.Ingress, rendered.String())
			}
			checked++
			if !got {
				denied++
			}
		}
	}
	t.Logf("%d connections over %d clusters agree with the model, %d of them denied", checked, seeds, denied)
	if denied == 0 || denied == checked {
		t.Fatalf("the random clusters denied %d of %d connections: the comparison proves nothing", denied, checked)
	}
}
