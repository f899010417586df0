package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/routes"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
	"github.com/wgmesh/wgmesh/test/wgmode"
)

// node is one network namespace with a Reconciler configured for it.
type testNode struct {
	ns     *netns.NS
	nsh    vnetns.NsHandle
	h      *netlink.Handle
	kernel *Reconciler
	mode   wireguard.Mode
	link   string
	bridge string
	key    wgtypes.Key
}

// newTestNode makes a namespace and a Reconciler for it in the mode under test
// (test/wgmode): kernel WireGuard, or userspace WireGuard whose process is
// this test binary started inside the namespace.
func newTestNode(t *testing.T, suffix string, linkName string) *testNode {
	t.Helper()
	name := fmt.Sprintf("wgm-agt%d-%s", os.Getpid()%100000, suffix)
	ns, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	nsh, err := vnetns.GetFromPath(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	key, _ := wgtypes.GeneratePrivateKey()
	n := &testNode{ns: ns, nsh: nsh, h: h, mode: wireguard.Mode(wgmode.Mode(t)), link: linkName, bridge: linkName + "br", key: key}
	n.kernel = New(Options{
		LinkName: linkName, BridgeName: n.bridge, Mode: n.mode, ListenPort: 51820,
		Netlink: h, Namespace: &n.nsh, SkipSysctl: true, Log: testr.New(t),
		StartUserspace: func(ctx context.Context, iface string) error {
			cmd := ns.Command(context.Background(), os.Args[0])
			cmd.Env = append(os.Environ(), envUserspace+"="+iface)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := cmd.Start(); err != nil {
				return err
			}
			go func() { _ = cmd.Wait() }()
			return nil
		},
	})
	t.Cleanup(func() { _ = n.kernel.Cleanup() })
	return n
}

func pfxs(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func (n *testNode) routes(t *testing.T) []string {
	t.Helper()
	link, err := n.h.LinkByName(n.link)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: link.Attrs().Index, Protocol: routes.Protocol},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s src %s", r.Dst, r.Src))
	}
	slices.Sort(out)
	return out
}

// device reads the WireGuard device as the node sees it (a kernel link is
// visible only from inside its namespace).
func (n *testNode) device(t *testing.T) *wgtypes.Device {
	t.Helper()
	c, err := wireguard.Open(n.link, &n.nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Device()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// configure changes the device behind the agent's back, from inside the node.
func (n *testNode) configure(t *testing.T, cfg wgtypes.Config) {
	t.Helper()
	err := n.ns.Do(func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		return c.ConfigureDevice(n.link, cfg)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// linkIndex is the WireGuard link's ifindex: a link that was replaced has another.
func (n *testNode) linkIndex(t *testing.T) int {
	t.Helper()
	l, err := n.h.LinkByName(n.link)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

func peerKeys(d *wgtypes.Device) map[wgtypes.Key][]string {
	out := map[wgtypes.Key][]string{}
	for _, p := range d.Peers {
		var a []string
		for _, n := range p.AllowedIPs {
			a = append(a, n.String())
		}
		slices.Sort(a)
		out[p.PublicKey] = a
	}
	return out
}

func pubkey() wgtypes.Key {
	k, _ := wgtypes.GeneratePrivateKey()
	return k.PublicKey()
}

// TestKernelApplyInNamespace drives WireGuard (the kernel module, or the real
// userspace process: test/wgmode) and real netlink through create, no-op,
// per-peer change, drift, restart and cleanup.
func TestKernelApplyInNamespace(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ctx := context.Background()
	link := fmt.Sprintf("wgmk%d", os.Getpid()%100000)
	n := newTestNode(t, "k", link)
	// Underlay: a bridge (no dummy module here) with MTU 1400 and the
	// default route.
	if err := netns.Bridge(n.ns, "wgmu0", 1400); err != nil {
		t.Fatal(err)
	}
	if err := netns.LinkUp(n.ns, "wgmu0"); err != nil {
		t.Fatal(err)
	}
	if err := netns.AddAddr(n.ns, "wgmu0", "198.18.9.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := netns.AddRoute(n.ns, "default", "198.18.9.254", "wgmu0"); err != nil {
		t.Fatal(err)
	}

	k2, k3, k4 := pubkey(), pubkey(), pubkey()
	gw := pfxs("198.19.1.1/24", "2001:db8:100:1::1/64")
	topo := mesh.Topology{
		Gateways: gw,
		Peers: []mesh.Peer{
			{Name: "n2", PublicKey: k2, Endpoint: "198.18.9.2:51820", AllowedIPs: pfxs("198.19.2.0/24", "2001:db8:100:2::/64")},
			{Name: "n3", PublicKey: k3, Endpoint: "198.18.9.3:51820", AllowedIPs: pfxs("198.19.3.0/24")},
		},
		Routes: []mesh.Route{
			{Dst: netip.MustParsePrefix("198.19.2.0/24"), Src: gw[0].Addr()},
			{Dst: netip.MustParsePrefix("198.19.3.0/24"), Src: gw[0].Addr()},
			{Dst: netip.MustParsePrefix("2001:db8:100:2::/64"), Src: gw[1].Addr()},
		},
	}
	a, err := n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode != n.mode || a.Peers.Added != 2 || a.MTU != 1320 || a.UnderlayIface != "wgmu0" {
		t.Fatalf("first apply: %+v", a)
	}
	wantRoutes := []string{"198.19.2.0/24 src 198.19.1.1", "198.19.3.0/24 src 198.19.1.1", "2001:db8:100:2::/64 src 2001:db8:100:1::1"}
	if got := n.routes(t); !slices.Equal(got, wantRoutes) {
		t.Fatalf("routes = %q, want %q", got, wantRoutes)
	}
	d := n.device(t)
	if d.ListenPort != 51820 || d.PrivateKey != n.key || len(d.Peers) != 2 {
		t.Fatalf("device = port %d, %d peers", d.ListenPort, len(d.Peers))
	}
	for _, name := range []string{link, n.bridge} {
		l, err := n.h.LinkByName(name)
		if err != nil || l.Attrs().MTU != 1320 {
			t.Fatalf("%s: %v mtu %d, want 1320", name, err, l.Attrs().MTU)
		}
	}
	if got := n.globalAddrs(t, n.bridge); !slices.Equal(got, []string{"198.19.1.1/24", "2001:db8:100:1::1/64"}) {
		t.Fatalf("bridge addresses = %q", got)
	}
	// The WireGuard link has each pod CIDR's network address, alone: a
	// masquerade into the tunnel (kube-proxy's) takes a pod-range source.
	wantTunnel := []string{"198.19.1.0/32", "2001:db8:100:1::/128"}
	if got := n.globalAddrs(t, link); !slices.Equal(got, wantTunnel) {
		t.Fatalf("%s addresses = %q, want %q", link, got, wantTunnel)
	}
	// Drift: a stray address is removed, a deleted one comes back.
	if err := netns.AddAddr(n.ns, link, "203.0.113.7/32"); err != nil {
		t.Fatal(err)
	}
	wl, _ := n.h.LinkByName(link)
	if err := n.h.AddrDel(wl, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("198.19.1.0"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo}); err != nil {
		t.Fatal(err)
	}
	if got := n.globalAddrs(t, link); !slices.Equal(got, wantTunnel) {
		t.Fatalf("%s addresses after drift = %q, want %q", link, got, wantTunnel)
	}
	index := n.linkIndex(t)
	pid, ok := wireguardPID(link)
	if ok != (n.mode == wireguard.ModeUserspace) {
		t.Fatalf("userspace WireGuard answers: %v, in %s mode", ok, n.mode)
	}

	// Same state: the device is not touched.
	a, err = n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo})
	if err != nil || a.Peers.Changed() || a.Routes.Added+a.Routes.Removed != 0 {
		t.Fatalf("second apply changed something: %+v %v", a, err)
	}

	// Per-peer change: n3 leaves, n4 joins, n2 loses its IPv6 range.
	topo2 := topo
	topo2.Peers = []mesh.Peer{
		{Name: "n2", PublicKey: k2, Endpoint: "198.18.9.2:51820", AllowedIPs: pfxs("198.19.2.0/24")},
		{Name: "n4", PublicKey: k4, AllowedIPs: pfxs("198.19.4.0/24")},
	}
	topo2.Routes = []mesh.Route{
		{Dst: netip.MustParsePrefix("198.19.2.0/24"), Src: gw[0].Addr()},
		{Dst: netip.MustParsePrefix("198.19.4.0/24"), Src: gw[0].Addr()},
	}
	a, err = n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo2})
	if err != nil || a.Peers.Added != 1 || a.Peers.Updated != 1 || a.Peers.Removed != 1 || a.Routes.Removed != 2 {
		t.Fatalf("change: %+v %v", a, err)
	}
	if got := peerKeys(n.device(t)); len(got) != 2 || !slices.Equal(got[k2], []string{"198.19.2.0/24"}) || got[k4] == nil {
		t.Fatalf("peers after change = %v", got)
	}
	if got := n.routes(t); !slices.Equal(got, []string{"198.19.2.0/24 src 198.19.1.1", "198.19.4.0/24 src 198.19.1.1"}) {
		t.Fatalf("routes after change = %q", got)
	}

	// Drift: a route and a peer removed by hand come back on the next Apply,
	// and the route removal is announced by the netlink watch.
	nsh, err := vnetns.GetFromPath(n.ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fired := make(chan struct{}, 10)
	if err := routes.Watch(wctx, routes.WatchOptions{Links: []string{link}, Namespace: &nsh}, func() {
		select {
		case fired <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ns.Exec(ctx, "ip", "route", "del", "198.19.4.0/24", "dev", link); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		t.Fatal("netlink watch did not report the deleted route")
	}
	n.configure(t, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: k2, Remove: true}}})
	a, err = n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo2})
	if err != nil || a.Peers.Added != 1 || a.Routes.Added != 1 {
		t.Fatalf("drift repair: %+v %v", a, err)
	}
	if got := n.routes(t); len(got) != 2 {
		t.Fatalf("routes after repair = %q", got)
	}

	// Agent restart: a fresh Reconciler finds the link and process and changes nothing.
	n.kernel = New(n.kernel.o)
	a, err = n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo2})
	if err != nil || a.Peers.Changed() || a.Routes.Added != 0 {
		t.Fatalf("apply after restart: %+v %v", a, err)
	}
	if pid2, _ := wireguardPID(link); pid2 != pid {
		t.Fatalf("userspace WireGuard restarted (pid %d -> %d); it must survive the agent", pid, pid2)
	}
	if got := n.linkIndex(t); got != index {
		t.Fatalf("the link was replaced (ifindex %d -> %d); it must survive the agent", index, got)
	}

	// The device goes away (the userspace process dies; the kernel link is
	// deleted by hand): the next Apply makes a new one and configures it from
	// scratch.
	if n.mode == wireguard.ModeUserspace {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	} else if _, err := n.ns.Exec(ctx, "ip", "link", "del", link); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "old link to disappear", wait.True(func() bool { _, err := n.h.LinkByName(link); return err != nil }))
	a, err = n.kernel.Apply(ctx, Desired{PrivateKey: n.key, Topology: topo2})
	if err != nil || a.Peers.Added != 2 || len(n.routes(t)) != 2 {
		t.Fatalf("apply after process death: %+v %v", a, err)
	}

	// Cleanup removes link, routes, bridge and the process.
	pid3, _ := wireguardPID(link)
	if err := n.kernel.Cleanup(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "link and bridge removal", wait.True(func() bool {
		_, e1 := n.h.LinkByName(link)
		_, e2 := n.h.LinkByName(n.bridge)
		return e1 != nil && e2 != nil
	}))
	if n.mode == wireguard.ModeUserspace {
		wait.For(t, 10*time.Second, "userspace process exit", wait.True(func() bool { return !alive(pid3) }))
	}
}

func wireguardPID(link string) (int, bool) {
	c, err := net.Dial("unix", wireguard.SocketPath(link))
	if err != nil {
		return 0, false
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	raw, _ := uc.SyscallConn()
	pid := 0
	_ = raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid, pid > 0
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie counts as gone.
	f := strings.Fields(string(data))
	return len(f) > 2 && f[2] != "Z"
}

// globalAddrs are link's addresses that are not link-local, sorted.
func (n *testNode) globalAddrs(t *testing.T, link string) []string {
	t.Helper()
	l, err := n.h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := n.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ad := range addrs {
		if !ad.IP.IsLinkLocalUnicast() {
			got = append(got, ad.IPNet.String())
		}
	}
	slices.Sort(got)
	return got
}
