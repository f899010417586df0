package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/operator"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestPunchedThroughTwoNATs: offices x and y each sit behind their own NAT
// router (masquerade; from outside only replies get in, and the router
// itself takes no new connections), p has a public address. x and y reach p
// over the public path and p learns their NATs' mappings; reported as p's
// learned endpoints, the operator's aggregation (operator.ObservedCandidates)
// makes them x's and y's observed candidates, and then x and y, which had no
// direct path to each other (relayed by p), punch through both NATs while
// still relayed, and once they have a session reach each other directly,
// off the relay.
func TestPunchedThroughTwoNATs(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ctx := context.Background()
	pid := os.Getpid() % 100000
	internet := netns.NewForTest(t, fmt.Sprintf("wgm-pch%d-i", pid))
	if err := netns.Bridge(internet, "inet", 1500); err != nil {
		t.Fatal(err)
	}
	if err := netns.LinkUp(internet, "inet"); err != nil {
		t.Fatal(err)
	}
	plug := func(a *netns.NS, aName string, b *netns.NS, bName, br, addr string) {
		if err := netns.Veth(a, aName, b, bName, 1500); err != nil {
			t.Fatal(err)
		}
		if err := netns.SetMaster(b, bName, br); err != nil {
			t.Fatal(err)
		}
		for _, l := range []struct {
			ns   *netns.NS
			name string
		}{{a, aName}, {b, bName}} {
			if err := netns.LinkUp(l.ns, l.name); err != nil {
				t.Fatal(err)
			}
		}
		if err := netns.AddAddr(a, aName, addr); err != nil {
			t.Fatal(err)
		}
	}
	// An office: a router with 198.18.100.<outside> outside and
	// 198.18.<office>.254 inside, masquerading the office.
	office := func(i int, outside string) *netns.NS {
		r := netns.NewForTest(t, fmt.Sprintf("wgm-pch%d-r%d", pid, i))
		plug(r, "eth0", internet, fmt.Sprintf("wp%dr%d", pid, i), "inet", outside+"/24")
		if err := netns.Bridge(r, "br1", 1500); err != nil {
			t.Fatal(err)
		}
		if err := netns.LinkUp(r, "br1"); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddAddr(r, "br1", fmt.Sprintf("198.18.%d.254/24", 20+i)); err != nil {
			t.Fatal(err)
		}
		if err := r.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
			t.Fatal(err)
		}
		rules := fmt.Sprintf(`table inet wgm-nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" ip saddr 198.18.%d.0/24 masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "eth0" oifname "br1" ct state established,related accept
		iifname "eth0" oifname "br1" drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "eth0" ct state new drop
	}
}
`, 20+i)
		cmd := r.Command(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
		return r
	}
	type site struct {
		name, location string
		n              *testNode
		cands          []wgv1.Candidate
	}
	p := &site{name: "p", location: "cloud-p", cands: []wgv1.Candidate{{Kind: wgv1.CandidatePublic, Endpoint: "198.18.100.1:51820"}}}
	x := &site{name: "x", location: "office-1", cands: []wgv1.Candidate{{Kind: wgv1.CandidatePrivate, Endpoint: "198.18.21.1:51820"}}}
	y := &site{name: "y", location: "office-2", cands: []wgv1.Candidate{{Kind: wgv1.CandidatePrivate, Endpoint: "198.18.22.1:51820"}}}
	sites := []*site{p, x, y}
	for _, s := range sites {
		s.n = newTestNode(t, "p"+s.name, fmt.Sprintf("wgp%s%d", s.name, pid))
	}
	plug(p.n.ns, "wgmpub0", internet, fmt.Sprintf("wp%dp", pid), "inet", "198.18.100.1/24")
	for i, s := range []*site{x, y} {
		r := office(i+1, fmt.Sprintf("198.18.100.%d", 21+i))
		plug(s.n.ns, "wgmlan0", r, fmt.Sprintf("wp%do%d", pid, i+1), "br1", fmt.Sprintf("198.18.%d.1/24", 21+i))
		if err := netns.AddRoute(s.n.ns, "default", fmt.Sprintf("198.18.%d.254", 21+i), ""); err != nil {
			t.Fatal(err)
		}
	}

	podCIDR := func(i int) string { return fmt.Sprintf("198.19.%d.0/24", i+1) }
	gateway := func(i int) string { return fmt.Sprintf("198.19.%d.1", i+1) }
	meshPeers := func() []wgv1.MeshPeer {
		var out []wgv1.MeshPeer
		for i, s := range sites {
			yes := true
			out = append(out, wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: s.name, OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "v1", Kind: "Node", Name: s.name, UID: types.UID("uid-" + s.name), Controller: &yes}}},
				Spec: wgv1.MeshPeerSpec{NodeName: s.name, PublicKey: wgv1.PublicKey(s.n.key.PublicKey().String()),
					AllowedIPs: []wgv1.CIDR{wgv1.CIDR(podCIDR(i))}, Location: wgv1.Location(s.location), Candidates: s.cands}})
		}
		return out
	}
	apply := func() map[string]mesh.Topology {
		topos := map[string]mesh.Topology{}
		for i, s := range sites {
			topo := mesh.New(mesh.Input{NodeName: s.name, PublicKey: s.n.key.PublicKey(),
				PodCIDRs: []netip.Prefix{netip.MustParsePrefix(podCIDR(i))}, Peers: meshPeers(), Connected: connectedOf(s.n, meshPeers())})
			if len(topo.Problems) > 0 || len(topo.Peers) != 2 {
				t.Fatalf("node %s: topology %+v", s.name, topo)
			}
			if _, err := s.n.kernel.Apply(ctx, Desired{PrivateKey: s.n.key, Topology: topo}); err != nil {
				t.Fatalf("node %s: %v", s.name, err)
			}
			topos[s.name] = topo
		}
		return topos
	}
	pathOf := func(topo mesh.Topology, peer string) mesh.Peer {
		for _, q := range topo.Peers {
			if q.Name == peer {
				return q
			}
		}
		t.Fatalf("no peer %s in %+v", peer, topo.Peers)
		return mesh.Peer{}
	}
	ping := func(what string, from *site, to int) {
		wait.For(t, 30*time.Second, what, func() error {
			_, err := from.n.ns.Exec(ctx, "ping", "-c", "1", "-W", "1", gateway(to))
			return err
		})
	}

	topos := apply()
	if q := pathOf(topos["x"], "y"); q.Path != paths.KindRelayed || q.Relay != "p" {
		t.Fatalf("x-y before any observation: %+v, want relayed by p", q)
	}
	if q := pathOf(topos["x"], "p"); q.Path != paths.KindPublic || q.Keepalive == 0 {
		t.Fatalf("x-p: %+v, want the public path with keepalive", q)
	}
	ping("x to reach p through its NAT", x, 0)
	ping("y to reach p through its NAT", y, 0)
	ping("p to answer x where its handshakes came from", p, 1)
	// Forwarding, as the agent sets it (sysctl.Required): p relays.
	if err := p.n.ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	ping("x to reach y through relay p", x, 2)

	// p reports where it reaches x and y (the agent's status.learnedEndpoints);
	// the operator makes them their observed candidates.
	reporter := meshPeers()[0]
	for _, dp := range p.n.device(t).Peers {
		for _, s := range []*site{x, y} {
			if dp.PublicKey == s.n.key.PublicKey() && dp.Endpoint != nil {
				reporter.Status.LearnedEndpoints = append(reporter.Status.LearnedEndpoints,
					wgv1.LearnedEndpoint{Peer: s.name, Address: dp.Endpoint.IP.String(), Port: int32(dp.Endpoint.Port)})
			}
		}
	}
	for _, s := range []*site{x, y} {
		observed := operator.ObservedCandidates(s.name, []wgv1.MeshPeer{reporter}, nil, s.cands)
		if len(observed) != 1 || !strings.HasPrefix(string(observed[0].Endpoint), "198.18.100.2") {
			t.Fatalf("observed candidates of %s: %v (p reports %+v), want its NAT router's address", s.name, observed, reporter.Status.LearnedEndpoints)
		}
		s.cands = append(s.cands, observed...)
	}
	// Punched, but no session yet: still on the relay, punching.
	topos = apply()
	if xy := pathOf(topos["x"], "y"); xy.Path != paths.KindRelayed || xy.Relay != "p" || xy.Endpoint != string(y.cands[1].Endpoint) || xy.Keepalive == 0 {
		t.Fatalf("x-y after the observations, before a handshake: %+v, want relayed by p, punching to %s", xy, y.cands[1].Endpoint)
	}
	ping("x to reach y through relay p while punching", x, 2)
	wait.For(t, 30*time.Second, "x and y to handshake through both NATs", func() error {
		if !connectedOf(x.n, meshPeers())("y") {
			return fmt.Errorf("x has no session with y")
		}
		return nil
	})
	topos = apply()
	xy := pathOf(topos["x"], "y")
	if xy.Path != paths.KindPunched || xy.Endpoint != string(y.cands[1].Endpoint) || xy.Keepalive == 0 {
		t.Fatalf("x-y after the observations: %+v, want punched to %s with keepalive", xy, y.cands[1].Endpoint)
	}
	for _, dp := range x.n.device(t).Peers {
		if dp.PublicKey == p.n.key.PublicKey() && len(dp.AllowedIPs) != 1 {
			t.Errorf("x's entry for p still carries %v after x-y punched", dp.AllowedIPs)
		}
	}
	ping("x to reach y through both NATs", x, 2)
	ping("y to reach x through both NATs", y, 1)
	for _, dp := range x.n.device(t).Peers {
		if dp.PublicKey == y.n.key.PublicKey() && (dp.Endpoint == nil || dp.Endpoint.String() != string(y.cands[1].Endpoint) || dp.LastHandshakeTime.IsZero()) {
			t.Errorf("x's peer y: endpoint %v handshake %v, want a session at %s", dp.Endpoint, dp.LastHandshakeTime, y.cands[1].Endpoint)
		}
	}
}
