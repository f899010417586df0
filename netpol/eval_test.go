package netpol

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// evalCase is a cluster of the tables' world (helpers_test.go), policies,
// and what must hold; then updates, each followed by what must hold then.
type evalCase struct {
	name     string
	pods     string // keys separated by spaces
	extra    []corev1.Pod
	policies []*networkingv1.NetworkPolicy
	probes   []probe
	checks   []check
	then     []update
}

type update struct {
	do     func(e *env)
	probes []probe
	checks []check
}

const nsName = LabelNamespaceName

var (
	notIn = metav1.LabelSelectorOpNotIn
	opIn  = metav1.LabelSelectorOpIn
)

// largeCIDR is the /4 around an IPv4 address, as e2e's makeLargeCIDRForIP.
func largeCIDR(key string) string {
	ns, name, _ := strings.Cut(key, "/")
	a := podIP(ns, name, false).As4()
	return fmt.Sprintf("%d.0.0.0/4", a[0]&0xf0)
}

func host32(key string) string {
	ns, name, _ := strings.Cut(key, "/")
	return podIP(ns, name, false).String() + "/32"
}

// hostNetworkPod is a hostNetwork pod on node n: its address is the node's.
func hostNetworkPod(key string, n int) corev1.Pod {
	p := testPod(key)
	p.Spec.HostNetwork = true
	p.Spec.NodeName = fmt.Sprintf("n%d", n)
	p.Status.PodIP = nodeIP(n).String()
	p.Status.PodIPs = []corev1.PodIP{{IP: nodeIP(n).String()}}
	return p
}

func podWith(key string, phase corev1.PodPhase, ip string, kv ...string) corev1.Pod {
	p := testPod(key)
	p.Status.Phase = phase
	p.Status.PodIP = ip
	p.Status.PodIPs = nil
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	if len(kv) > 0 {
		p.Labels = labelSel(kv...).MatchLabels
	}
	return p
}

// withContainerPort is pod key with one more named container port.
func withContainerPort(key, name string, proto corev1.Protocol, port int32) corev1.Pod {
	p := testPod(key)
	for i, cp := range p.Spec.Containers[0].Ports {
		if cp.Name == name {
			p.Spec.Containers[0].Ports[i].ContainerPort = port
			return p
		}
	}
	p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: name, Protocol: proto, ContainerPort: port})
	return p
}

func TestEvaluate(t *testing.T) {
	allowAllIngress := policy("x", "allow-all-mutate-to-deny-all", nil, ingress(in(nil)))
	cidrExcept := policy("x", "allow-client-a-via-cidr-egress-rule", []string{"pod", "a"},
		egress(out(peers(blockPeer(largeCIDR("x/b"), host32("x/b"))))))

	cases := []evalCase{
		// Default deny and allow all.
		{
			name:     "e2e: should support a 'default-deny-ingress' policy (TCP, UDP, SCTP)",
			pods:     "x/a x/b y/a y/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-ingress", nil, ingress())},
			probes: []probe{
				{expect: []exp{{"*", "x", false}}},
				{proto: UDP, expect: []exp{{"*", "x", false}}},
				{proto: SCTP, expect: []exp{{"*", "x", false}}},
			},
			checks: []check{{from: "y/a", to: "x/a", allow: false, egress: "y/a is not isolated", ingress: "x/a isolated by x/deny-ingress; no rule matches"}},
		},
		{
			name:     "e2e: should support a 'default-deny-all' policy",
			pods:     "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-all", nil, ingress(), egress())},
			probes:   []probe{{expect: []exp{{"*", "x", false}, {"x", "*", false}}}},
		},
		{
			name:     "e2e: should support allow-all policy (rule {})",
			pods:     "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-all", nil, ingress(in(nil)))},
			probes:   []probe{{port: 80}, {port: 81}, {proto: UDP, port: 53}},
			checks: []check{
				{from: "y/a", to: "x/a", proto: ICMP, port: 0, allow: true, ingress: "allowed by x/allow-all ingress rule 0"},
			},
		},
		{
			name: "e2e: should deny ingress from pods on other namespaces",
			pods: "x/a x/b y/a z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-empty-policy", nil,
				ingress(in(peers(podPeer(labelSel())))))},
			probes: []probe{{expect: []exp{{"y", "x", false}, {"z", "x", false}}}},
		},
		{
			name: "empty rule list isolates and allows nothing, rule {} allows everything",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "empty-list", []string{"pod", "a"}, ingress()),
				policy("x", "rule-all", []string{"pod", "b"}, ingress(in(nil))),
			},
			probes: []probe{{expect: []exp{{"*", "x/a", false}}}},
		},

		// podSelector.
		{
			name: "e2e: should enforce policy to allow traffic from pods within server namespace based on PodSelector (also IPv6)",
			pods: "x/a x/b x/c y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "x-a-allows-x-b", []string{"pod", "a"},
				ingress(in(peers(podPeer(labelSel("pod", "b"))))))},
			probes: []probe{
				{expect: []exp{{"*", "x/a", false}, {"x/b", "x/a", true}}},
				{v6: true, expect: []exp{{"*", "x/a", false}, {"x/b", "x/a", true}}},
			},
			checks: []check{{from: "x/b", to: "x/a", allow: true, ingress: "allowed by x/x-a-allows-x-b ingress rule 0 (from[0])"}},
		},
		{
			name: "e2e: should enforce policy to allow ingress traffic for a target",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "deny-all", nil, ingress()),
				policy("x", "allow-all-to-a", []string{"pod", "a"}, ingress(in(peers(podNsPeer(labelSel(), labelSel()))))),
			},
			probes: []probe{{expect: []exp{{"*", "x/a", true}, {"*", "x/b", false}}}},
			checks: []check{{from: "y/a", to: "x/a", allow: true, ingress: "isolated by x/allow-all-to-a, x/deny-all; allowed by x/allow-all-to-a ingress rule 0 (from[0])"}},
		},
		{
			name: "e2e: should enforce policy based on PodSelector with MatchExpressions",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "x-a-allows-x-b", []string{"pod", "a"},
				ingress(in(peers(podPeer(exprSel("pod", opIn, "b"))))))},
			probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/b", "x/a", true}}}},
		},
		{
			name: "e2e: should enforce policy based on any PodSelectors",
			pods: "x/a x/b x/c",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ns-x-pod-b-c", []string{"pod", "a"},
				ingress(in(peers(podPeer(labelSel("pod", "b")), podPeer(labelSel("pod", "c")))))),
			},
			probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/b", "x/a", true}, {"x/c", "x/a", true}}}},
			checks: []check{{from: "x/c", to: "x/a", allow: true, ingress: "(from[1])"}},
		},
		{
			name: "policy subjects by matchExpressions (NotIn, Exists, DoesNotExist)",
			pods: "x/a x/b x/c y/a",
			policies: []*networkingv1.NetworkPolicy{
				policySel("x", "not-a", *exprSel("pod", notIn, "a"), ingress()),
				policySel("y", "no-pod-label", *exprSel("pod", metav1.LabelSelectorOpDoesNotExist), ingress()),
				policySel("y", "has-pod-label", *exprSel("pod", metav1.LabelSelectorOpExists), egress()),
			},
			probes: []probe{{expect: []exp{{"*", "x/b", false}, {"*", "x/c", false}, {"y/a", "*", false}}}},
		},

		// namespaceSelector.
		{
			name: "e2e: should enforce policy to allow ingress traffic from pods in all namespaces",
			pods: "x/a x/b y/a z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-from-another-ns", []string{"pod", "a"},
				ingress(in(peers(nsPeer(labelSel())))))},
			probes: []probe{{}},
			checks: []check{
				{from: "node:n2", to: "x/a", allow: false, ingress: "no rule matches"},
				{from: "203.0.113.9", to: "x/a", allow: false},
			},
		},
		{
			name: "e2e: should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
			pods: "x/a x/b y/a z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-ns-selector", []string{"pod", "a"},
				ingress(in(peers(nsPeer(labelSel(nsName, "y"))))))},
			probes: []probe{{expect: []exp{{"x", "x/a", false}, {"z", "x/a", false}}}},
		},
		{
			name: "e2e: should enforce policy based on NamespaceSelector with MatchExpressions",
			pods: "x/a x/b y/a z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ns-y-match-selector", []string{"pod", "a"},
				ingress(in(peers(nsPeer(exprSel(nsName, opIn, "y"))))))},
			probes: []probe{{expect: []exp{{"x", "x/a", false}, {"z", "x/a", false}}}},
		},
		{
			name: "e2e: should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
			pods: "x/a x/b y/a z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", []string{"pod", "a"},
				ingress(in(peers(nsPeer(labelSel(corev1.LabelMetadataName, "y"))))))},
			probes: []probe{{expect: []exp{{"x", "x/a", false}, {"z", "x/a", false}}}},
		},
		{
			name: "e2e: should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
			pods: "x/a x/b y/a z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ns-y-match-selector-for-immutable-ns-label", []string{"pod", "a"},
				egress(out(peers(nsPeer(exprSel(corev1.LabelMetadataName, notIn, "y"))))))},
			probes: []probe{{expect: []exp{{"x/a", "y", false}}}},
		},
		{
			name: "the default namespace label is there even when a Namespace object lacks it",
			pods: "x/a y/a z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "from-y", []string{"pod", "a"},
				ingress(in(peers(nsPeer(labelSel(nsName, "y"))))))},
			then: []update{{
				do: func(e *env) {
					e.setNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "y", Labels: map[string]string{"team": "blue"}}})
				},
				probes: []probe{{expect: []exp{{"z", "x/a", false}}}},
			}},
		},

		// podSelector AND/OR namespaceSelector.
		{
			name: "e2e: should enforce policy based on PodSelector or NamespaceSelector",
			pods: "x/a x/b x/c y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ns-y-match-selector", []string{"pod", "a"},
				ingress(in(peers(nsPeer(exprSel(nsName, notIn, "x")), podPeer(labelSel("pod", "b"))))))},
			probes: []probe{{expect: []exp{{"x/c", "x/a", false}}}},
			checks: []check{
				{from: "y/a", to: "x/a", allow: true, ingress: "(from[0])"},
				{from: "x/b", to: "x/a", allow: true, ingress: "(from[1])"},
			},
		},
		{
			name: "e2e: should enforce policy based on PodSelector and NamespaceSelector (also IPv6)",
			pods: "x/a x/b y/a y/b z/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ns-y-podselector-and-nsselector", []string{"pod", "a"},
				ingress(in(peers(podNsPeer(labelSel("pod", "b"), exprSel(nsName, notIn, "x"))))))},
			probes: []probe{
				{expect: []exp{{"*", "x/a", false}, {"y/b", "x/a", true}, {"z/b", "x/a", true}}},
				{v6: true, expect: []exp{{"*", "x/a", false}, {"y/b", "x/a", true}, {"z/b", "x/a", true}}},
			},
		},
		{
			name: "e2e: should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
			pods: "x/a x/b y/a y/b y/c",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ns-y-z-pod-b-c", []string{"pod", "a"},
				ingress(in(peers(podNsPeer(exprSel("pod", opIn, "b", "c"), exprSel(nsName, notIn, "x"))))))},
			probes: []probe{{expect: []exp{{"x", "x/a", false}, {"y/a", "x/a", false}}}},
		},
		{
			name: "e2e: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector (TCP, UDP, SCTP)",
			pods: "x/a x/b y/a y/b z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", []string{"pod", "a"},
				ingress(in(peers(podNsPeer(labelSel("pod", "a"), labelSel(nsName, "y"))))))},
			probes: []probe{
				{expect: []exp{{"*", "x/a", false}, {"y/a", "x/a", true}}},
				{proto: UDP, expect: []exp{{"*", "x/a", false}, {"y/a", "x/a", true}}},
				{proto: SCTP, expect: []exp{{"*", "x/a", false}, {"y/a", "x/a", true}}},
			},
		},

		// Ports and protocols.
		{
			name: "e2e: should enforce policy based on Ports (TCP)",
			pods: "x/a x/b y/a y/b z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-ns-selector", []string{"pod", "a"},
				ingress(in(peers(nsPeer(labelSel(nsName, "y"))), port(pTCP, 81))))},
			probes: []probe{
				{port: 81, expect: []exp{{"x", "x/a", false}, {"y", "x/a", true}, {"z", "x/a", false}}},
				{port: 80, expect: []exp{{"*", "x/a", false}}},
			},
			checks: []check{{from: "y/a", to: "x/a", port: 81, allow: true, ingress: "(from[0], ports[0])"}},
		},
		{
			name: "e2e: should enforce policy based on Ports (UDP, SCTP)",
			pods: "x/a x/b y/a z/a",
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "allow-ingress-on-port-81-ns-x", []string{"pod", "a"}, ingress(in(peers(nsPeer(labelSel(nsName, "y"))), port(pUDP, 81)))),
				policy("x", "allow-sctp-on-port-81", []string{"pod", "b"}, ingress(in(peers(nsPeer(labelSel(nsName, "y"))), port(pSCTP, 81)))),
			},
			probes: []probe{
				{proto: UDP, port: 81, expect: []exp{{"*", "x/a", false}, {"y", "x/a", true}, {"*", "x/b", false}}},
				{proto: SCTP, port: 81, expect: []exp{{"*", "x/a", false}, {"*", "x/b", false}, {"y", "x/b", true}}},
				{proto: TCP, port: 81, expect: []exp{{"*", "x/a", false}, {"*", "x/b", false}}},
			},
		},
		{
			name: "e2e: should enforce ingress policy allowing any port traffic to a server on a specific protocol",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ingress-by-proto", []string{"pod", "a"},
				ingress(in(nil, port(pTCP, nil))))},
			probes: []probe{
				{proto: TCP, port: 80},
				{proto: TCP, port: 12345},
				{proto: UDP, port: 80, expect: []exp{{"*", "x/a", false}}},
			},
			checks: []check{{from: "y/a", to: "x/a", proto: ICMP, allow: false}},
		},
		{
			name: "e2e: should not allow access by TCP when a policy specifies only UDP",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-only-udp-ingress-on-port-81", []string{"pod", "a"},
				ingress(in(nil, port(pUDP, 81))))},
			probes: []probe{
				{port: 81, expect: []exp{{"*", "x/a", false}}},
				{proto: UDP, port: 81},
			},
		},
		{
			name: "e2e: should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "deny-ingress", nil, ingress()),
				policy("x", "allow-only-sctp-ingress-on-port-81", []string{"pod", "a"}, ingress(in(nil, port(pSCTP, 81)))),
			},
			probes: []probe{{port: 81, expect: []exp{{"*", "x", false}}}},
			checks: []check{{from: "y/a", to: "x/a", proto: SCTP, port: 81, allow: true, ingress: "allowed by x/allow-only-sctp-ingress-on-port-81 ingress rule 0 (ports[0])"}},
		},
		{
			name: "e2e: should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-only-sctp-ingress-on-port-80", []string{"pod", "a"},
				ingress(in(nil, port(pSCTP, 80))))},
			probes: []probe{{port: 81, expect: []exp{{"*", "x/a", false}}}, {port: 80, expect: []exp{{"*", "x/a", false}}}},
		},
		{
			name: "endPort: a range of ports, both ends included; endPort equal to port",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "range", []string{"pod", "a"}, ingress(in(nil, portRange(pTCP, 8000, 8100)))),
				policy("x", "range-of-one", []string{"pod", "b"}, ingress(in(nil, portRange(pUDP, 53, 53)))),
			},
			checks: []check{
				{from: "y/a", to: "x/a", port: 7999, allow: false},
				{from: "y/a", to: "x/a", port: 8000, allow: true, ingress: "allowed by x/range ingress rule 0 (ports[0])"},
				{from: "y/a", to: "x/a", port: 8050, allow: true},
				{from: "y/a", to: "x/a", port: 8100, allow: true},
				{from: "y/a", to: "x/a", port: 8101, allow: false},
				{from: "y/a", to: "x/a", proto: UDP, port: 8050, allow: false},
				{from: "y/a", to: "x/b", proto: UDP, port: 53, allow: true},
				{from: "y/a", to: "x/b", proto: UDP, port: 54, allow: false},
			},
		},
		{
			name: "egress ports: only DNS over UDP and TCP",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "dns-only", []string{"pod", "a"},
				egress(out(nil, port(pUDP, 53), port(pTCP, 53))))},
			checks: []check{
				{from: "x/a", to: "y/a", proto: UDP, port: 53, allow: true, egress: "(ports[0])"},
				{from: "x/a", to: "y/a", proto: TCP, port: 53, allow: true, egress: "(ports[1])"},
				{from: "x/a", to: "203.0.113.53", proto: UDP, port: 53, allow: true},
				{from: "x/a", to: "y/a", proto: TCP, port: 80, allow: false},
				{from: "x/a", to: "y/a", proto: SCTP, port: 53, allow: false},
			},
		},

		// Named ports.
		{
			name: "e2e: should allow ingress access on one named port",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-all", nil,
				ingress(in(nil, port("", "serve-81-tcp"))))},
			probes: []probe{{port: 81}, {port: 80, expect: []exp{{"*", "x", false}}}},
		},
		{
			name: "e2e: should allow ingress access from namespace on one named port",
			pods: "x/a x/b y/a z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-ns-selector-80", []string{"pod", "a"},
				ingress(in(peers(nsPeer(labelSel(nsName, "y"))), port(pTCP, "serve-80-tcp"))))},
			probes: []probe{
				{port: 80, expect: []exp{{"x", "x/a", false}, {"z", "x/a", false}}},
				{port: 81, expect: []exp{{"*", "x/a", false}}},
			},
		},
		{
			name: "e2e: should allow egress access on one named port",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-egress", nil,
				egress(out(nil, port("", "serve-80-tcp"))))},
			probes: []probe{{port: 80}, {port: 81, expect: []exp{{"x", "*", false}}}},
		},
		{
			name: "e2e: should not allow all ports if it cannot limit to the requested port (a name that resolves nowhere)",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ingress-on-nonexistent-port", []string{"pod", "a"},
				ingress(in(nil, port(pTCP, "no-such-port"))))},
			probes: []probe{{port: 80, expect: []exp{{"*", "x/a", false}}}},
			checks: []check{{from: "y/a", to: "x/a", allow: false, ingress: "x/a isolated by x/allow-ingress-on-nonexistent-port; no rule matches"}},
		},
		{
			name: "named port: the container port's protocol must be the rule's (default TCP)",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "udp-name-tcp-rule", []string{"pod", "a"}, ingress(in(nil, port("", "serve-80-udp")))),
				policy("x", "udp-name-udp-rule", []string{"pod", "b"}, ingress(in(nil, port(pUDP, "serve-80-udp")))),
			},
			checks: []check{
				{from: "y/a", to: "x/a", proto: TCP, port: 80, allow: false},
				{from: "y/a", to: "x/a", proto: UDP, port: 80, allow: false},
				{from: "y/a", to: "x/b", proto: UDP, port: 80, allow: true},
				{from: "y/a", to: "x/b", proto: TCP, port: 80, allow: false},
				{from: "y/a", to: "x/b", proto: UDP, port: 81, allow: false},
			},
		},
		{
			name:  "named port resolves on each destination pod",
			pods:  "x/a y/a",
			extra: []corev1.Pod{withContainerPort("x/d", "serve-80-tcp", pTCP, 8080)},
			policies: []*networkingv1.NetworkPolicy{policy("x", "named", nil,
				ingress(in(nil, port("", "serve-80-tcp"))))},
			checks: []check{
				{from: "y/a", to: "x/a", port: 80, allow: true},
				{from: "y/a", to: "x/a", port: 8080, allow: false},
				{from: "y/a", to: "x/d", port: 8080, allow: true},
				{from: "y/a", to: "x/d", port: 80, allow: false},
			},
		},
		{
			name: "egress named port: only a destination pod declaring it matches",
			pods: "x/a y/a",
			extra: []corev1.Pod{
				hostNetworkPod("y/h", 2),
				podWith("y/s", corev1.PodSucceeded, "10.244.2.77"),
			},
			policies: []*networkingv1.NetworkPolicy{policy("x", "egress-named", []string{"pod", "a"},
				egress(out(nil, port("", "serve-80-tcp"))))},
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, allow: true, egress: "allowed by x/egress-named egress rule 0 (ports[0])"},
				{from: "x/a", to: "203.0.113.5", port: 80, allow: false, egress: "no rule matches"},
				{from: "x/a", to: "y/h", port: 80, allow: false},
				{from: "x/a", to: "10.244.2.77", port: 80, allow: false},
			},
		},

		// Stacked policies.
		{
			name: "e2e: should enforce multiple, stacked policies with overlapping podSelectors",
			pods: "x/a x/b y/a y/b z/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-ns-selector", []string{"pod", "a"},
				ingress(in(peers(nsPeer(labelSel(nsName, "y"))), port(pTCP, 81))))},
			probes: []probe{
				{port: 81, expect: []exp{{"x", "x/a", false}, {"y", "x/a", true}, {"z", "x/a", false}}},
				{port: 80, expect: []exp{{"*", "x/a", false}}},
			},
			then: []update{{
				do: func(e *env) {
					e.setPolicy(policy("x", "allow-client-a-via-ns-selector-80", []string{"pod", "a"},
						ingress(in(peers(nsPeer(labelSel(nsName, "y"))), port(pTCP, 80)))))
				},
				probes: []probe{{port: 80, expect: []exp{{"x", "x/a", false}, {"y", "x/a", true}, {"z", "x/a", false}}}},
			}},
		},
		{
			name: "e2e: should enforce multiple ingress policies with ingress allow-all policy taking precedence",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-ingress-port-80", nil,
				ingress(in(nil, port("", 80))))},
			probes: []probe{{port: 81, expect: []exp{{"*", "x", false}}}},
			then: []update{{
				do:     func(e *env) { e.setPolicy(policy("x", "allow-ingress", nil, ingress(in(nil)))) },
				probes: []probe{{port: 81}},
				checks: []check{{from: "y/a", to: "x/a", port: 81, allow: true, ingress: "isolated by x/allow-ingress, x/allow-ingress-port-80; allowed by x/allow-ingress ingress rule 0"}},
			}},
		},
		{
			name: "e2e: should enforce multiple egress policies with egress allow-all policy taking precedence",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-egress-port-80", nil,
				egress(out(nil, port("", 80))))},
			probes: []probe{{port: 81, expect: []exp{{"x", "*", false}}}},
			then: []update{{
				do:     func(e *env) { e.setPolicy(policy("x", "allow-egress", nil, egress(out(nil)))) },
				probes: []probe{{port: 81}},
			}},
		},

		// Egress.
		{
			name:     "e2e: should deny egress from pods based on PodSelector",
			pods:     "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-egress-pod-a", []string{"pod", "a"}, egress())},
			probes:   []probe{{expect: []exp{{"x/a", "*", false}}}},
		},
		{
			name:     "e2e: should deny egress from all pods in a namespace",
			pods:     "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-egress-ns-x", nil, egress())},
			probes:   []probe{{expect: []exp{{"x", "*", false}}}},
		},
		{
			name: "e2e: should work with Ingress, Egress specified together",
			pods: "x/a x/b x/c y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-pod-selector", []string{"pod", "a"},
				egress(out(nil, port("", 80))), ingress(in(peers(podPeer(labelSel("pod", "b"))))))},
			probes: []probe{
				{port: 80, expect: []exp{{"*", "x/a", false}, {"x/b", "x/a", true}}},
				{port: 81, expect: []exp{{"*", "x/a", false}, {"x/a", "*", false}, {"x/b", "x/a", true}}},
			},
		},
		{
			name: "e2e: should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
			pods: "x/a y/a y/b",
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "allow-to-ns-y-pod-a", []string{"pod", "a"}, egress(out(peers(podNsPeer(labelSel("pod", "a"), labelSel(nsName, "y")))))),
				policy("y", "allow-from-xa-on-ya-match-selector", []string{"pod", "a"}, ingress(in(peers(podNsPeer(labelSel("pod", "a"), labelSel(nsName, "x")))))),
				policy("y", "allow-from-xa-on-yb-match-selector", []string{"pod", "b"}, ingress(in(peers(podNsPeer(labelSel("pod", "a"), labelSel(nsName, "x")))))),
			},
			probes: []probe{{expect: []exp{{"x/a", "*", false}, {"*", "y/a", false}, {"x/a", "y/a", true}, {"*", "y/b", false}}}},
			checks: []check{{from: "x/a", to: "y/b", allow: false,
				egress:  "x/a isolated by x/allow-to-ns-y-pod-a; no rule matches",
				ingress: "allowed by y/allow-from-xa-on-yb-match-selector ingress rule 0 (from[0])"}},
		},
		{
			name: "e2e: should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
			pods: "x/a y/a y/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-to-ns-y-pod-a", []string{"pod", "a"},
				egress(out(peers(podNsPeer(labelSel("pod", "a"), labelSel(nsName, "y"))))))},
			probes: []probe{{expect: []exp{{"x/a", "*", false}, {"x/a", "y/a", true}}}},
			checks: []check{{from: "x/a", to: "y/a", allow: true, egress: "allowed by x/allow-to-ns-y-pod-a egress rule 0 (to[0])"}},
		},
		{
			name: "e2e: should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-egress-for-target", []string{"pod", "a"},
				egress(out(nil)))},
			probes: []probe{{}},
			then: []update{{
				do: func(e *env) {
					e.setPolicy(policy("x", "deny-ingress-via-label-selector", []string{"pod", "a"}, ingress()))
				},
				probes: []probe{{expect: []exp{{"*", "x/a", false}}}},
			}},
		},

		// ipBlock.
		{
			name: "e2e: should allow egress access to server in CIDR block",
			pods: "x/a y/a y/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-cidr-egress-rule", []string{"pod", "a"},
				egress(out(peers(blockPeer(host32("y/b"))))))},
			probes: []probe{{expect: []exp{{"x/a", "*", false}, {"x/a", "y/b", true}}}},
		},
		{
			name:     "e2e: should enforce except clause while egress access to server in CIDR block",
			pods:     "x/a x/b x/c",
			policies: []*networkingv1.NetworkPolicy{cidrExcept},
			probes:   []probe{{expect: []exp{{"x/a", "x/b", false}}}},
			checks:   []check{{from: "x/a", to: "x/b", allow: false, egress: "no rule matches"}},
		},
		{
			// The spec replaces the policy (same name, UpdatePolicy) with
			// one allowing only x/b's /32.
			name:     "e2e: should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
			pods:     "x/a x/b x/c",
			policies: []*networkingv1.NetworkPolicy{cidrExcept},
			probes:   []probe{{expect: []exp{{"x/a", "x/b", false}}}},
			then: []update{{
				do: func(e *env) {
					e.setPolicy(policy("x", "allow-client-a-via-cidr-egress-rule", []string{"pod", "a"},
						egress(out(peers(blockPeer(host32("x/b")))))))
				},
				probes: []probe{{expect: []exp{{"x/a", "*", false}, {"x/a", "x/b", true}}}},
			}},
		},
		{
			name: "an address in one policy's except and another's cidr is allowed (policies add up)",
			pods: "x/a x/b x/c",
			policies: []*networkingv1.NetworkPolicy{
				cidrExcept,
				policy("x", "allow-b", []string{"pod", "a"}, egress(out(peers(blockPeer(host32("x/b")))))),
			},
			probes: []probe{{}},
			checks: []check{
				{from: "x/a", to: "x/b", allow: true, egress: "isolated by x/allow-b, x/allow-client-a-via-cidr-egress-rule; allowed by x/allow-b egress rule 0 (to[0])"},
				{from: "x/a", to: "x/c", allow: true, egress: "allowed by x/allow-client-a-via-cidr-egress-rule egress rule 0 (to[0])"},
			},
		},
		{
			name: "ingress ipBlock matches pod addresses, and node addresses it covers",
			pods: "x/a x/b y/a y/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "from-n2-pods", []string{"pod", "a"},
				ingress(in(peers(blockPeer("10.244.2.0/24")))))},
			probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/b", "x/a", true}, {"y/b", "x/a", true}}}},
			checks: []check{
				{from: "gw:n2", to: "x/a", allow: true, ingress: "(from[0])"},
				{from: "node:n2", to: "x/a", allow: false},
				{from: "x/b@6", to: "x/a@6", allow: false},
			},
		},
		{
			name: "egress ipBlock to the outside, except the cluster",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "internet", []string{"pod", "a"},
				egress(out(peers(blockPeer("0.0.0.0/0", "10.0.0.0/8", "192.168.0.0/16")))))},
			checks: []check{
				{from: "x/a", to: "203.0.113.5", port: 443, allow: true},
				{from: "x/a", to: "y/a", allow: false},
				{from: "x/a", to: "node:n2", allow: false},
				{from: "x/a", to: "y/a@6", allow: false},
				{from: "x/a", to: "2001:db8::1", allow: false},
			},
		},

		// IPv6.
		{
			name: "IPv6 ipBlock with except; an IPv6 block never matches IPv4",
			pods: "x/a x/b y/a y/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "v6-block", []string{"pod", "a"},
				ingress(in(peers(blockPeer("fd00:10:244::/48", "fd00:10:244:2::/64")))))},
			probes: []probe{
				{v6: true, expect: []exp{{"*", "x/a", false}, {"y/a", "x/a", true}}},
				{expect: []exp{{"*", "x/a", false}}},
			},
		},
		{
			name:     "IPv6: deny-all and node exceptions per family",
			pods:     "x/a x/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-all", nil, ingress(), egress())},
			probes:   []probe{{v6: true, expect: []exp{{"*", "*", false}}}},
			checks: []check{
				{from: "fd00:10:244:1::1", to: "x/a@6", allow: true, ingress: "own node"},
				{from: "fd00:10:244:2::1", to: "x/a@6", allow: false},
				{from: "x/a@6", to: "x/a@6", allow: true},
			},
		},

		// Pods policies cannot select.
		{
			name:     "hostNetwork pods are never subjects",
			pods:     "x/a y/a",
			extra:    []corev1.Pod{hostNetworkPod("x/h", 2)},
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-all", nil, ingress(), egress())},
			checks: []check{
				{from: "y/a", to: "x/h", allow: true, ingress: "not a pod"},
				{from: "x/h", to: "y/a", allow: true, egress: "not a pod"},
				{from: "y/a", to: "x/a", allow: false},
			},
		},
		{
			name:  "hostNetwork pods are never pod peers; an ipBlock of their node matches them",
			pods:  "x/a x/c",
			extra: []corev1.Pod{hostNetworkPod("x/h", 2)},
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "from-h-by-label", []string{"pod", "a"}, ingress(in(peers(podPeer(labelSel("pod", "h")))))),
				policy("x", "from-n2-by-block", []string{"pod", "c"}, ingress(in(peers(blockPeer(nodeIP(2).String()+"/32"))))),
			},
			checks: []check{
				{from: "x/h", to: "x/a", allow: false},
				{from: "x/h", to: "x/c", allow: true, ingress: "(from[0])"},
			},
		},
		{
			name: "Succeeded and Failed pods are neither subjects nor peers; their address goes to the running pod reusing it",
			pods: "x/a y/a y/c",
			extra: []corev1.Pod{
				podWith("x/s", corev1.PodSucceeded, podIP("y", "c", false).String(), "pod", "b"),
				podWith("x/f", corev1.PodFailed, "10.244.1.99", "pod", "f"),
			},
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "from-b", []string{"pod", "a"}, ingress(in(peers(podPeer(labelSel("pod", "b")))))),
				policy("x", "deny-f", []string{"pod", "f"}, ingress()),
			},
			checks: []check{
				{from: "y/c", to: "x/a", allow: false, ingress: "no rule matches"},
				{from: "y/a", to: "10.244.1.99", allow: true, ingress: "not a pod"},
			},
		},
		{
			name:     "a pod without addresses is nobody's peer and nothing to isolate",
			pods:     "x/a y/a",
			extra:    []corev1.Pod{podWith("y/p", corev1.PodPending, "", "pod", "b")},
			policies: []*networkingv1.NetworkPolicy{policy("x", "from-any-b", []string{"pod", "a"}, ingress(in(peers(podNsPeer(labelSel("pod", "b"), labelSel())))))},
			probes:   []probe{{expect: []exp{{"*", "x/a", false}}}},
		},

		// Exceptions.
		{
			name:     "traffic from a pod's own node is allowed, from another node it is judged",
			pods:     "x/a x/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-all", nil, ingress(), egress())},
			checks: []check{
				{from: "node:n1", to: "x/a", allow: true, egress: "not a pod", ingress: "traffic between x/a and its own node"},
				{from: "gw:n1", to: "x/a", allow: true, ingress: "own node"},
				{from: "node:n2", to: "x/a", allow: false, ingress: "x/a isolated by x/deny-all; no rule matches"},
				{from: "host:n2", to: "x/b", allow: true, ingress: "own node"},
				{from: "host:n1", to: "x/b", allow: false},
			},
		},
		{
			name:     "traffic from a pod to its own node is allowed",
			pods:     "x/a x/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-all", nil, ingress(), egress())},
			checks: []check{
				{from: "x/a", to: "node:n1", allow: true, egress: "own node", ingress: "not a pod"},
				{from: "x/a", to: "host:n1", port: 10250, allow: true},
				{from: "x/a", to: "node:n2", allow: false, egress: "no rule matches"},
			},
		},
		{
			name:     "a pod reaching itself is allowed",
			pods:     "x/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-all", nil, ingress(), egress())},
			checks: []check{
				{from: "x/a", to: "x/a", allow: true, egress: "x/a reaches itself", ingress: "x/a reaches itself"},
				{from: "x/a@6", to: "x/a@6", port: 81, allow: true},
			},
		},

		// policyTypes defaulting.
		{
			name: "policyTypes empty with egress rules: Ingress and Egress",
			pods: "x/a x/b x/c y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "defaulted", []string{"pod", "a"}, func(np *networkingv1.NetworkPolicy) {
				np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{out(peers(podPeer(labelSel("pod", "b"))))}
			})},
			probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/a", "*", false}, {"x/a", "x/b", true}}}},
		},
		{
			name: "policyTypes empty without egress rules: Ingress only",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "defaulted", []string{"pod", "a"}, func(np *networkingv1.NetworkPolicy) {
				np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{in(peers(podPeer(labelSel("pod", "b"))))}
			})},
			probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/b", "x/a", true}}}},
			checks: []check{{from: "x/a", to: "y/a", allow: true, egress: "x/a is not isolated"}},
		},
		{
			name: "policyTypes [Ingress] ignores egress rules; [Egress] ignores ingress rules",
			pods: "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{
				policy("x", "ingress-only", []string{"pod", "a"}, withTypes(networkingv1.PolicyTypeIngress), func(np *networkingv1.NetworkPolicy) {
					np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{out(peers(podPeer(labelSel("pod", "nobody"))))}
				}),
				policy("x", "egress-only", []string{"pod", "b"}, withTypes(networkingv1.PolicyTypeEgress), func(np *networkingv1.NetworkPolicy) {
					np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{in(nil)}
				}),
			},
			probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/b", "*", false}}}},
		},

		// Invalid input fails closed.
		{
			name:     "an invalid podSelector selects the whole namespace and allows nothing",
			pods:     "x/a x/b y/a",
			policies: []*networkingv1.NetworkPolicy{policySel("x", "bad-subjects", *exprSel("pod", "Within", "a"), ingress(in(nil)))},
			probes:   []probe{{expect: []exp{{"*", "x", false}}}},
		},
		{
			name: "an invalid peer matches nothing; the rule's other peers still apply",
			pods: "x/a x/b x/c",
			policies: []*networkingv1.NetworkPolicy{policy("x", "bad-peer", []string{"pod", "a"},
				ingress(in(peers(podPeer(exprSel("pod", "Equals", "b")), podPeer(labelSel("pod", "c")), networkingv1.NetworkPolicyPeer{}))))},
			probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/c", "x/a", true}}}},
			checks: []check{{from: "x/c", to: "x/a", allow: true, ingress: "(from[1])"}},
		},
		{
			name: "an invalid port matches nothing, it does not widen the rule to every port",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "bad-port", []string{"pod", "a"},
				ingress(in(nil, port("ICMP", 80), port(pTCP, 81), port(pTCP, 70000))))},
			checks: []check{
				{from: "y/a", to: "x/a", port: 80, allow: false},
				{from: "y/a", to: "x/a", proto: ICMP, allow: false},
				{from: "y/a", to: "x/a", port: 81, allow: true, ingress: "(ports[1])"},
			},
		},
		{
			name: "an unknown policy type isolates both directions",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "bad-type", []string{"pod", "a"}, withTypes("Both"), func(np *networkingv1.NetworkPolicy) {
				np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{in(nil)}
			})},
			probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/a", "*", false}}}},
		},
		{
			name: "an except outside its cidr (or equal to it) makes the ipBlock match nothing",
			pods: "x/a x/b x/c",
			policies: []*networkingv1.NetworkPolicy{policy("x", "bad-except", []string{"pod", "a"},
				egress(out(peers(
					blockPeer("10.244.0.0/16", "10.245.0.0/24"),
					blockPeer("10.244.2.0/24", "10.244.2.0/24"),
					podPeer(labelSel("pod", "c"))))))},
			probes: []probe{{expect: []exp{{"x/a", "*", false}, {"x/a", "x/c", true}}}},
		},

		// Updates.
		{
			name:     "e2e: should enforce updated policy",
			pods:     "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{allowAllIngress},
			probes:   []probe{{port: 81}},
			then: []update{{
				do: func(e *env) {
					np := allowAllIngress.DeepCopy()
					np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
					e.setPolicy(np)
				},
				probes: []probe{{port: 81, expect: []exp{{"*", "x", false}}}},
			}},
		},
		{
			name: "e2e: should allow ingress access from updated namespace",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-ns-selector", []string{"pod", "a"},
				ingress(in(peers(nsPeer(labelSel("ns2", "updated"))))))},
			probes: []probe{{expect: []exp{{"*", "x/a", false}}}},
			then: []update{
				{
					do:     func(e *env) { e.labelNamespace("y", "ns2", "updated") },
					probes: []probe{{expect: []exp{{"*", "x/a", false}, {"y", "*", true}}}},
				},
				{
					do:     func(e *env) { e.labelNamespace("y", "ns2", "reverted") },
					probes: []probe{{expect: []exp{{"*", "x/a", false}}}},
				},
			},
		},
		{
			name: "e2e: should allow ingress access from updated pod",
			pods: "x/a x/b",
			policies: []*networkingv1.NetworkPolicy{policy("x", "allow-client-a-via-pod-selector", []string{"pod", "a"},
				ingress(in(peers(podPeer(labelSel("pod", "b", "pod2", "updated"))))))},
			probes: []probe{{expect: []exp{{"*", "x/a", false}}}},
			then: []update{{
				do:     func(e *env) { e.labelPod("x/b", "pod2", "updated") },
				probes: []probe{{expect: []exp{{"*", "x/a", false}, {"x/b", "x/a", true}}}},
			}},
		},
		{
			name:     "e2e: should deny ingress access to updated pod",
			pods:     "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-ingress-via-label-selector", []string{"target", "isolated"}, ingress())},
			probes:   []probe{{}},
			then: []update{{
				do:     func(e *env) { e.labelPod("x/a", "target", "isolated") },
				probes: []probe{{expect: []exp{{"*", "x/a", false}}}},
			}},
		},
		{
			name:     "e2e: should stop enforcing policies after they are deleted",
			pods:     "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "deny-all", nil, ingress(), egress())},
			probes:   []probe{{expect: []exp{{"x", "*", false}, {"*", "x", false}}}},
			then: []update{{
				do:     func(e *env) { e.deletePolicy("x/deny-all") },
				probes: []probe{{}},
			}},
		},
		{
			name: "a pod's address changes: the old address is nobody's",
			pods: "x/a y/a",
			policies: []*networkingv1.NetworkPolicy{policy("x", "from-y-a", []string{"pod", "a"},
				ingress(in(peers(podNsPeer(labelSel("pod", "a"), labelSel(nsName, "y"))))))},
			checks: []check{{from: "y/a", to: "x/a", allow: true}},
			then: []update{{
				do: func(e *env) {
					p := testPod("y/a")
					p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.200"}}
					e.setPod(&p)
				},
				checks: []check{
					{from: "10.244.1.200", to: "x/a", allow: true},
					{from: podIP("y", "a", false).String(), to: "x/a", allow: false},
				},
			}},
		},
	}

	if len(cases) < 40 {
		t.Fatalf("%d cases, want at least 40", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			podKeys := strings.Fields(tc.pods)
			e := newEnv(t, podKeys, tc.extra)
			for _, np := range tc.policies {
				e.setPolicy(np)
			}
			run := func(probes []probe, checks []check) {
				for _, pr := range probes {
					e.runProbe(pr, podKeys)
				}
				for _, c := range checks {
					e.runCheck(c)
				}
			}
			run(tc.probes, tc.checks)
			for i, u := range tc.then {
				t.Logf("update %d", i)
				u.do(e)
				run(u.probes, u.checks)
			}
		})
	}
}
