package netpol

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// A second evaluator, deliberately naive: it reads the API objects as they
// are, sentence by sentence of the API documentation, with net instead of
// netip, no normalization and no lookups, and the package comment's
// fail-closed rules written out again.

type naiveWorld struct{ o *Objects }

// pod is the running pod with address ip ("a pod" for the documentation:
// not hostNetwork, not finished), the first by namespace/name.
func (w naiveWorld) pod(ip net.IP) *corev1.Pod {
	var found *corev1.Pod
	for i := range w.o.Pods {
		p := &w.o.Pods[i]
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, pip := range p.Status.PodIPs {
			if net.ParseIP(pip.IP).Equal(ip) {
				if found == nil || p.Namespace+"/"+p.Name < found.Namespace+"/"+found.Name {
					found = p
				}
			}
		}
	}
	return found
}

// node is the node whose address or bridge gateway ip is.
func (w naiveWorld) node(ip net.IP) string {
	for _, n := range w.o.Nodes {
		for _, a := range n.Status.Addresses {
			if (a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP) && net.ParseIP(a.Address).Equal(ip) {
				return n.Name
			}
		}
		for _, c := range n.Spec.PodCIDRs {
			_, ipnet, _ := net.ParseCIDR(c)
			gw := append(net.IP(nil), ipnet.IP...)
			gw[len(gw)-1]++
			if gw.Equal(ip) {
				return n.Name
			}
		}
	}
	return ""
}

func (w naiveWorld) nsLabels(name string) labels.Set {
	l := labels.Set{"kubernetes.io/metadata.name": name}
	for _, ns := range w.o.Namespaces {
		if ns.Name == name {
			for k, v := range ns.Labels {
				l[k] = v
			}
			l["kubernetes.io/metadata.name"] = name
		}
	}
	return l
}

// types are the policy's directions: "If this field is not specified, it
// will default based on the existence of ingress or egress rules; policies
// that contain an egress section are assumed to affect egress, and all
// policies (whether or not they contain an ingress section) are assumed to
// affect ingress." An unknown value: both (fail closed).
func naiveTypes(np *networkingv1.NetworkPolicy) (ingress, egress, ingressRules, egressRules bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0, true, len(np.Spec.Egress) > 0
	}
	bad := false
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case "Ingress":
			ingressRules = true
		case "Egress":
			egressRules = true
		default:
			bad = true
		}
	}
	return ingressRules || bad, egressRules || bad, ingressRules, egressRules
}

func naiveSelects(sel *metav1.LabelSelector, l labels.Set) (matches, ok bool) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, false
	}
	return s.Matches(l), true
}

// peerMatches: "If the peer is a pod selector, it selects particular Pods
// in the same namespace as the NetworkPolicy ... namespaceSelector selects
// particular namespaces for which all Pods should be allowed ... If
// podSelector is also set, then the NetworkPolicyPeer as a whole selects
// the Pods matching podSelector in the Namespaces selected by
// namespaceSelector"; ipBlock: "IPBlock describes a particular CIDR ...
// except is a slice of CIDRs that should not be included". Invalid: no
// match.
func (w naiveWorld) peerMatches(np *networkingv1.NetworkPolicy, peer networkingv1.NetworkPolicyPeer, ip net.IP, p *corev1.Pod) bool {
	if peer.IPBlock != nil {
		if peer.PodSelector != nil || peer.NamespaceSelector != nil {
			return false
		}
		_, cidr, err := net.ParseCIDR(peer.IPBlock.CIDR)
		if err != nil || (cidr.IP.To4() == nil) != (ip.To4() == nil) {
			return false
		}
		cidrBits, _ := cidr.Mask.Size()
		in := cidr.Contains(ip)
		for _, e := range peer.IPBlock.Except {
			_, ex, err := net.ParseCIDR(e)
			if err != nil {
				return false
			}
			exBits, _ := ex.Mask.Size()
			if !cidr.Contains(ex.IP) || exBits <= cidrBits || (ex.IP.To4() == nil) != (cidr.IP.To4() == nil) {
				return false
			}
			if ex.Contains(ip) {
				in = false
			}
		}
		return in
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		return false
	}
	var podSel, nsSel labels.Selector
	var err error
	if peer.PodSelector != nil {
		if podSel, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
			return false
		}
	}
	if peer.NamespaceSelector != nil {
		if nsSel, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
			return false
		}
	}
	switch {
	case p == nil:
		return false
	case nsSel == nil && p.Namespace != np.Namespace:
		return false
	case nsSel != nil && !nsSel.Matches(w.nsLabels(p.Namespace)):
		return false
	}
	return podSel == nil || podSel.Matches(labels.Set(p.Labels))
}

// portMatches: "The protocol (TCP, UDP, or SCTP) which traffic must match.
// If not specified, this field defaults to TCP ... port ... If this field
// is not provided, this matches all port names and numbers. If present,
// only traffic on the specified protocol AND port will be matched";
// endPort: "the range of ports from port to endPort". A named port is
// looked up on dst, the destination pod. Invalid: no match.
func naivePortMatches(pp networkingv1.NetworkPolicyPort, proto corev1.Protocol, dport int32, dst *corev1.Pod) bool {
	want := corev1.ProtocolTCP
	if pp.Protocol != nil {
		want = *pp.Protocol
	}
	if want != corev1.ProtocolTCP && want != corev1.ProtocolUDP && want != corev1.ProtocolSCTP {
		return false
	}
	if want != proto {
		return false
	}
	if pp.Port == nil {
		return pp.EndPort == nil
	}
	if pp.Port.Type == intstr.Int {
		if pp.Port.IntVal < 1 || pp.Port.IntVal > 65535 {
			return false
		}
		if pp.EndPort != nil {
			if *pp.EndPort < pp.Port.IntVal || *pp.EndPort > 65535 {
				return false
			}
			return pp.Port.IntVal <= dport && dport <= *pp.EndPort
		}
		return pp.Port.IntVal == dport
	}
	if pp.EndPort != nil || dst == nil {
		return false
	}
	for _, c := range dst.Spec.Containers {
		for _, cp := range c.Ports {
			cproto := cp.Protocol
			if cproto == "" {
				cproto = corev1.ProtocolTCP
			}
			if cp.Name == pp.Port.StrVal && cproto == proto && cp.ContainerPort == dport {
				return true
			}
		}
	}
	return false
}

// allows judges one direction at pod subject (nil: not a pod): "By
// default, pods are non-isolated ... Pods become isolated by having a
// NetworkPolicy that selects them ... Network policies do not conflict;
// they are additive." peerIP and peer are the other end; dst is the
// destination pod (for named ports).
func (w naiveWorld) allows(egress bool, subject *corev1.Pod, peerIP net.IP, peer, dst *corev1.Pod, proto corev1.Protocol, dport int32) bool {
	if subject == nil {
		return true
	}
	isolated, allowed := false, false
	for i := range w.o.Policies {
		np := &w.o.Policies[i]
		if np.Namespace != subject.Namespace {
			continue
		}
		in, eg, inRules, egRules := naiveTypes(np)
		if (egress && !eg) || (!egress && !in) {
			continue
		}
		sel, ok := naiveSelects(&np.Spec.PodSelector, labels.Set(subject.Labels))
		if !ok {
			isolated = true // invalid podSelector: every pod, nothing allowed
			continue
		}
		if !sel {
			continue
		}
		isolated = true
		type rule struct {
			peers []networkingv1.NetworkPolicyPeer
			ports []networkingv1.NetworkPolicyPort
		}
		var rules []rule
		if egress && egRules {
			for _, r := range np.Spec.Egress {
				rules = append(rules, rule{r.To, r.Ports})
			}
		}
		if !egress && inRules {
			for _, r := range np.Spec.Ingress {
				rules = append(rules, rule{r.From, r.Ports})
			}
		}
		for _, r := range rules {
			peerOK := len(r.peers) == 0
			for _, pe := range r.peers {
				peerOK = peerOK || w.peerMatches(np, pe, peerIP, peer)
			}
			portOK := len(r.ports) == 0
			for _, pp := range r.ports {
				portOK = portOK || naivePortMatches(pp, proto, dport, dst)
			}
			allowed = allowed || (peerOK && portOK)
		}
	}
	return !isolated || allowed
}

// naiveEvaluate: "traffic to and from the node where a Pod is running is
// always allowed", "a pod cannot block access to itself"; otherwise
// egress at the source and ingress at the destination.
func (w naiveWorld) evaluate(src, dst net.IP, proto corev1.Protocol, dport int32) (egress, ingress bool) {
	sp, dp := w.pod(src), w.pod(dst)
	if sp != nil && sp == dp {
		return true, true
	}
	egress = (sp != nil && w.node(dst) != "" && w.node(dst) == sp.Spec.NodeName && dp == nil) ||
		w.allows(true, sp, dst, dp, dp, proto, dport)
	ingress = (dp != nil && w.node(src) != "" && w.node(src) == dp.Spec.NodeName && sp == nil) ||
		w.allows(false, dp, src, sp, dp, proto, dport)
	return egress, ingress
}

// Random clusters.

type gen struct{ r *rand.Rand }

func (g gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g gen) chance(p float64) bool { return g.r.Float64() < p }

func (g gen) selector(allowNil bool) *metav1.LabelSelector {
	switch g.r.IntN(9) {
	case 0:
		if allowNil {
			return nil
		}
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{}
	case 2, 3:
		return labelSel("app", g.pick("a", "b", "c"))
	case 4:
		return exprSel("app", opIn, g.pick("a", "b"), g.pick("b", "c"))
	case 5:
		return exprSel("app", notIn, g.pick("a", "b", "c"))
	case 6:
		return exprSel("tier", metav1.LabelSelectorOpExists)
	case 7:
		return exprSel("tier", metav1.LabelSelectorOpDoesNotExist)
	}
	if g.chance(0.3) {
		return exprSel("app", "Like", "a") // invalid operator
	}
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": g.pick("a", "b")}, MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: opIn, Values: []string{"web"}}}}
}

func (g gen) nsSelector() *metav1.LabelSelector {
	switch g.r.IntN(6) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return labelSel(nsName, g.pick("x", "y", "z"))
	case 2:
		return labelSel("team", g.pick("red", "blue"))
	case 3:
		return exprSel(nsName, notIn, g.pick("x", "y"))
	case 4:
		return exprSel("env", metav1.LabelSelectorOpExists)
	}
	return g.selector(false)
}

func (g gen) cidr() string {
	return g.pick("10.244.0.0/16", "10.244.1.0/24", "10.244.2.0/24", "10.244.1.16/28", "10.244.2.10/31",
		"0.0.0.0/0", "192.168.0.0/24", "192.168.0.2/32", "fd00:10:244::/48", "fd00:10:244:1::/64", "::/0", "10.244.1.11/32",
		"10.244.1.13/24") // host bits: masked, as the API server's legacy validation allows
}

func (g gen) peer() networkingv1.NetworkPolicyPeer {
	switch g.r.IntN(12) {
	case 0, 1, 2:
		return podPeer(g.selector(false))
	case 3, 4:
		return nsPeer(g.nsSelector())
	case 5, 6:
		return podNsPeer(g.selector(true), g.nsSelector())
	case 7, 8, 9:
		cidr := g.cidr()
		var except []string
		for range g.r.IntN(3) {
			except = append(except, g.pick("10.244.1.0/24", "10.244.1.12/30", "10.244.2.12/32", "10.244.0.0/16", "fd00:10:244:2::/64", "192.168.0.1/32", "10.245.0.0/16"))
		}
		return blockPeer(cidr, except...)
	case 10:
		return networkingv1.NetworkPolicyPeer{} // invalid: empty
	}
	p := blockPeer(g.cidr())
	p.PodSelector = &metav1.LabelSelector{} // invalid: ipBlock with a selector
	return p
}

func (g gen) port() networkingv1.NetworkPolicyPort {
	proto := corev1.Protocol(g.pick("", "", "TCP", "UDP", "SCTP"))
	if g.chance(0.03) {
		proto = "ICMP"
	}
	switch g.r.IntN(8) {
	case 0:
		return port(proto, nil)
	case 1, 2:
		return port(proto, int(g.r.IntN(3)*10+53))
	case 3:
		return port(proto, g.pick("http", "dns", "sctp", "metrics", "nope"))
	case 4:
		return portRange(proto, 53, int32(g.pick2(80, 8080)))
	case 5:
		if g.chance(0.3) {
			return portRange(proto, 81, 80) // invalid
		}
		return port(proto, 80)
	}
	return port(proto, g.pick2(81, 8080, 9000))
}

func (g gen) pick2(xs ...int) int { return xs[g.r.IntN(len(xs))] }

func (g gen) policy(i int) networkingv1.NetworkPolicy {
	np := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: g.pick("x", "y", "z"), Name: fmt.Sprintf("p%d", i)}}
	np.Spec.PodSelector = *g.selector(false)
	switch g.r.IntN(7) {
	case 0:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{"Ingress"}
	case 1:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{"Egress"}
	case 2:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{"Ingress", "Egress"}
	case 3:
		if g.chance(0.2) {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{"Sideways"}
		}
	}
	rules := func() int {
		switch g.r.IntN(5) {
		case 0:
			return -1 // nil
		case 1:
			return 0 // []
		}
		return 1 + g.r.IntN(2)
	}
	if n := rules(); n >= 0 {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
		for range n {
			var r networkingv1.NetworkPolicyIngressRule
			for range g.r.IntN(3) {
				r.From = append(r.From, g.peer())
			}
			for range g.r.IntN(3) {
				r.Ports = append(r.Ports, g.port())
			}
			np.Spec.Ingress = append(np.Spec.Ingress, r)
		}
	}
	if n := rules(); n >= 0 {
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{}
		for range n {
			var r networkingv1.NetworkPolicyEgressRule
			for range g.r.IntN(3) {
				r.To = append(r.To, g.peer())
			}
			for range g.r.IntN(3) {
				r.Ports = append(r.Ports, g.port())
			}
			np.Spec.Egress = append(np.Spec.Egress, r)
		}
	}
	return np
}

// cluster is a random cluster: namespaces x, y, z (z's object sometimes
// missing), nodes n1 and n2, four to ten pods, one to six policies.
func (g gen) cluster() Objects {
	var o Objects
	for _, name := range testNamespaces {
		if name == "z" && g.chance(0.2) {
			continue
		}
		ns := testNamespace(name)
		ns.Labels["team"] = g.pick("red", "blue")
		if g.chance(0.3) {
			ns.Labels["env"] = "prod"
		}
		o.Namespaces = append(o.Namespaces, ns)
	}
	o.Nodes = []corev1.Node{testNode(1), testNode(2)}
	var running []string
	for i := range 4 + g.r.IntN(7) {
		node := 1 + g.r.IntN(2)
		p := corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: g.pick("x", "y", "z"), Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": g.pick("a", "b", "c")}},
			Spec:       corev1.PodSpec{NodeName: fmt.Sprintf("n%d", node)},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if g.chance(0.4) {
			p.Labels["tier"] = g.pick("web", "db")
		}
		v4 := fmt.Sprintf("10.244.%d.%d", node, 10+i)
		p.Status.PodIPs = []corev1.PodIP{{IP: v4}}
		if g.chance(0.6) {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: fmt.Sprintf("fd00:10:244:%d::%d", node, 10+i)})
		}
		switch g.r.IntN(12) {
		case 0:
			p.Spec.HostNetwork = true
			p.Status.PodIPs = []corev1.PodIP{{IP: nodeIP(node).String()}}
		case 1:
			p.Status.Phase = corev1.PodSucceeded
			if len(running) > 0 {
				p.Status.PodIPs = []corev1.PodIP{{IP: running[g.r.IntN(len(running))]}} // released, reused
			}
		case 2:
			p.Status.Phase = corev1.PodFailed
		case 3:
			p.Status.Phase = corev1.PodPending
			p.Status.PodIPs = nil
		default:
			running = append(running, v4)
		}
		var ports []corev1.ContainerPort
		for _, cp := range []corev1.ContainerPort{
			{Name: "http", ContainerPort: int32(g.pick2(80, 8080))},
			{Name: "dns", Protocol: "UDP", ContainerPort: 53},
			{Name: "dns-tcp", Protocol: "TCP", ContainerPort: 53},
			{Name: "sctp", Protocol: "SCTP", ContainerPort: 9000},
			{Name: "metrics", Protocol: corev1.Protocol(g.pick("TCP", "UDP")), ContainerPort: 9000},
		} {
			if g.chance(0.5) {
				ports = append(ports, cp)
			}
		}
		p.Spec.Containers = []corev1.Container{{Name: "c", Ports: ports}}
		o.Pods = append(o.Pods, p)
	}
	for i := range 1 + g.r.IntN(6) {
		o.Policies = append(o.Policies, g.policy(i))
	}
	return o
}

// addrs are the addresses connections are drawn from: every pod's, the
// nodes' and their gateways, and outside ones.
func (o Objects) addrs() []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, p := range o.Pods {
		for _, ip := range p.Status.PodIPs {
			add(ip.IP)
		}
	}
	for _, s := range []string{"192.168.0.1", "192.168.0.2", "10.244.1.1", "10.244.2.1", "fd00:10:244:1::1", "fd00:10:244:2::1", "203.0.113.1", "2001:db8::1", "10.244.1.200"} {
		add(s)
	}
	return out
}

func TestEvaluateRandomAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	g := gen{r}
	clusters, conns := 1000, 200
	if testing.Short() {
		clusters = 50
	}
	allowed, denied, byRule := 0, 0, 0
	for ci := range clusters {
		o := g.cluster()
		c := FromAPI(o)
		ix := NewIndex()
		feedIndex(ix, o, r)
		snap := ix.Snapshot()
		w := naiveWorld{&o}
		addrs := o.addrs()
		protos := []Protocol{TCP, TCP, UDP, SCTP, ICMP}
		for range conns {
			src, dst := addrs[r.IntN(len(addrs))], addrs[r.IntN(len(addrs))]
			if src.Is4() != dst.Is4() {
				continue
			}
			proto := protos[r.IntN(len(protos))]
			dport := uint16(g.pick2(53, 80, 81, 8080, 9000))
			conn := Conn{Src: src, Dst: dst, Proto: proto, DPort: dport}
			v := Evaluate(c, conn)
			if vi := Evaluate(snap, conn); !reflect.DeepEqual(v, vi) {
				t.Fatalf("cluster %d, %s: FromAPI and the Index disagree:\n  %v\n  %v", ci, conn, v, vi)
			}
			eg, in := w.evaluate(net.IP(src.AsSlice()), net.IP(dst.AsSlice()), corev1.Protocol(proto.String()), int32(dport))
			if v.Egress.Allowed() != eg || v.Ingress.Allowed() != in || v.Allowed != (eg && in) {
				t.Fatalf("cluster %d, %s: Evaluate says %v; the naive evaluator egress %v, ingress %v\n%s", ci, conn, v, eg, in, dump(o))
			}
			checkExplain(t, c, conn, v)
			for _, d := range []Decision{v.Egress, v.Ingress} {
				if d.Match != nil {
					byRule++
					checkMatch(t, w, o, d, conn)
				}
			}
			if v.Allowed {
				allowed++
			} else {
				denied++
			}
		}
	}
	t.Logf("%d connections allowed, %d denied, %d decisions by a rule", allowed, denied, byRule)
	if allowed < 1000 || denied < 1000 || byRule < 1000 {
		t.Errorf("the random clusters exercise too little: %d allowed, %d denied, %d by a rule", allowed, denied, byRule)
	}
}

// checkMatch checks that the rule, peer and port a decision names do
// match, by the naive evaluator's reading.
func checkMatch(t *testing.T, w naiveWorld, o Objects, d Decision, conn Conn) {
	t.Helper()
	var np *networkingv1.NetworkPolicy
	for i := range o.Policies {
		if o.Policies[i].Namespace+"/"+o.Policies[i].Name == d.Match.Policy {
			np = &o.Policies[i]
		}
	}
	src, dst := net.IP(conn.Src.AsSlice()), net.IP(conn.Dst.AsSlice())
	peerIP, peerPod, dstPod := src, w.pod(src), w.pod(dst)
	var peers []networkingv1.NetworkPolicyPeer
	var ports []networkingv1.NetworkPolicyPort
	if d.Direction == Egress {
		peerIP, peerPod = dst, dstPod
		peers, ports = np.Spec.Egress[d.Match.Rule].To, np.Spec.Egress[d.Match.Rule].Ports
	} else {
		peers, ports = np.Spec.Ingress[d.Match.Rule].From, np.Spec.Ingress[d.Match.Rule].Ports
	}
	if (d.Match.Peer < 0) != (len(peers) == 0) || d.Match.Peer >= 0 && !w.peerMatches(np, peers[d.Match.Peer], peerIP, peerPod) {
		t.Errorf("%s: %v names a peer that does not match", conn, d)
	}
	if (d.Match.Port < 0) != (len(ports) == 0) || d.Match.Port >= 0 && !naivePortMatches(ports[d.Match.Port], corev1.Protocol(conn.Proto.String()), int32(conn.DPort), dstPod) {
		t.Errorf("%s: %v names a port that does not match", conn, d)
	}
}

// feedIndex adds the objects to ix in a random order, with detours: some
// objects first in another form, some deleted and added again.
func feedIndex(ix *Index, o Objects, r *rand.Rand) {
	var ops []func()
	for i := range o.Namespaces {
		ns := NamespaceFromAPI(&o.Namespaces[i])
		ops = append(ops, func() {
			if r.IntN(4) == 0 {
				ix.SetNamespace(&Namespace{Name: ns.Name, Labels: map[string]string{"team": "green"}})
			}
			ix.SetNamespace(ns)
		})
	}
	for i := range o.Pods {
		p := PodFromAPI(&o.Pods[i])
		ops = append(ops, func() {
			if r.IntN(4) == 0 {
				other := *p
				other.Labels = map[string]string{"app": "c", "tier": "web"}
				other.IPs = []netip.Addr{netip.MustParseAddr("10.244.1.250")}
				ix.SetPod(&other)
				if r.IntN(2) == 0 {
					ix.DeletePod(p.Namespace, p.Name)
				}
			}
			ix.SetPod(p)
		})
	}
	for i := range o.Nodes {
		n := NodeFromAPI(&o.Nodes[i])
		ops = append(ops, func() { ix.SetNode(n) })
	}
	for i := range o.Policies {
		p := PolicyFromAPI(&o.Policies[i])
		ops = append(ops, func() {
			if r.IntN(4) == 0 {
				ix.SetPolicy(&Policy{Namespace: p.Namespace, Name: p.Name, PodSelector: Everything(), Egress: true, EgressRules: []Rule{{Peers: []Peer{{Pods: everyPod()}}}}})
				if r.IntN(2) == 0 {
					ix.DeletePolicy(p.Namespace, p.Name)
				}
			}
			ix.SetPolicy(p)
		})
	}
	r.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	for _, op := range ops {
		op()
	}
}

func everyPod() *PeerSelector {
	ps := &PeerSelector{Namespaces: Everything(), Pods: Everything()}
	ps.Key = peerKey(ps)
	return ps
}

func dump(o Objects) string {
	var b strings.Builder
	for _, ns := range o.Namespaces {
		fmt.Fprintf(&b, "namespace %s %v\n", ns.Name, ns.Labels)
	}
	for _, p := range o.Pods {
		fmt.Fprintf(&b, "pod %s/%s %v node=%s host=%v phase=%s ips=%v ports=%v\n", p.Namespace, p.Name, p.Labels, p.Spec.NodeName, p.Spec.HostNetwork, p.Status.Phase, p.Status.PodIPs, p.Spec.Containers[0].Ports)
	}
	for _, np := range o.Policies {
		fmt.Fprintf(&b, "policy %s/%s %+v\n", np.Namespace, np.Name, np.Spec)
	}
	return b.String()
}

// checkExplain: Explain's verdict is Evaluate's, it judges the rules of
// exactly the isolating policies, and its first matching rule in each
// direction is the decision's Match.
func checkExplain(t *testing.T, c *Cluster, conn Conn, v Verdict) {
	t.Helper()
	e := Explain(c, conn)
	if !reflect.DeepEqual(e.Verdict, v) {
		t.Fatalf("%s: Explain says %v, Evaluate %v", conn, e.Verdict, v)
	}
	for _, side := range []struct {
		d      Decision
		checks []RuleCheck
	}{{v.Egress, e.EgressRules}, {v.Ingress, e.IngressRules}} {
		var first *Match
		policies := map[string]bool{}
		for _, rc := range side.checks {
			policies[rc.Policy] = true
			if rc.Matches() && first == nil {
				first = &Match{Policy: rc.Policy, Direction: rc.Direction, Rule: rc.Rule, Peer: rc.Peer, Port: rc.Port}
			}
		}
		if !reflect.DeepEqual(first, side.d.Match) {
			t.Fatalf("%s: %s: Explain's first matching rule %v, Evaluate's match %v", conn, side.d.Direction, first, side.d.Match)
		}
		for _, key := range side.d.IsolatedBy {
			if !policies[key] && policyHasRules(c, key, side.d.Direction) {
				t.Fatalf("%s: %s: Explain judged no rule of %s, which isolates %s", conn, side.d.Direction, key, side.d.Pod)
			}
		}
	}
}

func policyHasRules(c *Cluster, key string, d Direction) bool {
	for _, p := range c.Policies {
		if p.Key() == key {
			return len(p.Rules(d)) > 0
		}
	}
	return false
}
