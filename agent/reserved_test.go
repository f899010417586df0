package agent

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/agent/mesh"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// TestLearnedEndpointIsProtected: an external MeshPeer whose allowedIPs hold
// the address a NAT'd node's handshakes come from (its router's, named by
// no MeshPeer) is left out once the agent has learned that endpoint; the
// control shows the same topology without the learned endpoint accepting
// it, which routed WireGuard's own packets for the NAT node into the
// attacker's peer.
func TestLearnedEndpointIsProtected(t *testing.T) {
	natKey, evilKey := mustKey(t), mustKey(t)
	router := netip.MustParseAddr("198.18.0.254")
	dev := []wgtypes.Peer{{PublicKey: natKey, Endpoint: &net.UDPAddr{IP: router.AsSlice(), Port: 40001}}, {PublicKey: evilKey}}
	learned := learnedEndpoints(dev, []wgv1.MeshPeer{{ObjectMeta: metav1.ObjectMeta{Name: "nat-1"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(natKey.String())}}})
	if len(learned) != 1 || learned[0].Peer != "nat-1" || learned[0].Addr != router {
		t.Fatalf("learned %+v, want nat-1 at %s", learned, router)
	}
	in := mesh.Input{NodeName: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
		Peers: []wgv1.MeshPeer{{ObjectMeta: metav1.ObjectMeta{Name: "evil"}, Spec: wgv1.MeshPeerSpec{
			PublicKey: wgv1.PublicKey(evilKey.String()), AllowedIPs: []wgv1.CIDR{"198.18.0.254/32"}}}}}
	if topo := mesh.New(in); len(topo.Peers) != 1 {
		t.Fatalf("control: without the learned endpoint the attacker's peer is left out too: %+v", topo.Problems)
	}
	in.Protected = learnedAddrs(learned)
	topo := mesh.New(in)
	if len(topo.Peers) != 0 || len(topo.Problems) != 1 || topo.Problems[0].Reason != mesh.ReasonCapturesUnderlay || !strings.Contains(topo.Problems[0].String(), "198.18.0.254") {
		t.Fatalf("with the learned endpoint protected: peers %+v, problems %+v", topo.Peers, topo.Problems)
	}

	r := reservedAddrs([]netip.Addr{netip.MustParseAddr("198.18.0.1")}, learned, in.Peers)
	for a, want := range map[string]string{"198.18.0.1": "API server", "198.18.0.254": "peer nat-1", "198.18.0.254/32": "MeshPeer evil"} {
		addr := netip.MustParseAddr(strings.TrimSuffix(a, "/32"))
		what, ok := r.Lookup(addr)
		if !ok || (!strings.Contains(what, want) && !strings.HasSuffix(a, "/32")) {
			t.Errorf("%s reserved as %q (%v), want %q", a, what, ok, want)
		}
	}
}

func mustKey(t *testing.T) wgtypes.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}
