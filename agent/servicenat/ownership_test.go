package servicenat

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wgmesh/wgmesh/nft"
)

// attacker is a Service in a namespace that sorts first, whose external
// addresses name what it should never capture.
func attacker(externalIPs []string, lbIPs ...string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "aaa", Name: "evil"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "198.18.128.99", ClusterIPs: []string{"198.18.128.99"},
			ExternalIPs: externalIPs,
			Ports:       []corev1.ServicePort{{Name: "p", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
	}
	if len(lbIPs) > 0 {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		for _, ip := range lbIPs {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
	}
	return s
}

// clusterReserved is what the agent and the proxy reserve in the test
// cluster: the API server, two nodes, a WireGuard endpoint learned from a
// node behind NAT, an external peer's range.
func clusterReserved() Reserved {
	var r Reserved
	r.AddAddr(netip.MustParseAddr("198.18.0.1"), "the API server's address")
	r.AddAddr(netip.MustParseAddr("198.18.0.11"), "the InternalIP of Node n1")
	r.AddAddr(netip.MustParseAddr("198.18.0.12"), "the InternalIP of Node n2")
	r.AddAddr(netip.MustParseAddr("198.18.1.1"), "the WireGuard endpoint in use for peer nat-1")
	r.AddPrefix(netip.MustParsePrefix("198.18.200.0/24"), "in the allowedIPs of MeshPeer laptop")
	r.AddPrefix(netip.MustParsePrefix("198.19.0.0/16"), "a pod address (cluster CIDR 198.19.0.0/16)")
	return r
}

// TestExternalAddressesOfTheClusterAreRefused: an externalIP or a load-balancer
// IP that is a ClusterIP (or anywhere in a service CIDR), the API server, a
// node, a learned WireGuard endpoint, an external peer's range or a pod is
// not programmed and is reported with the field and value; an ordinary
// external address still is. The control: without the reservations (the
// service CIDRs aside, which are always reserved) the same Service takes
// them, which is the attack.
func TestExternalAddressesOfTheClusterAreRefused(t *testing.T) {
	taken := []string{"198.18.128.10", "198.18.130.1", "198.18.0.1", "198.18.0.11", "198.18.1.1", "198.18.200.7", "198.19.2.5"}
	why := []string{"service CIDR", "service CIDR", "API server", "Node n1", "WireGuard endpoint", "MeshPeer laptop", "pod address"}
	svc := attacker(append(append([]string{}, taken...), "198.18.0.200"), "198.18.0.12", "198.18.0.201")

	o := convOpts
	o.Reserved = clusterReserved()
	s, probs := Convert(svc, nil, o)
	if got := joinAddrs(s.ExternalIPs); got != "198.18.0.200" {
		t.Errorf("programmed externalIPs %s, want only 198.18.0.200", got)
	}
	if got := joinAddrs(s.LoadBalancerIPs); got != "198.18.0.201" {
		t.Errorf("programmed load-balancer IPs %s, want only 198.18.0.201", got)
	}
	for i, a := range taken {
		p := findProblem(probs, fmt.Sprintf("spec.externalIPs[%d]", i))
		if p == nil || p.Value != a || !strings.Contains(p.Reason, why[i]) || !strings.Contains(p.String(), "aaa/evil") {
			t.Errorf("externalIPs[%d]=%s: problem %v, want one naming the Service, the value and %q", i, a, p, why[i])
		}
	}
	if p := findProblem(probs, "status.loadBalancer.ingress[0].ip"); p == nil || p.Value != "198.18.0.12" || !strings.Contains(p.Reason, "Node n2") {
		t.Errorf("load-balancer IP of a node: problem %v", p)
	}

	// Control: nothing but the service CIDRs reserved.
	s, _ = Convert(svc, nil, convOpts)
	if got := joinAddrs(s.ExternalIPs); got != "198.18.0.1,198.18.0.11,198.18.1.1,198.18.200.7,198.19.2.5,198.18.0.200" {
		t.Errorf("without reservations the attacker programs %s", got)
	}
}

// TestAttackerCannotCaptureTraffic traces packets through the rendered rules:
// with the attacker's Service converted as the agent converts it, the API
// server and a node's kubelet are untouched by the NAT and another Service's
// ClusterIP still reaches that Service. The control renders the attacker
// unchecked and shows the capture.
func TestAttackerCannotCaptureTraffic(t *testing.T) {
	const pod = "198.19.1.20"
	svc := attacker([]string{"198.18.0.1", "198.18.0.12"})
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "api", Protocol: corev1.ProtocolTCP, Port: 6443, TargetPort: intstr.FromInt32(80)},
		corev1.ServicePort{Name: "kubelet", Protocol: corev1.ProtocolTCP, Port: 10250, TargetPort: intstr.FromInt32(80)})
	for _, tc := range []struct {
		name     string
		reserved Reserved
		want     map[string]string
	}{
		{"protected", clusterReserved(), map[string]string{"198.18.0.1:6443": "accept", "198.18.0.12:10250": "accept"}},
		{"control: unchecked", Reserved{}, map[string]string{"198.18.0.1:6443": "reject", "198.18.0.12:10250": "reject"}},
	} {
		o := convOpts
		o.Reserved = tc.reserved
		evil, _ := Convert(svc, nil, o)
		in := flowInput()
		in.Services = append(in.Services, evil)
		for dst, want := range tc.want {
			ap := netip.MustParseAddrPort(dst)
			tr := newTracer(in, nft.IPv4)
			got := nft.Outcomes(tr.Trace(nft.Packet{Src: netip.MustParseAddr(pod), Dst: ap.Addr(), Proto: nft.TCP, DPort: ap.Port()}))
			if got != want {
				t.Errorf("%s: pod -> %s: %s, want %s", tc.name, dst, got, want)
			}
		}
	}
}

// TestClusterIPBelongsToItsService: a Service that names another's ClusterIP
// as an external address (possible when the service CIDRs are not known to
// the agent) never takes it, whichever namespace sorts first and whichever
// order they arrive in; both sides are told, and the loser gets the key when
// the owner goes. The control is the rule for two external claims: there the
// first in namespace/name order wins.
func TestClusterIPBelongsToItsService(t *testing.T) {
	in := flowInput()
	web := in.Services[0] // ns/web, ClusterIP 198.18.128.10
	in.Services = nil
	evil := Service{ServiceKey: ServiceKey{"aaa", "evil"}, ClusterIPs: mustAddrs("198.18.128.99"), ExternalIPs: mustAddrs("198.18.128.10", "198.18.0.200"),
		Ports: []Port{{Name: "p", Protocol: nft.TCP, Port: 80, Endpoints: []Endpoint{ep("198.19.2.66", 80, false)}}}}
	cip := nft.MapKey{Addr: netip.MustParseAddr("198.18.128.10"), Proto: nft.TCP, Port: 80}
	ext := nft.MapKey{Addr: netip.MustParseAddr("198.18.0.200"), Proto: nft.TCP, Port: 80}
	for _, order := range [][]Service{{web, evil}, {evil, web}} {
		tb := NewTable(in)
		for _, s := range order {
			tb.Update(s)
		}
		full := tb.Full(nft.IPv4)
		if got := reaches(full, cip); got != "accept -> 198.19.1.5:8080; accept -> 198.19.2.5:8080" {
			t.Errorf("order %s first: ClusterIP %s reaches %s, want ns/web's endpoints", order[0].ServiceKey, cip, got)
		}
		// Control: two external claims, the first in name order (aaa) wins.
		if got := reaches(full, ext); !strings.Contains(got, "198.19.2.66:80") {
			t.Errorf("order %s first: externalIP %s reaches %s, want aaa/evil's endpoint", order[0].ServiceKey, ext, got)
		}
		for _, k := range []ServiceKey{web.ServiceKey, evil.ServiceKey} {
			var byCIP *Conflict
			for _, c := range tb.Conflicts(k) {
				if c.Key == cip {
					byCIP = &c
				}
			}
			if byCIP == nil || byCIP.Owner != web.ServiceKey || !byCIP.OwnerByClusterIP || !strings.Contains(byCIP.String(), "ClusterIP of Service ns/web") {
				t.Errorf("%s is not told that ns/web keeps its ClusterIP: %v", k, tb.Conflicts(k))
			}
		}
		tb.Delete(web.ServiceKey)
		if got := reaches(tb.Full(nft.IPv4), cip); !strings.Contains(got, "198.19.2.66:80") {
			t.Errorf("after ns/web is gone %s reaches %s, want aaa/evil's endpoint (the address is free)", cip, got)
		}
		if cs := tb.Conflicts(evil.ServiceKey); len(cs) != 0 {
			t.Errorf("the contest did not end with ns/web: %v", cs)
		}
	}
}

func TestReservedEqualAndLookup(t *testing.T) {
	a, b := clusterReserved(), Reserved{}
	b.AddPrefix(netip.MustParsePrefix("198.19.0.0/16"), "a pod address (cluster CIDR 198.19.0.0/16)")
	b.Merge(clusterReserved()) // other order, one prefix twice
	if !a.Equal(b) {
		t.Error("the same reservations in another order are not Equal")
	}
	b.AddAddr(netip.MustParseAddr("198.18.0.13"), "the InternalIP of Node n3")
	if a.Equal(b) {
		t.Error("a new node's address makes no difference")
	}
	if what, ok := a.Lookup(netip.MustParseAddr("::ffff:198.18.0.1")); !ok || what != "the API server's address" {
		t.Errorf("an IPv4-mapped API server address: %q %v", what, ok)
	}
	if _, ok := a.Lookup(netip.MustParseAddr("198.18.0.200")); ok {
		t.Error("an ordinary address is reserved")
	}
}

// FuzzExternalAddresses: whatever the externalIPs and reservations, Convert
// never panics, never programs a reserved address, and reports every one
// it leaves out with its field and value.
func FuzzExternalAddresses(f *testing.F) {
	f.Add("198.18.0.1", "198.18.0.1", "198.18.0.0/24")
	f.Add("198.18.128.10", "2001:db8::1", "198.19.0.0/16")
	f.Add("::ffff:198.18.0.1", "198.18.0.1", "::/0")
	f.Add("not-an-ip", "", "")
	f.Fuzz(func(t *testing.T, ext, reservedAddr, reservedPrefix string) {
		var r Reserved
		if a, err := netip.ParseAddr(reservedAddr); err == nil {
			r.AddAddr(a, "reserved")
		}
		if p, err := netip.ParsePrefix(reservedPrefix); err == nil {
			r.AddPrefix(p, "reserved range")
		}
		o := convOpts
		o.Reserved = r
		s, probs := Convert(attacker([]string{ext}, ext), nil, o)
		for _, a := range append(append([]netip.Addr{}, s.ExternalIPs...), s.LoadBalancerIPs...) {
			if _, bad := r.Lookup(a); bad || inAny(a, convOpts.ServiceCIDRs) {
				t.Fatalf("reserved address %s programmed (reserved %v)", a, r)
			}
		}
		if len(s.ExternalIPs) == 0 && ext != "" {
			if p := findProblem(probs, "spec.externalIPs[0]"); p == nil || p.Value != ext {
				t.Fatalf("externalIP %q left out without a report: %v", ext, probs)
			}
		}
	})
}

func findProblem(probs []Problem, field string) *Problem {
	for i := range probs {
		if probs[i].Field == field {
			return &probs[i]
		}
	}
	return nil
}
