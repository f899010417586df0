package servicenat

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/nft"
)

// Conntrack removes UDP flows that would keep sending to an endpoint that
// is gone. TCP needs nothing (a gone endpoint resets or times out), but a
// UDP client reusing its socket (DNS resolvers do) would stay pinned to the
// old endpoint, or to the "no endpoint" refusal, for as long as it talks.
type Conntrack struct {
	// NetNSFd selects the network namespace; 0 = the current one.
	NetNSFd int
}

// serviceFlows matches UDP flows addressed to a service destination whose
// answer does not come from one of its current endpoints (address and
// port: a Service whose targetPort changed keeps its endpoint addresses).
type serviceFlows struct {
	// byDest maps an original destination (service IP and port) to the
	// endpoints allowed to answer.
	byDest map[netip.AddrPort]map[netip.AddrPort]bool
	// byNodePort does the same for NodePorts on the node's addresses.
	byNodePort  map[uint16]map[netip.AddrPort]bool
	nodePortIPs map[netip.Addr]bool
}

func (s *serviceFlows) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	if f.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst, ok1 := netip.AddrFromSlice(f.Forward.DstIP)
	reply, ok2 := netip.AddrFromSlice(f.Reverse.SrcIP)
	if !ok1 || !ok2 {
		return false
	}
	dst = dst.Unmap()
	answer := netip.AddrPortFrom(reply.Unmap(), f.Reverse.SrcPort)
	if allowed, ok := s.byDest[netip.AddrPortFrom(dst, f.Forward.DstPort)]; ok {
		return !allowed[answer]
	}
	if s.nodePortIPs[dst] {
		if allowed, ok := s.byNodePort[f.Forward.DstPort]; ok {
			return !allowed[answer]
		}
	}
	return false
}

// staleFlows builds the filter for a Service that changed from old to cur
// (either may be the zero Service: added or deleted).
func staleFlows(old, cur Service, nodePortIPs []netip.Addr) *serviceFlows {
	s := &serviceFlows{byDest: map[netip.AddrPort]map[netip.AddrPort]bool{}, byNodePort: map[uint16]map[netip.AddrPort]bool{},
		nodePortIPs: map[netip.Addr]bool{}}
	for _, a := range nodePortIPs {
		s.nodePortIPs[a] = true
	}
	allowed := map[string]map[netip.AddrPort]bool{}
	for _, p := range cur.Ports {
		if p.Protocol != nft.UDP {
			continue
		}
		ok := map[netip.AddrPort]bool{}
		for _, f := range nft.Families {
			sets := Categorize(endpointsOf(p.Endpoints, f))
			for _, e := range append(sets.Cluster, sets.Local...) {
				ok[e.AddrPort()] = true
			}
		}
		allowed[p.Name] = ok
	}
	// Every UDP destination the old or the new Service had: flows to it
	// must be answered by a current endpoint, or they go.
	for _, svc := range []Service{old, cur} {
		dests := append(append(append([]netip.Addr{}, svc.ClusterIPs...), svc.ExternalIPs...), svc.LoadBalancerIPs...)
		for _, p := range svc.Ports {
			if p.Protocol != nft.UDP {
				continue
			}
			ok := allowed[p.Name]
			if ok == nil {
				ok = map[netip.AddrPort]bool{}
			}
			for _, d := range dests {
				s.byDest[netip.AddrPortFrom(d, p.Port)] = ok
			}
			if p.NodePort != 0 {
				s.byNodePort[p.NodePort] = ok
			}
		}
	}
	return s
}

// CleanStale removes the UDP flows of a Service changed from old to cur
// that no current endpoint answers. It returns how many it removed.
func (c *Conntrack) CleanStale(old, cur Service, nodePortIPs []netip.Addr) (uint, error) {
	if !hasUDP(old) && !hasUDP(cur) {
		return 0, nil
	}
	if equalUDPEndpoints(old, cur) {
		return 0, nil
	}
	filter := staleFlows(old, cur, nodePortIPs)
	h, err := c.handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	var total uint
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filter)
		total += n
		if err != nil {
			return total, fmt.Errorf("deleting conntrack entries of %s: %w", cur.ServiceKey, err)
		}
	}
	return total, nil
}

func (c *Conntrack) handle() (*netlink.Handle, error) {
	if c.NetNSFd == 0 {
		return netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	return netlink.NewHandleAt(netns.NsHandle(c.NetNSFd), unix.NETLINK_NETFILTER)
}

func hasUDP(s Service) bool {
	for _, p := range s.Ports {
		if p.Protocol == nft.UDP {
			return true
		}
	}
	return false
}

// equalUDPEndpoints is true when nothing about the UDP ports changed, so
// the conntrack table need not be walked.
func equalUDPEndpoints(a, b Service) bool {
	return fmt.Sprint(udpView(a)) == fmt.Sprint(udpView(b))
}

func udpView(s Service) []any {
	out := []any{s.ClusterIPs, s.ExternalIPs, s.LoadBalancerIPs}
	for _, p := range s.Ports {
		if p.Protocol == nft.UDP {
			out = append(out, p)
		}
	}
	return out
}
