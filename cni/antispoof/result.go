package antispoof

import (
	"fmt"
	"net"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// PortFromResult finds, in the bridge plugin's result (the prevResult the
// antiSpoof entry gets), the pod interface ifName (its MAC and addresses)
// and the host-side veth: the interface outside the pod that is not the
// bridge.
func PortFromResult(res *current.Result, ifName, bridge string) (Port, error) {
	if res == nil {
		return Port{}, fmt.Errorf("no prevResult: the antiSpoof entry must follow the bridge plugin in the conflist")
	}
	pod, host := -1, -1
	for i, iface := range res.Interfaces {
		switch {
		case iface == nil:
		case iface.Sandbox != "":
			if iface.Name == ifName {
				pod = i
			}
		case iface.Name != bridge:
			if host >= 0 {
				return Port{}, fmt.Errorf("prevResult has two host interfaces besides bridge %s (%s and %s): want the one veth of interface %s", bridge, res.Interfaces[host].Name, iface.Name, ifName)
			}
			host = i
		}
	}
	if pod < 0 {
		return Port{}, fmt.Errorf("prevResult has no interface %s in the pod's namespace", ifName)
	}
	if host < 0 {
		return Port{}, fmt.Errorf("prevResult has no host-side interface for %s besides bridge %s", ifName, bridge)
	}
	mac, err := net.ParseMAC(res.Interfaces[pod].Mac)
	if err != nil {
		return Port{}, fmt.Errorf("interface %s: mac %q: %w", ifName, res.Interfaces[pod].Mac, err)
	}
	p := Port{HostIf: res.Interfaces[host].Name, MAC: mac}
	for _, ipc := range res.IPs {
		if ipc == nil || ipc.Interface != nil && *ipc.Interface != pod {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return Port{}, fmt.Errorf("interface %s: address %q is not an IP address", ifName, ipc.Address.String())
		}
		p.IPs = append(p.IPs, ip.Unmap())
	}
	if err := p.Validate(); err != nil {
		return Port{}, fmt.Errorf("interface %s: %w", ifName, err)
	}
	return p, nil
}
