package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/operator"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestRelayedBetweenTwoNATs: office c sits behind a masquerading router,
// office d behind one that maps every destination to its own random port
// (fully-random: what others see of d is useless to punch through), and
// neither has an observed endpoint, so c and d have no path (relay-needed).
// Two public nodes r1 and r2 reach both. c and d choose the same relay;
// its WireGuard entry on each carries the other's pod range, and c and d
// reach each other's bridge through it, the relay forwarding wgmesh0 to
// wgmesh0 under strict reverse-path filtering. Captures on the internet and
// in both offices see only WireGuard between the nodes, never a pod address.
// With the relay's view of their NATs as observed endpoints the pair's path
// becomes punched, but d's NAT defeats punching: without a session the
// pair stays on the relay (punching in the background). The relay leaves (its MeshPeer removed, its link down): the pair moves to
// the other public node and talks again.
func TestRelayedBetweenTwoNATs(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ctx := context.Background()
	pid := os.Getpid() % 100000
	internet := netns.NewForTest(t, fmt.Sprintf("wgm-rly%d-i", pid))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netns.Bridge(internet, "inet", 1500))
	must(netns.LinkUp(internet, "inet"))
	plug := func(a *netns.NS, aName string, b *netns.NS, bName, br, addr string) {
		t.Helper()
		must(netns.Veth(a, aName, b, bName, 1500))
		must(netns.SetMaster(b, bName, br))
		must(netns.LinkUp(a, aName))
		must(netns.LinkUp(b, bName))
		must(netns.AddAddr(a, aName, addr))
	}
	// An office router: 198.18.100.<20+i> outside, 198.18.<20+i>.254
	// inside, masquerading the office (how: masq); only replies get in.
	routers := map[int]*netns.NS{}
	office := func(i int, masq string) *netns.NS {
		r := netns.NewForTest(t, fmt.Sprintf("wgm-rly%d-r%d", pid, i))
		plug(r, "eth0", internet, fmt.Sprintf("wr%dr%d", pid, i), "inet", fmt.Sprintf("198.18.100.%d/24", 20+i))
		must(netns.Bridge(r, "br1", 1500))
		must(netns.LinkUp(r, "br1"))
		must(netns.AddAddr(r, "br1", fmt.Sprintf("198.18.%d.254/24", 20+i)))
		must(r.Sysctl("net.ipv4.ip_forward", "1"))
		rules := fmt.Sprintf(`table inet wgm-nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" ip saddr 198.18.%d.0/24 %s
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "eth0" oifname "br1" ct state established,related accept
		iifname "eth0" oifname "br1" drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "eth0" ct state new counter drop
	}
}
`, 20+i, masq)
		cmd := r.Command(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
		routers[i] = r
		return r
	}
	type site struct {
		name, location string
		n              *testNode
		cands          []wgv1.Candidate
		podCIDR        string
		gateway        string
	}
	var sites []*site
	newSite := func(name, location string, i int, cands ...wgv1.Candidate) *site {
		s := &site{name: name, location: location, cands: cands,
			podCIDR: fmt.Sprintf("198.19.%d.0/24", i), gateway: fmt.Sprintf("198.19.%d.1", i)}
		s.n = newTestNode(t, "r"+name, fmt.Sprintf("wgr%s%d", name, pid))
		sites = append(sites, s)
		return s
	}
	public := func(i int) wgv1.Candidate {
		return wgv1.Candidate{Kind: wgv1.CandidatePublic, Endpoint: wgv1.Endpoint(fmt.Sprintf("198.18.100.%d:51820", i))}
	}
	private := func(office int) wgv1.Candidate {
		return wgv1.Candidate{Kind: wgv1.CandidatePrivate, Endpoint: wgv1.Endpoint(fmt.Sprintf("198.18.%d.1:51820", 20+office))}
	}
	r1 := newSite("r1", "cloud", 1, public(1))
	r2 := newSite("r2", "cloud", 2, public(2))
	c := newSite("c", "office-1", 3, private(1))
	d := newSite("d", "office-2", 4, private(2))
	for i, r := range []*site{r1, r2} {
		plug(r.n.ns, "wgmpub0", internet, fmt.Sprintf("wr%dp%d", pid, i+1), "inet", fmt.Sprintf("198.18.100.%d/24", i+1))
		// What the agent sets (sysctl.Required), and strict reverse-path
		// filtering, which relayed packets pass: their source routes back
		// through wgmesh0, where they came from.
		must(r.n.ns.Sysctl("net.ipv4.ip_forward", "1"))
		must(r.n.ns.Sysctl("net.ipv4.conf.all.rp_filter", "1"))
	}
	for i, s := range map[int]*site{1: c, 2: d} {
		masq := "masquerade"
		if s == d {
			masq = "masquerade fully-random"
		}
		r := office(i, masq)
		plug(s.n.ns, "wgmlan0", r, fmt.Sprintf("wr%do%d", pid, i), "br1", fmt.Sprintf("198.18.%d.1/24", 20+i))
		must(netns.AddRoute(s.n.ns, "default", fmt.Sprintf("198.18.%d.254", 20+i), ""))
	}

	gone := map[string]bool{}
	meshPeers := func() []wgv1.MeshPeer {
		var out []wgv1.MeshPeer
		for _, s := range sites {
			if gone[s.name] {
				continue
			}
			yes := true
			out = append(out, wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: s.name, OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "v1", Kind: "Node", Name: s.name, UID: types.UID("uid-" + s.name), Controller: &yes}}},
				Spec: wgv1.MeshPeerSpec{NodeName: s.name, PublicKey: wgv1.PublicKey(s.n.key.PublicKey().String()),
					AllowedIPs: []wgv1.CIDR{wgv1.CIDR(s.podCIDR)}, Location: wgv1.Location(s.location), Candidates: s.cands}})
		}
		return out
	}
	apply := func() map[string]mesh.Topology {
		t.Helper()
		topos := map[string]mesh.Topology{}
		for _, s := range sites {
			if gone[s.name] {
				continue
			}
			topo := mesh.New(mesh.Input{NodeName: s.name, PublicKey: s.n.key.PublicKey(),
				PodCIDRs: []netip.Prefix{netip.MustParsePrefix(s.podCIDR)}, Peers: meshPeers(), Connected: connectedOf(s.n, meshPeers())})
			if len(topo.Problems) > 0 {
				t.Fatalf("node %s: problems %+v", s.name, topo.Problems)
			}
			if _, err := s.n.kernel.Apply(ctx, Desired{PrivateKey: s.n.key, Topology: topo}); err != nil {
				t.Fatalf("node %s: %v", s.name, err)
			}
			topos[s.name] = topo
		}
		return topos
	}
	peerOf := func(topo mesh.Topology, peer string) mesh.Peer {
		t.Helper()
		for _, q := range topo.Peers {
			if q.Name == peer {
				return q
			}
		}
		t.Fatalf("no peer %s in %+v", peer, topo.Peers)
		return mesh.Peer{}
	}
	byName := func(name string) *site {
		i := slices.IndexFunc(sites, func(s *site) bool { return s.name == name })
		return sites[i]
	}
	ping := func(what string, from, to *site) {
		t.Helper()
		wait.For(t, 30*time.Second, what, func() error {
			_, err := from.n.ns.Exec(ctx, "ping", "-c", "1", "-W", "1", to.gateway)
			return err
		})
	}
	// relayedBy checks both ends' choice and their WireGuard entries: the
	// relay's carries the other end's pod range, the other end's none.
	relayedBy := func(topos map[string]mesh.Topology) *site {
		t.Helper()
		cd, dc := peerOf(topos["c"], "d"), peerOf(topos["d"], "c")
		if cd.Path != paths.KindRelayed || dc.Path != paths.KindRelayed || cd.Relay == "" || cd.Relay != dc.Relay {
			t.Fatalf("c-d: %+v / %+v, want relayed by one node on both ends", cd, dc)
		}
		relay := byName(cd.Relay)
		for _, end := range []struct{ from, to *site }{{c, d}, {d, c}} {
			for _, dp := range end.from.n.device(t).Peers {
				var got []string
				for _, a := range dp.AllowedIPs {
					got = append(got, a.String())
				}
				switch dp.PublicKey {
				case end.to.n.key.PublicKey():
					if len(got) != 0 {
						t.Errorf("%s's entry for %s has AllowedIPs %v, want none (relayed)", end.from.name, end.to.name, got)
					}
				case relay.n.key.PublicKey():
					if !slices.Equal(got, []string{relay.podCIDR, end.to.podCIDR}) {
						t.Errorf("%s's entry for relay %s has AllowedIPs %v, want %s and %s", end.from.name, relay.name, got, relay.podCIDR, end.to.podCIDR)
					}
				}
			}
		}
		return relay
	}
	captureAll := func() func() []netns.Packet {
		t.Helper()
		var caps []*netns.Capture
		for _, ns := range []*netns.NS{internet, routers[1], routers[2]} {
			cp, err := netns.StartCaptureWith(ctx, ns, netns.CaptureOptions{Iface: "any", Filter: "ip and not igmp", InboundOnly: true})
			must(err)
			caps = append(caps, cp)
		}
		return func() []netns.Packet {
			var all []netns.Packet
			for _, cp := range caps {
				pkts, err := cp.Stop()
				must(err)
				all = append(all, pkts...)
			}
			return all
		}
	}
	// onlyWireGuard: every IPv4 packet on the underlays (but the links'
	// own IGMP reports) is UDP to or from
	// a WireGuard port, none names a pod address, and the relay's
	// WireGuard traffic with both offices' routers is among them (the
	// barrier: the capture saw the pings' packets).
	onlyWireGuard := func(pkts []netns.Packet, relay *site) {
		t.Helper()
		pods := netip.MustParsePrefix("198.19.0.0/16")
		relayAddr := strings.TrimSuffix(string(relay.cands[0].Endpoint), ":51820")
		seen := map[string]bool{}
		for _, p := range pkts {
			if p.Family != "IP" {
				continue
			}
			if a, err := netip.ParseAddr(p.Src); err == nil && pods.Contains(a) {
				t.Errorf("a pod address on the underlay: %s", p.Line)
			}
			if a, err := netip.ParseAddr(p.Dst); err == nil && pods.Contains(a) {
				t.Errorf("a pod address on the underlay: %s", p.Line)
			}
			if p.Proto == "ICMP" || p.Proto == "TCP" || (p.SrcPort != 51820 && p.DstPort != 51820) {
				t.Errorf("not WireGuard on the underlay: %s", p.Line)
			}
			for _, r := range []string{"198.18.100.21", "198.18.100.22"} {
				if (p.Src == relayAddr && p.Dst == r) || (p.Src == r && p.Dst == relayAddr) {
					seen[r] = true
				}
			}
		}
		if !seen["198.18.100.21"] || !seen["198.18.100.22"] {
			t.Errorf("the captures saw no WireGuard between relay %s and both offices' routers (%v) among %d packets", relay.name, seen, len(pkts))
		}
	}

	topos := apply()
	if k := paths.Choose(paths.FromSpec(meshPeers()[2].Spec), paths.FromSpec(meshPeers()[3].Spec)).Kind; k != paths.KindRelayNeeded {
		t.Fatalf("c-d path %s, want relay-needed", k)
	}
	relay := relayedBy(topos)
	stop := captureAll()
	ping("c to reach d's bridge through relay "+relay.name, c, d)
	ping("d to reach c's bridge through relay "+relay.name, d, c)
	onlyWireGuard(stop(), relay)

	// The relay reports where it reaches c and d (their NATs' mappings
	// towards it); as their observed candidates they make the pair's path
	// punched. d's NAT maps each destination to another port, and c's takes
	// in only replies: punching fails, and the pair stays on the relay.
	reporter := meshPeers()[slices.IndexFunc(sites, func(s *site) bool { return s == relay })]
	for _, dp := range relay.n.device(t).Peers {
		for _, s := range []*site{c, d} {
			if dp.PublicKey == s.n.key.PublicKey() && dp.Endpoint != nil {
				reporter.Status.LearnedEndpoints = append(reporter.Status.LearnedEndpoints,
					wgv1.LearnedEndpoint{Peer: s.name, Address: dp.Endpoint.IP.String(), Port: int32(dp.Endpoint.Port)})
			}
		}
	}
	for _, s := range []*site{c, d} {
		observed := operator.ObservedCandidates(s.name, []wgv1.MeshPeer{reporter}, nil, s.cands)
		if len(observed) != 1 {
			t.Fatalf("observed candidates of %s: %v (the relay reports %+v)", s.name, observed, reporter.Status.LearnedEndpoints)
		}
		s.cands = append(s.cands, observed...)
	}
	if k := paths.Choose(paths.FromSpec(meshPeers()[2].Spec), paths.FromSpec(meshPeers()[3].Spec)).Kind; k != paths.KindPunched {
		t.Fatalf("c-d path with observed endpoints %s, want punched", k)
	}
	topos = apply()
	if cd := peerOf(topos["c"], "d"); cd.Path != paths.KindRelayed || cd.Relay != relay.name || cd.Endpoint == "" || cd.Keepalive == 0 {
		t.Fatalf("c-d punched without a session: %+v, want still relayed by %s, punching", cd, relay.name)
	}
	ping("c to reach d's bridge through relay "+relay.name+" while punching", c, d)
	// The barrier: both routers dropped the other office's punching
	// (packets that are no reply); only then is "no session" a result.
	for _, i := range []int{1, 2} {
		wait.For(t, 30*time.Second, fmt.Sprintf("office router %d to drop the other office's punching", i), func() error {
			out, err := routers[i].Exec(ctx, "nft", "list", "chain", "inet", "wgm-nat", "input")
			if err != nil {
				return err
			}
			if strings.Contains(string(out), "counter packets 0 ") {
				return fmt.Errorf("nothing dropped yet: %s", out)
			}
			return nil
		})
	}
	topos = apply()
	relayedBy(topos)
	if cd := peerOf(topos["c"], "d"); cd.Path != paths.KindRelayed || connectedOf(c.n, meshPeers())("d") {
		t.Fatalf("c-d after failed punching: %+v, want still relayed and no session", cd)
	}
	ping("c to reach d's bridge through relay "+relay.name+" after punching failed", c, d)

	// The relay goes: its MeshPeer, and its underlay link.
	other := map[*site]*site{r1: r2, r2: r1}[relay]
	gone[relay.name] = true
	must(netns.DeleteLink(relay.n.ns, "wgmpub0"))
	topos = apply()
	if got := relayedBy(topos); got != other {
		t.Fatalf("after %s left: relayed by %s, want %s", relay.name, got.name, other.name)
	}
	stop = captureAll()
	ping("c to reach d's bridge through relay "+other.name, c, d)
	ping("d to reach c's bridge through relay "+other.name, d, c)
	onlyWireGuard(stop(), other)
}

// connectedOf is mesh.Input.Connected from n's WireGuard device, as the
// agent makes it: a handshake within wireguard.ConnectedWithin.
func connectedOf(n *testNode, peers []wgv1.MeshPeer) func(string) bool {
	byKey := map[string]bool{}
	for _, p := range n.kernel.Peers() { // none before the link exists
		byKey[p.PublicKey.String()] = wireguard.Connected(p, time.Now())
	}
	return func(name string) bool {
		for _, p := range peers {
			if p.Name == name {
				return byKey[string(p.Spec.PublicKey)]
			}
		}
		return false
	}
}
