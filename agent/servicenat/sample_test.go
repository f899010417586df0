package servicenat

import (
	"github.com/wgmesh/wgmesh/nft"
	"net/netip"
	"time"
)

func mustAddrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func ep(addr string, port uint16, local bool) Endpoint {
	return Endpoint{Addr: netip.MustParseAddr(addr), Port: port, Local: local, Ready: true, Serving: true}
}

// sampleInput is a small cluster: pods 198.19.0.0/16 (this node
// 198.19.1.0/24), services 198.18.128.0/20, node 198.18.0.11.
func sampleInput() Input {
	return Input{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:db8:19::/56")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.128.0/20"), netip.MustParsePrefix("2001:db8:18::/112")},
		NodePortIPs:  mustAddrs("198.18.0.11", "2001:db8:0:1::11"),
		SNATAddrs:    mustAddrs("198.19.1.1", "2001:db8:19:1::1"),
		TunnelIf:     "wgmesh0",
		Services: []Service{
			{
				ServiceKey: ServiceKey{"default", "web"},
				ClusterIPs: mustAddrs("198.18.128.10", "2001:db8:18::10"),
				Ports: []Port{
					{Name: "http", Protocol: nft.TCP, Port: 80, NodePort: 30080, Endpoints: []Endpoint{
						ep("198.19.1.5", 8080, true), ep("198.19.2.5", 8080, false), ep("2001:db8:19:1::5", 8080, true)}},
					{Name: "dns", Protocol: nft.UDP, Port: 53, Endpoints: []Endpoint{ep("198.19.2.6", 5353, false)}},
				},
			},
			{
				ServiceKey:      ServiceKey{"default", "sticky"},
				ClusterIPs:      mustAddrs("198.18.128.11"),
				ExternalIPs:     mustAddrs("198.18.0.200"),
				LoadBalancerIPs: mustAddrs("198.18.0.201"),
				SourceRanges:    []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
				AffinityTimeout: 3 * time.Hour,
				ExternalLocal:   true,
				Ports: []Port{{Name: "", Protocol: nft.TCP, Port: 443, NodePort: 30443, Endpoints: []Endpoint{
					ep("198.19.1.7", 8443, true), ep("198.19.2.7", 8443, false)}}},
			},
			{
				ServiceKey: ServiceKey{"default", "empty"},
				ClusterIPs: mustAddrs("198.18.128.12"),
				Ports:      []Port{{Name: "x", Protocol: nft.TCP, Port: 81, NodePort: 30081}},
			},
		},
	}
}
