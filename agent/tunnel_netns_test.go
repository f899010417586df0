package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/test/netns"
)

// TestTwoNodesTunnel connects two namespaces over a veth underlay, applies
// each one's topology, and checks that each reaches the other's bridge
// gateway through the tunnel, sourced from its own gateway.
func TestTwoNodesTunnel(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ctx := context.Background()
	pid := os.Getpid() % 100000
	a := newTestNode(t, "a", fmt.Sprintf("wgma%d", pid))
	b := newTestNode(t, "b", fmt.Sprintf("wgmb%d", pid))
	if err := netns.Veth(a.ns, "wgmu0", b.ns, "wgmu0", 1500); err != nil {
		t.Fatal(err)
	}
	for i, n := range []*testNode{a, b} {
		if err := netns.LinkUp(n.ns, "wgmu0"); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddAddr(n.ns, "wgmu0", fmt.Sprintf("198.18.9.%d/24", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	topoFor := func(self int) mesh.Topology {
		other := 3 - self
		on := []*testNode{a, b}[other-1]
		gw := netip.MustParsePrefix(fmt.Sprintf("198.19.%d.1/24", self))
		return mesh.Topology{
			Gateways: []netip.Prefix{gw},
			Peers: []mesh.Peer{{Name: fmt.Sprintf("n%d", other), PublicKey: on.key.PublicKey(),
				Endpoint: fmt.Sprintf("198.18.9.%d:51820", other), AllowedIPs: pfxs(fmt.Sprintf("198.19.%d.0/24", other))}},
			Routes: []mesh.Route{{Dst: netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", other)), Src: gw.Addr()}},
		}
	}
	for i, n := range []*testNode{a, b} {
		if _, err := n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topoFor(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	var out []byte
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err = a.ns.Exec(ctx, "ping", "-c", "1", "-W", "1", "198.19.2.1")
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("node a cannot reach node b's gateway through the tunnel: %v", err)
	}
	if out, err = b.ns.Exec(ctx, "ping", "-c", "1", "-W", "2", "198.19.1.1"); err != nil {
		t.Fatalf("node b cannot reach node a's gateway: %v", err)
	}
	d := a.device(t)
	if len(d.Peers) != 1 || d.Peers[0].LastHandshakeTime.IsZero() || d.Peers[0].TransmitBytes == 0 {
		t.Fatalf("no handshake/traffic on a's peer: %+v", d.Peers)
	}
	_ = out
}
