package servicenat

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/wgmesh/wgmesh/nft"
)

func testService(mutate func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "198.18.128.10", ClusterIPs: []string{"198.18.128.10", "2001:db8:18::10"},
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("web")},
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)},
			},
		},
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

func testSlice(name string, fam discoveryv1.AddressType, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: fam,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8080))},
			{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(int32(5353))},
		},
		Endpoints: eps,
	}
}

func testEP(addr, node string, ready, serving, terminating bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: ptr.To(node),
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(serving), Terminating: ptr.To(terminating)}}
}

var convOpts = ConvertOptions{NodeName: "n1", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.128.0/20"), netip.MustParsePrefix("2001:db8:18::/112")}}

func TestConvertResolvesPortsAndConditions(t *testing.T) {
	s, probs := Convert(testService(nil), []*discoveryv1.EndpointSlice{
		testSlice("v4", discoveryv1.AddressTypeIPv4, testEP("198.19.1.5", "n1", true, true, false), testEP("198.19.2.5", "n2", false, true, true)),
		testSlice("v6", discoveryv1.AddressTypeIPv6, testEP("2001:db8:19:1::5", "n1", true, true, false)),
	}, convOpts)
	if len(probs) != 0 {
		t.Fatalf("problems: %v", probs)
	}
	if len(s.ClusterIPs) != 2 || len(s.Ports) != 2 {
		t.Fatalf("converted %+v", s)
	}
	http := s.Ports[0]
	if http.Port != 80 || http.Protocol != nft.TCP || len(http.Endpoints) != 3 {
		t.Fatalf("http port %+v", http)
	}
	for _, e := range http.Endpoints {
		if e.Port != 8080 {
			t.Errorf("endpoint %s: target port by name not resolved", e.AddrPort())
		}
		if e.Addr == netip.MustParseAddr("198.19.2.5") && (e.Ready || !e.Serving || !e.Terminating || e.Local) {
			t.Errorf("terminating endpoint converted as %+v", e)
		}
		if e.Addr == netip.MustParseAddr("198.19.1.5") && !e.Local {
			t.Errorf("endpoint on this node not marked local")
		}
	}
	if s.Ports[1].Protocol != nft.UDP || s.Ports[1].Endpoints[0].Port != 5353 {
		t.Errorf("dns port %+v", s.Ports[1])
	}
}

func TestConvertReportsBadFieldsAndKeepsTheRest(t *testing.T) {
	svc := testService(func(s *corev1.Service) {
		s.Spec.ClusterIPs = []string{"198.18.128.10", "10.96.0.1"} // the second outside --service-cidrs
		s.Spec.ExternalIPs = []string{"not-an-ip", "198.18.0.200"}
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "bad", Protocol: "ICMP", Port: 1})
	})
	bad := testSlice("v4", discoveryv1.AddressTypeIPv4, testEP("198.19.1.5", "n1", true, true, false), testEP("2001:db8::1", "n1", true, true, false))
	s, probs := Convert(svc, []*discoveryv1.EndpointSlice{bad}, convOpts)
	var text []string
	for _, p := range probs {
		text = append(text, p.String())
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{
		`Service ns/web: spec.clusterIPs[1]="10.96.0.1" is outside the service CIDRs`,
		`Service ns/web: spec.externalIPs[0]="not-an-ip" is not an IP address`,
		`Service ns/web: spec.ports[2].protocol="ICMP" is not TCP, UDP or SCTP`,
		`EndpointSlice ns/v4: endpoints[1].addresses[0]="2001:db8::1" is not an IPv4 address`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing problem %q in:\n%s", want, all)
		}
	}
	if len(s.ClusterIPs) != 1 || len(s.ExternalIPs) != 1 || len(s.Ports) != 2 || len(s.Ports[0].Endpoints) != 1 {
		t.Errorf("the usable rest was not kept: %+v", s)
	}
}

func TestConvertPolicies(t *testing.T) {
	ipModeProxy := corev1.LoadBalancerIPModeProxy
	local := corev1.ServiceInternalTrafficPolicyLocal
	svc := testService(func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.InternalTrafficPolicy = &local
		s.Spec.HealthCheckNodePort = 32000
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(60))}}
		s.Spec.LoadBalancerSourceRanges = []string{"198.18.0.0/24"}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.18.0.201"}, {IP: "198.18.0.202", IPMode: &ipModeProxy}}
	})
	s, probs := Convert(svc, nil, convOpts)
	if len(probs) != 0 {
		t.Fatal(probs)
	}
	if !s.ExternalLocal || !s.InternalLocal || s.HealthCheckNodePort != 32000 || s.AffinityTimeout != time.Minute {
		t.Errorf("policies: %+v", s)
	}
	if len(s.LoadBalancerIPs) != 1 || s.LoadBalancerIPs[0] != netip.MustParseAddr("198.18.0.201") {
		t.Errorf("load-balancer IPs %v: want only the one without ipMode Proxy", s.LoadBalancerIPs)
	}
	if s.Ports[0].NodePort != 30080 || len(s.SourceRanges) != 1 {
		t.Errorf("nodePort/sourceRanges: %+v", s)
	}
}

func TestProxiedSkipsHeadlessExternalNameAndOtherProxies(t *testing.T) {
	for name, mutate := range map[string]func(*corev1.Service){
		"headless": func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
		},
		"externalName": func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName },
		"other proxy":  func(s *corev1.Service) { s.Labels = map[string]string{LabelServiceProxyName: "other"} },
	} {
		if Proxied(testService(mutate)) {
			t.Errorf("%s Service is proxied", name)
		}
	}
	if !Proxied(testService(nil)) {
		t.Error("a plain ClusterIP Service is not proxied")
	}
}

func TestTableSettlesContestedKeys(t *testing.T) {
	in := flowInput()
	in.Services = nil
	a := Service{ServiceKey: ServiceKey{"ns", "a"}, ClusterIPs: mustAddrs("198.18.128.20"), ExternalIPs: mustAddrs("198.18.0.200"),
		Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: []Endpoint{ep("198.19.1.5", 80, true)}}}}
	b := a
	b.ServiceKey, b.ClusterIPs = ServiceKey{"ns", "b"}, mustAddrs("198.18.128.21")
	b.Ports = []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: []Endpoint{ep("198.19.1.6", 80, true)}}}
	key := nft.MapKey{Addr: netip.MustParseAddr("198.18.0.200"), Proto: nft.TCP, Port: 80}
	// The fast path (elements) and chains (session affinity) alike.
	sticky := func(s Service) Service { s.AffinityTimeout = time.Hour; return s }
	for _, pair := range [][2]Service{{a, b}, {sticky(a), sticky(b)}, {a, sticky(b)}, {sticky(a), b}} {
		for _, order := range [][]Service{{pair[0], pair[1]}, {pair[1], pair[0]}} {
			tb := NewTable(in)
			for _, s := range order {
				tb.Update(s)
			}
			if got := reaches(tb.Full(nft.IPv4), key); got != "accept -> 198.19.1.5:80 masq(198.19.1.1)" {
				t.Errorf("order %s (fast %v) first: %s reaches %s, want Service ns/a's endpoint", order[0].Name, Fast(order[0]), key, got)
			}
			if len(tb.Conflicts(ServiceKey{"ns", "b"})) == 0 {
				t.Error("the losing Service has no conflict to report")
			}
			tb.Delete(ServiceKey{"ns", "a"})
			if got := reaches(tb.Full(nft.IPv4), key); got != "accept -> 198.19.1.6:80 masq(198.19.1.1)" {
				t.Errorf("after ns/a is gone %s reaches %s, want ns/b's endpoint", key, got)
			}
		}
	}
}

func TestNodePortIPs(t *testing.T) {
	node := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}, {Type: corev1.NodeInternalIP, Address: "2001:db8::11"},
		{Type: corev1.NodeExternalIP, Address: "198.18.5.11"}, {Type: corev1.NodeHostName, Address: "n1"},
	}}}
	local := mustAddrs("127.0.0.1", "::1", "198.18.0.11", "198.18.5.11", "198.19.1.1", "2001:db8::11")
	for _, tc := range []struct {
		ranges []netip.Prefix
		want   string
	}{
		{nil, "[198.18.0.11 2001:db8::11]"},
		{[]netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}, "[198.18.0.11 198.18.5.11]"},
		{[]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, "[198.18.0.11 198.18.5.11 198.19.1.1 2001:db8::11]"},
	} {
		if got := fmt.Sprint(NodePortIPs(node, local, tc.ranges)); got != tc.want {
			t.Errorf("ranges %v: %s, want %s (never loopback)", tc.ranges, got, tc.want)
		}
	}
}
