package tunnel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	"github.com/wgmesh/wgmesh/test/netns"
)

// TestKernelFailuresStayLocal: on a host booted with IPv6 disabled (no
// /proc/sys/net/ipv6) an IPv4 node gets its data plane with no error; when
// WireGuard cannot start, the pod bridge is still there (same-node pods
// work) and the failure is reported, not hidden.
func TestKernelFailuresStayLocal(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ctx := context.Background()
	link := fmt.Sprintf("wgmf%d", os.Getpid()%100000)
	n := newTestNode(t, "f", link)

	// A sysctl tree as on a host booted with ipv6.disable=1.
	root := t.TempDir()
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/" + link + "/rp_filter"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, k)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, k), []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o := n.kernel.o
	o.SkipSysctl, o.SysctlRoot = false, root
	k := New(o)
	topo := mesh.Topology{Gateways: pfxs("198.19.1.1/24"), Peers: []mesh.Peer{{Name: "n2", PublicKey: pubkey(), AllowedIPs: pfxs("198.19.2.0/24")}},
		Routes: []mesh.Route{{Dst: pfxs("198.19.2.0/24")[0], Src: pfxs("198.19.1.1/24")[0].Addr()}}}
	a, err := k.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo})
	if err != nil {
		t.Fatalf("IPv4 node on a host without IPv6: %v", err)
	}
	for _, s := range a.Sysctls {
		if strings.HasPrefix(s.Key, "net.ipv6.") {
			t.Errorf("IPv6 sysctl %s touched on an IPv4-only node", s.Key)
		}
	}
	if got := n.routes(t); len(got) != 1 {
		t.Errorf("routes = %v, want the peer's", got)
	}
	if err := k.Cleanup(); err != nil {
		t.Fatal(err)
	}

	// WireGuard cannot start: the bridge still comes up, the error is
	// reported.
	o.StartUserspace = func(context.Context, string) error { return errors.New("no TUN device") }
	o.Mode = wireguard.ModeUserspace
	k = New(o)
	_, err = k.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo})
	if err == nil || !strings.Contains(err.Error(), "no TUN device") {
		t.Fatalf("Apply without WireGuard = %v, want the start error", err)
	}
	br, lerr := n.h.LinkByName(n.bridge)
	if lerr != nil {
		t.Fatalf("no pod bridge when WireGuard failed: %v", lerr)
	}
	addrs, _ := n.h.AddrList(br, 0)
	if len(addrs) == 0 || !strings.HasPrefix(addrs[0].IPNet.String(), "198.19.1.1/24") {
		t.Errorf("bridge addresses %v, want the gateway 198.19.1.1/24", addrs)
	}
	_ = k.Cleanup()
}

// TestKernelFirstApplyWithSysctls: a node's very first Apply, on the real
// /proc/sys of a fresh network namespace, sets the tunnel's own sysctls
// without an error: they are applied after the link exists, not before
// (the first reconcile of every new node used to fail on
// net.ipv4.conf.LINK.rp_filter and wait for the retry back-off).
func TestKernelFirstApplyWithSysctls(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ctx := context.Background()
	link := fmt.Sprintf("wgms%d", os.Getpid()%100000)
	n := newTestNode(t, "s", link)
	o := n.kernel.o
	o.SkipSysctl, o.SysctlRoot = false, "" // the namespace's own /proc/sys
	k := New(o)
	t.Cleanup(func() { _ = k.Cleanup() })
	topo := mesh.Topology{Gateways: pfxs("198.19.1.1/24"), Peers: []mesh.Peer{{Name: "n2", PublicKey: pubkey(), AllowedIPs: pfxs("198.19.2.0/24")}},
		Routes: []mesh.Route{{Dst: pfxs("198.19.2.0/24")[0], Src: pfxs("198.19.1.1/24")[0].Addr()}}}
	var a Applied
	if err := n.ns.Do(func() (err error) {
		a, err = k.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo})
		return err
	}); err != nil {
		t.Fatalf("first Apply on a fresh node: %v", err)
	}
	found := false
	for _, s := range a.Sysctls {
		if s.Err != nil {
			t.Errorf("sysctl %s: %v", s.Key, s.Err)
		}
		found = found || s.Key == "net.ipv4.conf."+link+".rp_filter"
	}
	if !found {
		t.Errorf("sysctls applied %+v, want net.ipv4.conf.%s.rp_filter among them", a.Sysctls, link)
	}
}
