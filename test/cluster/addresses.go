package cluster

import "fmt"

// Addresses of the local cluster (DESIGN.md, "Addresses tests may use").
const (
	APIServerIP     = "198.18.0.1"
	APIServerIP6    = "2001:db8::1"
	APIServerPort   = 6443
	UnderlayCIDR    = "198.18.0.0/24"
	UnderlayCIDR6   = "2001:db8::/64"
	Cloud2CIDR      = "198.18.1.0/24"
	Cloud2CIDR6     = "2001:db8:1::/64"
	RouterOutside   = "198.18.0.254"
	RouterOutside6  = "2001:db8::254"
	RouterInside    = "198.18.1.1"
	RouterInside6   = "2001:db8:1::1"
	InternetIP      = "198.18.0.250"
	InternetIP6     = "2001:db8::250"
	PodCIDR         = "198.19.0.0/16"
	PodCIDR6        = "2001:db8:100::/56"
	ServiceCIDR     = "198.18.128.0/20"
	ServiceCIDR6    = "2001:db8:200::/112"
	WireGuardPort   = 51820
	etcdClientPort  = 2379
	etcdPeerPort    = 2380
	operatorMetrics = "198.18.0.1:18080"
	operatorHealth  = "198.18.0.1:18081"
)

// Namespace and link names.
const (
	UnderlayNS = "wgm-underlay" // holds the underlay bridge
	RouterNS   = "wgm-router"   // NAT router; holds the second cloud's bridge
	InternetNS = "wgm-internet" // an "internet" host on the underlay
	hostLink   = "wgm-cp0"      // host end of the control plane's underlay veth
	bridgeName = "br0"
)

// nodeAddress returns the underlay addresses of the i-th (0-based) node of a cloud.
func nodeAddress(natted bool, i int) (v4, v6 string) {
	if natted {
		return fmt.Sprintf("198.18.1.%d", 11+i), fmt.Sprintf("2001:db8:1::%d", 11+i)
	}
	return fmt.Sprintf("198.18.0.%d", 11+i), fmt.Sprintf("2001:db8::%d", 11+i)
}
