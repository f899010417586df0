package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
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
	wait.For(t, 20*time.Second, "node a to reach node b's gateway through the tunnel", func() error {
		_, err := a.ns.Exec(ctx, "ping", "-c", "1", "-W", "1", "198.19.2.1")
		return err
	})
	if _, err := b.ns.Exec(ctx, "ping", "-c", "1", "-W", "2", "198.19.1.1"); err != nil {
		t.Fatalf("node b cannot reach node a's gateway: %v", err)
	}
	d := a.device(t)
	if len(d.Peers) != 1 || d.Peers[0].LastHandshakeTime.IsZero() || d.Peers[0].TransmitBytes == 0 {
		t.Fatalf("no handshake/traffic on a's peer: %+v", d.Peers)
	}
}

// TestPeerChangeKeepsSessions: on a node with live sessions to two peers,
// adding, changing and removing other peers touches only those peers: the
// untouched peer keeps its session (same handshake, counters not reset) and a
// ping to it every 10 ms across the changes loses nothing. Replacing all
// peers at once, which the agent never does, resets it: the check can fail.
func TestPeerChangeKeepsSessions(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ctx := context.Background()
	pid := os.Getpid() % 100000
	u := netns.NewForTest(t, fmt.Sprintf("wgm-agt%d-u", pid))
	if err := netns.Bridge(u, "br0", 1500); err != nil {
		t.Fatal(err)
	}
	if err := netns.LinkUp(u, "br0"); err != nil {
		t.Fatal(err)
	}
	var nodes []*testNode
	for i, s := range []string{"a", "b", "c"} {
		n := newTestNode(t, s, fmt.Sprintf("wgm%s%d", s, pid))
		port := fmt.Sprintf("wgm%d%s", pid, s)
		if err := netns.Veth(n.ns, "wgmu0", u, port, 1500); err != nil {
			t.Fatal(err)
		}
		if err := netns.SetMaster(u, port, "br0"); err != nil {
			t.Fatal(err)
		}
		if err := netns.LinkUp(n.ns, "wgmu0"); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddAddr(n.ns, "wgmu0", fmt.Sprintf("198.18.9.%d/24", i+1)); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	gw := func(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("198.19.%d.1/24", i+1)) }
	peerOf := func(i int) mesh.Peer {
		return mesh.Peer{Name: fmt.Sprintf("n%d", i+1), PublicKey: nodes[i].key.PublicKey(),
			Endpoint: fmt.Sprintf("198.18.9.%d:51820", i+1), AllowedIPs: []netip.Prefix{gw(i).Masked()}}
	}
	topoFor := func(self int, extra ...mesh.Peer) mesh.Topology {
		topo := mesh.Topology{Gateways: []netip.Prefix{gw(self)}}
		for i := range nodes {
			if i != self {
				topo.Peers = append(topo.Peers, peerOf(i))
			}
		}
		topo.Peers = append(topo.Peers, extra...)
		for _, p := range topo.Peers {
			for _, a := range p.AllowedIPs {
				topo.Routes = append(topo.Routes, mesh.Route{Dst: a, Src: gw(self).Addr()})
			}
		}
		return topo
	}
	for i, n := range nodes {
		if _, err := n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topoFor(i)}); err != nil {
			t.Fatal(err)
		}
	}
	a := nodes[0]
	for _, i := range []int{1, 2} {
		dst := gw(i).Addr().String()
		wait.For(t, 20*time.Second, "a to reach "+dst+" through the tunnel", func() error {
			_, err := a.ns.Exec(ctx, "ping", "-c", "1", "-W", "1", dst)
			return err
		})
	}
	bKey := nodes[1].key.PublicKey()
	peerB := func() wgtypes.Peer {
		for _, p := range a.device(t).Peers {
			if p.PublicKey == bKey {
				return p
			}
		}
		t.Fatal("a has no peer b")
		return wgtypes.Peer{}
	}
	before := peerB()
	if before.LastHandshakeTime.IsZero() {
		t.Fatal("no session between a and b")
	}

	// A ping to b every 10 ms while other peers come, change and go.
	// -c, not -w: a deadline counts the packet in flight when it passes as lost.
	ping := a.ns.Command(ctx, "ping", "-q", "-i", "0.01", "-c", "300", "-W", "1", gw(1).Addr().String())
	var out strings.Builder
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	d := mesh.Peer{Name: "n4", PublicKey: pubkey(), AllowedIPs: pfxs("198.19.4.0/24")}
	cWider := peerOf(2)
	cWider.AllowedIPs = append(cWider.AllowedIPs, netip.MustParsePrefix("198.19.30.0/24"))
	steps := []struct {
		what                    string
		topo                    mesh.Topology
		added, updated, removed int
	}{
		{"d joins", topoFor(0, d), 1, 0, 0},
		{"c gets another range", func() mesh.Topology {
			tp := topoFor(0, d)
			tp.Peers[1] = cWider
			tp.Routes = append(tp.Routes, mesh.Route{Dst: netip.MustParsePrefix("198.19.30.0/24"), Src: gw(0).Addr()})
			return tp
		}(), 0, 1, 0},
		{"d leaves, c back to one range", topoFor(0), 0, 1, 1},
	}
	for _, s := range steps {
		time.Sleep(500 * time.Millisecond)
		res, err := a.kernel.Apply(ctx, Desired{PrivateKey: a.key, Topology: s.topo})
		if err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		if p := res.Peers; p.Added != s.added || p.Updated != s.updated || p.Removed != s.removed || p.DeviceChanged {
			t.Fatalf("%s: peers %+v, want %d added, %d updated, %d removed", s.what, p, s.added, s.updated, s.removed)
		}
	}
	err := ping.Wait()
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
	if m == nil || m[1] != m[2] || m[1] == "0" {
		t.Fatalf("ping to b across other peers' changes: want no loss, got %v: %s", err, out.String())
	}
	t.Logf("ping to b every 10 ms across three peer changes: %s/%s received", m[2], m[1])
	after := peerB()
	if !after.LastHandshakeTime.Equal(before.LastHandshakeTime) || after.TransmitBytes < before.TransmitBytes || after.ReceiveBytes < before.ReceiveBytes {
		t.Fatalf("b's session was reset by other peers' changes: handshake %v -> %v, tx %d -> %d, rx %d -> %d",
			before.LastHandshakeTime, after.LastHandshakeTime, before.TransmitBytes, after.TransmitBytes, before.ReceiveBytes, after.ReceiveBytes)
	}

	// The control: replacing all peers (what the agent never does) resets b.
	var peers []wireguard.Peer
	for _, p := range topoFor(0).Peers {
		ep, _ := a.kernel.o.Resolver.Resolve(ctx, p.Endpoint)
		peers = append(peers, wireguard.Peer{PublicKey: p.PublicKey, Endpoint: ep, AllowedIPs: p.AllowedIPs})
	}
	if err := a.kernel.wg.Replace(wireguard.Config{PrivateKey: a.key, ListenPort: 51820, Peers: peers}); err != nil {
		t.Fatal(err)
	}
	if p := peerB(); !p.LastHandshakeTime.IsZero() || p.TransmitBytes >= after.TransmitBytes {
		t.Fatalf("ReplacePeers kept b's session (handshake %v, tx %d): the check above cannot see a reset", p.LastHandshakeTime, p.TransmitBytes)
	}
}
