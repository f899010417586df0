package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestTwoLocations: nodes a1 and a2 share cloud A's private network
// 198.18.10.0/24; node b is in cloud B, whose private address 198.18.11.3 is
// reachable from nowhere here; all three have a public address on
// 198.18.100.0/24. Without locations every pair uses spec.endpoint (the
// public addresses, as with --endpoint-address-type=ExternalIP) and works.
// With the locations labelled, the topology each node computes from the
// same MeshPeers sends a1 and a2 to each other's private address, at once
// although their session is live on the public one, and everything else
// over the public addresses; never to a private address across locations
// (which would not work here).
func TestTwoLocations(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ctx := context.Background()
	pid := os.Getpid() % 100000
	u := netns.NewForTest(t, fmt.Sprintf("wgm-loc%d-u", pid))
	for _, br := range []string{"pub", "priva"} {
		if err := netns.Bridge(u, br, 1500); err != nil {
			t.Fatal(err)
		}
		if err := netns.LinkUp(u, br); err != nil {
			t.Fatal(err)
		}
	}
	type site struct {
		name, location, private string
		n                       *testNode
	}
	sites := []*site{{name: "a1", location: "cloud-a", private: "198.18.10.1"}, {name: "a2", location: "cloud-a", private: "198.18.10.2"},
		{name: "b", location: "cloud-b", private: "198.18.11.3"}}
	public := func(i int) string { return fmt.Sprintf("198.18.100.%d", i+1) }
	plug := func(n *testNode, i int, ifname, br, addr string) {
		port := fmt.Sprintf("wl%d%d%s", pid, i, br[:2])
		if err := netns.Veth(n.ns, ifname, u, port, 1500); err != nil {
			t.Fatal(err)
		}
		if err := netns.SetMaster(u, port, br); err != nil {
			t.Fatal(err)
		}
		if err := netns.LinkUp(u, port); err != nil {
			t.Fatal(err)
		}
		if err := netns.LinkUp(n.ns, ifname); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddAddr(n.ns, ifname, addr+"/24"); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range sites {
		s.n = newTestNode(t, "l"+s.name, fmt.Sprintf("wgl%s%d", s.name, pid))
		plug(s.n, i, "wgmpub0", "pub", public(i))
		if s.location == "cloud-a" {
			plug(s.n, i, "wgmpriv0", "priva", s.private)
		}
	}

	podCIDR := func(i int) string { return fmt.Sprintf("198.19.%d.0/24", i+1) }
	meshPeers := func(located bool) []wgv1.MeshPeer {
		var out []wgv1.MeshPeer
		for i, s := range sites {
			yes := true
			mp := wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: s.name, OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "v1", Kind: "Node", Name: s.name, UID: types.UID("uid-" + s.name), Controller: &yes}}},
				Spec: wgv1.MeshPeerSpec{NodeName: s.name, PublicKey: wgv1.PublicKey(s.n.key.PublicKey().String()),
					Endpoint: wgv1.Endpoint(public(i) + ":51820"), AllowedIPs: []wgv1.CIDR{wgv1.CIDR(podCIDR(i))}}}
			if located {
				mp.Spec.Location = wgv1.Location(s.location)
				mp.Spec.Candidates = []wgv1.Candidate{{Kind: wgv1.CandidatePrivate, Endpoint: wgv1.Endpoint(s.private + ":51820")},
					{Kind: wgv1.CandidatePublic, Endpoint: wgv1.Endpoint(public(i) + ":51820")}}
			}
			out = append(out, mp)
		}
		return out
	}
	apply := func(located bool) {
		for i, s := range sites {
			topo := mesh.New(mesh.Input{NodeName: s.name, PublicKey: s.n.key.PublicKey(),
				PodCIDRs: []netip.Prefix{netip.MustParsePrefix(podCIDR(i))}, Peers: meshPeers(located)})
			if len(topo.Problems) > 0 || len(topo.Peers) != 2 {
				t.Fatalf("node %s: topology %+v", s.name, topo)
			}
			if _, err := s.n.kernel.Apply(ctx, Desired{PrivateKey: s.n.key, Topology: topo}); err != nil {
				t.Fatalf("node %s: %v", s.name, err)
			}
		}
	}
	gateway := func(i int) string { return fmt.Sprintf("198.19.%d.1", i+1) }
	reachAll := func(what string) {
		for i, s := range sites {
			for j := range sites {
				if i == j {
					continue
				}
				wait.For(t, 20*time.Second, fmt.Sprintf("%s: %s to reach %s's gateway through the tunnel", what, s.name, sites[j].name), func() error {
					_, err := s.n.ns.Exec(ctx, "ping", "-c", "1", "-W", "1", gateway(j))
					return err
				})
			}
		}
	}
	endpointOf := func(from, to *site) string {
		for _, p := range from.n.device(t).Peers {
			if p.PublicKey == to.n.key.PublicKey() && p.Endpoint != nil {
				return p.Endpoint.String()
			}
		}
		return ""
	}

	apply(false)
	reachAll("without locations")
	if got := endpointOf(sites[0], sites[1]); got != "198.18.100.2:51820" {
		t.Fatalf("without locations a1 reaches a2 at %s, want spec.endpoint 198.18.100.2:51820", got)
	}

	apply(true)
	want := map[[2]string]string{
		{"a1", "a2"}: "198.18.10.2:51820", {"a2", "a1"}: "198.18.10.1:51820",
		{"a1", "b"}: "198.18.100.3:51820", {"b", "a1"}: "198.18.100.1:51820",
		{"a2", "b"}: "198.18.100.3:51820", {"b", "a2"}: "198.18.100.2:51820",
	}
	for _, from := range sites {
		for _, to := range sites {
			if from != to {
				if got, w := endpointOf(from, to), want[[2]string{from.name, to.name}]; got != w {
					t.Errorf("with locations %s reaches %s at %s, want %s", from.name, to.name, got, w)
				}
			}
		}
	}
	reachAll("with locations")
	// After traffic both ways, WireGuard still sends to the private
	// addresses inside cloud A: the packets came from them.
	if got := endpointOf(sites[0], sites[1]); got != "198.18.10.2:51820" {
		t.Errorf("after traffic a1 reaches a2 at %s, want 198.18.10.2:51820", got)
	}
	if k := paths.Choose(paths.FromSpec(meshPeers(true)[0].Spec), paths.FromSpec(meshPeers(true)[2].Spec)).Kind; k != paths.KindPublic {
		t.Errorf("a1-b path %s, want public", k)
	}
}
