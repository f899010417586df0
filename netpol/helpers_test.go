package netpol

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The tables' world is the e2e Netpol suite's: namespaces x, y, z labelled
// only with kubernetes.io/metadata.name, pods a, b, c labelled pod=<name>
// serving ports 80 and 81 over TCP, UDP and SCTP with container ports named
// serve-<port>-<protocol>. Pods a and c run on node n1, b on n2; every pod
// has an IPv4 and an IPv6 address.

var testNamespaces = []string{"x", "y", "z"}

func nsIndex(ns string) int { return slices.Index(testNamespaces, ns) + 1 }

func podNode(name string) int {
	if name == "b" {
		return 2
	}
	return 1
}

// podIP is the pod's address: 10.244.<node>.<10*ns+pod> and
// fd00:10:244:<node>::<10*ns+pod>.
func podIP(ns, name string, v6 bool) netip.Addr {
	host := 10*nsIndex(ns) + int(name[0]-'a') + 1
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%d::%d", podNode(name), host))
	}
	return netip.MustParseAddr(fmt.Sprintf("10.244.%d.%d", podNode(name), host))
}

func nodeIP(n int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("192.168.0.%d", n)) }

func testNode(n int) corev1.Node {
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%d", n)},
		Spec:       corev1.NodeSpec{PodCIDRs: []string{fmt.Sprintf("10.244.%d.0/24", n), fmt.Sprintf("fd00:10:244:%d::/64", n)}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: nodeIP(n).String()},
			{Type: corev1.NodeHostName, Address: fmt.Sprintf("n%d", n)},
		}},
	}
}

func testNamespace(name string) corev1.Namespace {
	return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelNamespaceName: name}}}
}

// testPod is pod "<ns>/<name>" of the world.
func testPod(key string) corev1.Pod {
	ns, name, _ := strings.Cut(key, "/")
	var ports []corev1.ContainerPort
	for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
		for _, port := range []int32{80, 81} {
			ports = append(ports, corev1.ContainerPort{
				Name:          fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))),
				Protocol:      proto,
				ContainerPort: port,
			})
		}
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Labels: map[string]string{"pod": name}},
		Spec: corev1.PodSpec{
			NodeName:   fmt.Sprintf("n%d", podNode(name)),
			Containers: []corev1.Container{{Name: "cont-" + name, Ports: ports}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			PodIP: podIP(ns, name, false).String(),
			PodIPs: []corev1.PodIP{
				{IP: podIP(ns, name, false).String()},
				{IP: podIP(ns, name, true).String()},
			},
		},
	}
}

// Policy builders, after the e2e suite's (policies.go).

type npOpt func(*networkingv1.NetworkPolicy)

// policy is a NetworkPolicy in ns selecting pods by matchLabels (kv
// pairs; none is {}).
func policy(ns, name string, podLabels []string, opts ...npOpt) *networkingv1.NetworkPolicy {
	return policySel(ns, name, *labelSel(podLabels...), opts...)
}

func policySel(ns, name string, sel metav1.LabelSelector, opts ...npOpt) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: networkingv1.NetworkPolicySpec{PodSelector: sel}}
	for _, o := range opts {
		o(np)
	}
	return np
}

// ingress sets the ingress rules (an empty list when none) and adds
// Ingress to policyTypes, as e2e's SetSpecIngressRules does.
func ingress(rules ...networkingv1.NetworkPolicyIngressRule) npOpt {
	return func(np *networkingv1.NetworkPolicy) {
		np.Spec.Ingress = append([]networkingv1.NetworkPolicyIngressRule{}, rules...)
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
	}
}

func egress(rules ...networkingv1.NetworkPolicyEgressRule) npOpt {
	return func(np *networkingv1.NetworkPolicy) {
		np.Spec.Egress = append([]networkingv1.NetworkPolicyEgressRule{}, rules...)
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
	}
}

// withTypes replaces policyTypes (none: leave them to defaulting).
func withTypes(ts ...networkingv1.PolicyType) npOpt {
	return func(np *networkingv1.NetworkPolicy) { np.Spec.PolicyTypes = ts }
}

func in(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports}
}

func out(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports}
}

func peers(ps ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return ps }

func labelSel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func exprSel(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func podPeer(sel *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: sel}
}

func nsPeer(sel *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: sel}
}

func podNsPeer(pods, nss *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: pods, NamespaceSelector: nss}
}

func blockPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func protoPtr(p corev1.Protocol) *corev1.Protocol {
	if p == "" {
		return nil
	}
	return &p
}

// port is a ports entry: proto "" leaves the default; p is an int, a name
// or nil (every port).
func port(proto corev1.Protocol, p any) networkingv1.NetworkPolicyPort {
	out := networkingv1.NetworkPolicyPort{Protocol: protoPtr(proto)}
	switch v := p.(type) {
	case int:
		x := intstr.FromInt32(int32(v))
		out.Port = &x
	case string:
		x := intstr.FromString(v)
		out.Port = &x
	}
	return out
}

func portRange(proto corev1.Protocol, from, to int32) networkingv1.NetworkPolicyPort {
	p := port(proto, int(from))
	p.EndPort = &to
	return p
}

const (
	pTCP  = corev1.ProtocolTCP
	pUDP  = corev1.ProtocolUDP
	pSCTP = corev1.ProtocolSCTP
)

// env is a case's cluster, kept twice: as API objects converted by
// FromAPI, and as an Index fed object by object. Both must judge alike.
type env struct {
	t          *testing.T
	namespaces map[string]*corev1.Namespace
	pods       map[string]*corev1.Pod
	nodes      []corev1.Node
	policies   map[string]*networkingv1.NetworkPolicy
	ix         *Index
}

func newEnv(t *testing.T, podKeys []string, extra []corev1.Pod) *env {
	e := &env{t: t, namespaces: map[string]*corev1.Namespace{}, pods: map[string]*corev1.Pod{}, policies: map[string]*networkingv1.NetworkPolicy{}, ix: NewIndex()}
	for _, n := range []int{1, 2} {
		node := testNode(n)
		e.nodes = append(e.nodes, node)
		e.ix.SetNode(NodeFromAPI(&node))
	}
	for _, name := range testNamespaces {
		ns := testNamespace(name)
		e.setNamespace(&ns)
	}
	for _, k := range podKeys {
		p := testPod(k)
		e.setPod(&p)
	}
	for i := range extra {
		e.setPod(&extra[i])
	}
	return e
}

func (e *env) setNamespace(ns *corev1.Namespace) {
	e.namespaces[ns.Name] = ns
	e.ix.SetNamespace(NamespaceFromAPI(ns))
}

func (e *env) setPod(p *corev1.Pod) {
	e.pods[p.Namespace+"/"+p.Name] = p
	e.ix.SetPod(PodFromAPI(p))
}

func (e *env) setPolicy(np *networkingv1.NetworkPolicy) {
	e.policies[np.Namespace+"/"+np.Name] = np
	pol := PolicyFromAPI(np)
	if len(pol.Errors) > 0 {
		e.t.Logf("policy %s: %v", pol.Key(), pol.Errors)
	}
	e.ix.SetPolicy(pol)
}

func (e *env) deletePolicy(key string) {
	delete(e.policies, key)
	ns, name, _ := strings.Cut(key, "/")
	e.ix.DeletePolicy(ns, name)
}

func (e *env) labelNamespace(name string, kv ...string) {
	ns := e.namespaces[name].DeepCopy()
	for i := 0; i+1 < len(kv); i += 2 {
		ns.Labels[kv[i]] = kv[i+1]
	}
	e.setNamespace(ns)
}

func (e *env) labelPod(key string, kv ...string) {
	p := e.pods[key].DeepCopy()
	for i := 0; i+1 < len(kv); i += 2 {
		p.Labels[kv[i]] = kv[i+1]
	}
	e.setPod(p)
}

func (e *env) objects() Objects {
	var o Objects
	for _, ns := range e.namespaces {
		o.Namespaces = append(o.Namespaces, *ns)
	}
	for _, p := range e.pods {
		o.Pods = append(o.Pods, *p)
	}
	o.Nodes = e.nodes
	for _, np := range e.policies {
		o.Policies = append(o.Policies, *np)
	}
	return o
}

// addr turns an endpoint spec into an address and, for "host:<node>", the
// node Conn names: "x/a" (IPv4), "x/a@6" (IPv6), "node:n1" (its
// InternalIP, found through Cluster.Nodes), "gw:n1" (its IPv4 bridge
// gateway), "host:n1" (its InternalIP, named in Conn), or an address.
func (e *env) addr(spec string) (netip.Addr, string) {
	switch {
	case strings.HasPrefix(spec, "node:n"):
		return nodeIP(int(spec[6] - '0')), ""
	case strings.HasPrefix(spec, "host:n"):
		return nodeIP(int(spec[6] - '0')), spec[5:]
	case strings.HasPrefix(spec, "gw:n"):
		return netip.MustParseAddr(fmt.Sprintf("10.244.%c.1", spec[4])), ""
	case strings.Contains(spec, "/"):
		key, fam, _ := strings.Cut(spec, "@")
		p := e.pods[key]
		if p == nil {
			e.t.Fatalf("no pod %s", key)
		}
		ip := p.Status.PodIPs[0].IP
		if fam == "6" {
			ip = p.Status.PodIPs[1].IP
		}
		return netip.MustParseAddr(ip), ""
	}
	return netip.MustParseAddr(spec), ""
}

// evaluate judges a connection both ways (FromAPI and the Index's
// snapshot) and checks that they agree.
func (e *env) evaluate(from, to string, proto Protocol, dport uint16) Verdict {
	e.t.Helper()
	src, srcNode := e.addr(from)
	dst, dstNode := e.addr(to)
	conn := Conn{Src: src, Dst: dst, Proto: proto, DPort: dport, SrcNode: srcNode, DstNode: dstNode}
	v := Evaluate(FromAPI(e.objects()), conn)
	if vi := Evaluate(e.ix.Snapshot(), conn); !reflect.DeepEqual(v, vi) {
		e.t.Fatalf("%s: FromAPI and the Index disagree:\n  %v\n  %v", conn, v, vi)
	}
	return v
}

// exp is one line of an e2e reachability table: from and to are "*" (any
// pod), a namespace ("x") or a pod ("x/a").
type exp struct {
	from, to string
	allow    bool
}

func matchPeer(pattern, key string) bool {
	if pattern == "*" || pattern == key {
		return true
	}
	ns, _, _ := strings.Cut(key, "/")
	return pattern == ns
}

// probe judges every ordered pair of distinct pods of the case (as the
// e2e suite does, ignoring loopback) against a reachability table that
// starts all-allowed and applies expect in order.
type probe struct {
	proto  Protocol // TCP when 0
	port   uint16   // 80 when 0
	v6     bool
	expect []exp
}

func (e *env) runProbe(pr probe, podKeys []string) {
	e.t.Helper()
	proto, port := pr.proto, pr.port
	if proto == 0 {
		proto = TCP
	}
	if port == 0 {
		port = 80
	}
	var wrong []string
	for _, s := range podKeys {
		for _, d := range podKeys {
			if s == d {
				continue
			}
			want := true
			for _, x := range pr.expect {
				if matchPeer(x.from, s) && matchPeer(x.to, d) {
					want = x.allow
				}
			}
			from, to := s, d
			if pr.v6 {
				from, to = s+"@6", d+"@6"
			}
			if v := e.evaluate(from, to, proto, port); v.Allowed != want {
				wrong = append(wrong, fmt.Sprintf("%s -> %s %s/%d: got %v, want %v (%v)", s, d, proto, port, v.Allowed, want, v))
			}
		}
	}
	if len(wrong) > 0 {
		e.t.Errorf("reachability:\n  %s", strings.Join(wrong, "\n  "))
	}
}

// check is one connection with its expected verdict and, optionally,
// text each decision's explanation must contain.
type check struct {
	from, to        string
	proto           Protocol // TCP when 0
	port            uint16   // 80 when 0
	allow           bool
	egress, ingress string
}

func (e *env) runCheck(c check) {
	e.t.Helper()
	proto, port := c.proto, c.port
	if proto == 0 {
		proto = TCP
	}
	if port == 0 {
		port = 80
	}
	v := e.evaluate(c.from, c.to, proto, port)
	if v.Allowed != c.allow {
		e.t.Errorf("%s -> %s %s/%d: allowed %v, want %v: %v", c.from, c.to, proto, port, v.Allowed, c.allow, v)
	}
	if c.egress != "" && !strings.Contains(v.Egress.String(), c.egress) {
		e.t.Errorf("%s -> %s %s/%d: egress %q, want it to contain %q", c.from, c.to, proto, port, v.Egress, c.egress)
	}
	if c.ingress != "" && !strings.Contains(v.Ingress.String(), c.ingress) {
		e.t.Errorf("%s -> %s %s/%d: ingress %q, want it to contain %q", c.from, c.to, proto, port, v.Ingress, c.ingress)
	}
}
