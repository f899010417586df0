package servicenat

import (
	"github.com/wgmesh/wgmesh/nft"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A UDP flow is stale when its answer no longer comes from a current endpoint
// address AND port: a Service whose targetPort changes keeps its endpoint
// addresses (upstream Conntrack spec "should be able to cleanup conntrack
// entries when UDP service target port changes for a NodePort service").
func TestStaleFlowsMatchEndpointPort(t *testing.T) {
	clusterIP := netip.MustParseAddr("198.18.128.20")
	nodeIP := netip.MustParseAddr("198.18.0.11")
	pod := netip.MustParseAddr("198.19.1.5")
	svc := func(target uint16) Service {
		return Service{
			ServiceKey: ServiceKey{Namespace: "ns", Name: "udp"},
			ClusterIPs: []netip.Addr{clusterIP},
			Ports: []Port{{Name: "udp", Protocol: nft.UDP, Port: 80, NodePort: 30080,
				Endpoints: []Endpoint{{Addr: pod, Port: target, Ready: true, Serving: true}}}},
		}
	}
	flow := func(dst netip.Addr, dport uint16, answerPort uint16) *netlink.ConntrackFlow {
		f := &netlink.ConntrackFlow{}
		f.Forward.Protocol = unix.IPPROTO_UDP
		f.Forward.SrcIP, f.Forward.SrcPort = net.ParseIP("198.19.2.7"), 40000
		f.Forward.DstIP, f.Forward.DstPort = dst.AsSlice(), dport
		f.Reverse.SrcIP, f.Reverse.SrcPort = pod.AsSlice(), answerPort
		return f
	}
	changed := staleFlows(svc(8080), svc(9090), []netip.Addr{nodeIP})
	unchanged := staleFlows(svc(9090), svc(9090), []netip.Addr{nodeIP})
	for _, tc := range []struct {
		name   string
		f      *netlink.ConntrackFlow
		filter *serviceFlows
		stale  bool
	}{
		{"ClusterIP flow to the old target port", flow(clusterIP, 80, 8080), changed, true},
		{"NodePort flow to the old target port", flow(nodeIP, 30080, 8080), changed, true},
		{"ClusterIP flow to the current target port", flow(clusterIP, 80, 9090), changed, false},
		{"NodePort flow to the current target port", flow(nodeIP, 30080, 9090), unchanged, false},
		{"flow to another port of the node", flow(nodeIP, 30081, 8080), changed, false},
	} {
		if got := tc.filter.MatchConntrackFlow(tc.f); got != tc.stale {
			t.Errorf("%s: stale = %v, want %v", tc.name, got, tc.stale)
		}
	}
}
