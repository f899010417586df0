package netpol

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPolicyTypesDefaulting(t *testing.T) {
	rule := func(np *networkingv1.NetworkPolicy) {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{in(nil)}
	}
	egressRule := func(np *networkingv1.NetworkPolicy) {
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{out(nil)}
	}
	emptyEgress := func(np *networkingv1.NetworkPolicy) { np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{} }
	for _, tc := range []struct {
		name                     string
		opts                     []npOpt
		ingress, egress          bool
		ingressRules, egressRule int
	}{
		{"nothing: ingress, allowing nothing", nil, true, false, 0, 0},
		{"ingress rules only", []npOpt{rule}, true, false, 1, 0},
		{"egress rules: both", []npOpt{egressRule}, true, true, 0, 1},
		{"an empty egress list is no egress rule", []npOpt{emptyEgress}, true, false, 0, 0},
		{"[Egress] drops ingress rules", []npOpt{rule, egressRule, withTypes(networkingv1.PolicyTypeEgress)}, false, true, 0, 1},
		{"[Ingress] drops egress rules", []npOpt{rule, egressRule, withTypes(networkingv1.PolicyTypeIngress)}, true, false, 1, 0},
		{"[Ingress, Egress] without rules", []npOpt{withTypes(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress)}, true, true, 0, 0},
		{"an unknown type: both, rules of the named ones", []npOpt{rule, egressRule, withTypes(networkingv1.PolicyTypeIngress, "Both")}, true, true, 1, 0},
	} {
		p := PolicyFromAPI(policy("x", "p", nil, tc.opts...))
		if p.Ingress != tc.ingress || p.Egress != tc.egress || len(p.IngressRules) != tc.ingressRules || len(p.EgressRules) != tc.egressRule {
			t.Errorf("%s: ingress %v (%d rules), egress %v (%d rules); want %v (%d), %v (%d)", tc.name,
				p.Ingress, len(p.IngressRules), p.Egress, len(p.EgressRules), tc.ingress, tc.ingressRules, tc.egress, tc.egressRule)
		}
	}
}

func TestPolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		np   *networkingv1.NetworkPolicy
		want string
	}{
		{policySel("x", "p", *exprSel("pod", "Within", "a"), ingress()),
			`networkpolicy x/p: spec.podSelector: "Within" is not a valid label selector operator (the policy selects every pod of its namespace and allows nothing)`},
		{policy("x", "p", nil, withTypes("Both")),
			`networkpolicy x/p: spec.policyTypes[0]: "Both" is not a policy type: want Ingress or Egress (the policy isolates in both directions)`},
		{policy("x", "p", nil, ingress(in(nil), in(peers(podPeer(labelSel()), nsPeer(exprSel("team", opIn)))))),
			`networkpolicy x/p: spec.ingress[1].from[1].namespaceSelector: values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty (this peer matches nothing)`},
		{policy("x", "p", nil, egress(out(peers(podPeer(labelSel("app", "not a value")))))),
			`networkpolicy x/p: spec.egress[0].to[0].podSelector: values[0][app]: Invalid value: "not a value": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?') (this peer matches nothing)`},
		{policy("x", "p", nil, ingress(in(peers(networkingv1.NetworkPolicyPeer{})))),
			`networkpolicy x/p: spec.ingress[0].from[0]: the peer is empty: want podSelector, namespaceSelector or ipBlock (this peer matches nothing)`},
		{policy("x", "p", nil, ingress(in(peers(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, NamespaceSelector: labelSel()})))),
			`networkpolicy x/p: spec.ingress[0].from[0]: ipBlock is set with podSelector or namespaceSelector: want ipBlock alone (this peer matches nothing)`},
		{policy("x", "p", nil, egress(out(peers(blockPeer("10.0.0.0/33"))))),
			`networkpolicy x/p: spec.egress[0].to[0].ipBlock: cidr: "10.0.0.0/33" is not a CIDR: want an address and a prefix length such as 10.0.0.0/8 or 2001:db8::/32 (this peer matches nothing)`},
		{policy("x", "p", nil, egress(out(peers(blockPeer("10.0.0.0/8", "10.0.0.0/8"))))),
			`networkpolicy x/p: spec.egress[0].to[0].ipBlock: except[0]: "10.0.0.0/8" is not a strict subset of cidr "10.0.0.0/8": want a longer prefix inside it (this peer matches nothing)`},
		{policy("x", "p", nil, egress(out(peers(blockPeer("10.0.0.0/8", "fd00::/64"))))),
			`networkpolicy x/p: spec.egress[0].to[0].ipBlock: except[0]: "fd00::/64" is not a strict subset of cidr "10.0.0.0/8": want a longer prefix inside it (this peer matches nothing)`},
		{policy("x", "p", nil, egress(out(peers(blockPeer("::ffff:10.0.0.0/104"))))),
			`networkpolicy x/p: spec.egress[0].to[0].ipBlock: cidr: "::ffff:10.0.0.0/104" is an IPv4-mapped IPv6 CIDR: want an IPv4 CIDR (this peer matches nothing)`},
		{policy("x", "p", nil, ingress(in(nil, port("ICMP", 80)))),
			`networkpolicy x/p: spec.ingress[0].ports[0].protocol: protocol "ICMP" is not supported: want TCP, UDP or SCTP (this port matches nothing)`},
		{policy("x", "p", nil, ingress(in(nil, port(pTCP, 0)))),
			`networkpolicy x/p: spec.ingress[0].ports[0].port: 0 is out of range: want 1-65535 or a port name (this port matches nothing)`},
		{policy("x", "p", nil, ingress(in(nil, portRange(pTCP, 81, 80)))),
			`networkpolicy x/p: spec.ingress[0].ports[0].endPort: 80 is out of range: want 81-65535 (port to 65535) (this port matches nothing)`},
		{policy("x", "p", nil, ingress(in(nil, func() networkingv1.NetworkPolicyPort {
			p := port(pTCP, "http")
			e := int32(90)
			p.EndPort = &e
			return p
		}()))),
			`networkpolicy x/p: spec.ingress[0].ports[0].endPort: 90 is set with the named port "http": want a port number (this port matches nothing)`},
		{policy("x", "p", nil, ingress(in(nil, func() networkingv1.NetworkPolicyPort { p := port(pTCP, nil); e := int32(90); p.EndPort = &e; return p }()))),
			`networkpolicy x/p: spec.ingress[0].ports[0].endPort: 90 is set without port: want port as well (this port matches nothing)`},
		{policy("x", "p", nil, ingress(in(nil, port(pTCP, "80")))),
			`networkpolicy x/p: spec.ingress[0].ports[0].port: "80" is not a port name: must contain at least one letter (a-z) (this port matches nothing)`},
		{policy("", "p", nil, ingress()),
			`networkpolicy /p: metadata.namespace: "" is empty: want the policy's namespace (the policy selects no pod)`},
	} {
		p := PolicyFromAPI(tc.np)
		if len(p.Errors) != 1 || p.Errors[0].Error() != tc.want {
			t.Errorf("errors %q,\nwant [%q]", p.Errors, tc.want)
			continue
		}
		var fe *FieldError
		if !errors.As(p.Errors[0], &fe) || fe.Policy != p.Key() {
			t.Errorf("%v is not a FieldError of %s", p.Errors[0], p.Key())
		}
	}
}

func TestIPBlockParsing(t *testing.T) {
	for _, tc := range []struct{ cidr, want string }{
		{"10.244.2.7/24", "10.244.2.0/24"}, // host bits: masked, as legacy validation allows
		{"010.000.0.0/8", "10.0.0.0/8"},    // leading zeros: decimal, as ParseCIDRSloppy reads them
		{"2001:db8::1/64", "2001:db8::/64"},
		{"0.0.0.0/0", "0.0.0.0/0"},
	} {
		p := PolicyFromAPI(policy("x", "p", nil, egress(out(peers(blockPeer(tc.cidr))))))
		if len(p.Errors) > 0 || p.EgressRules[0].Peers[0].Block.CIDR != netip.MustParsePrefix(tc.want) {
			t.Errorf("cidr %q: %v %v, want %s", tc.cidr, p.EgressRules[0].Peers[0].Block, p.Errors, tc.want)
		}
	}
}

func TestPortNormalization(t *testing.T) {
	p := PolicyFromAPI(policy("x", "p", nil, ingress(in(nil, port("", nil), port(pUDP, 53), port(pSCTP, "sctp"), portRange(pTCP, 80, 80), portRange("", 8000, 9000)))))
	want := []Port{{Protocol: TCP}, {Protocol: UDP, Port: 53}, {Protocol: SCTP, Name: "sctp"}, {Protocol: TCP, Port: 80}, {Protocol: TCP, Port: 8000, EndPort: 9000}}
	if !reflect.DeepEqual(p.IngressRules[0].Ports, want) || len(p.Errors) > 0 {
		t.Errorf("ports %v (%v), want %v", p.IngressRules[0].Ports, p.Errors, want)
	}
	var s []string
	for _, x := range want {
		s = append(s, x.String())
	}
	if got := strings.Join(s, " "); got != "TCP UDP/53 SCTP/sctp TCP/80 TCP/8000-9000" {
		t.Errorf("ports print as %q", got)
	}
}

func TestObjectsFromAPI(t *testing.T) {
	pod := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "u1", Labels: map[string]string{"app": "a"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{
			{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9090}}},
			{Ports: []corev1.ContainerPort{{Name: "dns", Protocol: corev1.ProtocolUDP, ContainerPort: 53}, {Name: "odd", Protocol: "ICMP", ContainerPort: 1}}},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "::ffff:10.244.1.5"},
	}
	got := PodFromAPI(&pod)
	want := &Pod{Namespace: "x", Name: "a", UID: "u1", Labels: map[string]string{"app": "a"}, Node: "n1", Phase: corev1.PodRunning,
		IPs:   []netip.Addr{netip.MustParseAddr("10.244.1.5")},
		Ports: []ContainerPort{{"http", TCP, 8080}, {"dns", UDP, 53}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PodFromAPI = %+v,\nwant %+v", got, want)
	}

	node := testNode(2)
	if got, want := NodeFromAPI(&node).Addrs, addrs("192.168.0.2", "10.244.2.1", "fd00:10:244:2::1"); !reflect.DeepEqual(got, want) {
		t.Errorf("node addresses %v, want %v", got, want)
	}

	ns := corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}
	if got := NamespaceFromAPI(&ns).Labels; !reflect.DeepEqual(got, map[string]string{LabelNamespaceName: "x"}) {
		t.Errorf("namespace labels %v", got)
	}
}
