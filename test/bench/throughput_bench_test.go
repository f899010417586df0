package bench

import (
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wgmode"
)

// needRoot skips (test/skip) a throughput benchmark that cannot run: with
// -short, without root, or without iperf3.
func needRoot(tb testing.TB) {
	tb.Helper()
	netns.SkipUnlessRoot(tb)
	if _, err := exec.LookPath("iperf3"); err != nil {
		skip.Unless(tb, "throughput: needs iperf3 (apt-get install -y iperf3)")
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// Tunnel addresses of the hand-configured WireGuard tunnel: outside the
// local cluster's underlay, pod and service ranges.
const (
	handTunnelA = "198.18.250.1"
	handTunnelB = "198.18.250.2"
	handPort    = 51821
)

// handWireGuard configures a WireGuard tunnel between namespaces a and b,
// whose underlay addresses are aIP and bIP, by hand: one peer each, link
// wgmb0. Userspace WireGuard (wireguard-go, the same implementation the agent
// runs), or kernel WireGuard in a kernel-mode run (test/wgmode: make
// test-kernel's VM).
func handWireGuard(tb testing.TB, a, b *netns.NS, aIP, bIP string, mtu int) {
	ka, err := wgtypes.GeneratePrivateKey()
	must(tb, err)
	kb, err := wgtypes.GeneratePrivateKey()
	must(tb, err)
	if wgmode.Mode(tb) == wgmode.Kernel {
		kernelWireGuard(tb, a, "wgmb0", mtu, ka, kb.PublicKey(), bIP, handTunnelB+"/32")
		kernelWireGuard(tb, b, "wgmb0", mtu, kb, ka.PublicKey(), aIP, handTunnelA+"/32")
	} else {
		uapi := func(priv, peer wgtypes.Key, endpoint, allowed string) string {
			return fmt.Sprintf("private_key=%s\nlisten_port=%d\npublic_key=%s\nendpoint=%s\nallowed_ip=%s\n",
				hex.EncodeToString(priv[:]), handPort, hex.EncodeToString(peer[:]), net.JoinHostPort(endpoint, fmt.Sprint(handPort)), allowed)
		}
		startWireGuard(tb, a, "wgmb0", mtu, uapi(ka, kb.PublicKey(), bIP, handTunnelB+"/32"))
		startWireGuard(tb, b, "wgmb0", mtu, uapi(kb, ka.PublicKey(), aIP, handTunnelA+"/32"))
	}
	for _, s := range []struct {
		ns         *netns.NS
		addr, peer string
	}{{a, handTunnelA + "/32", handTunnelB + "/32"}, {b, handTunnelB + "/32", handTunnelA + "/32"}} {
		must(tb, netns.LinkUp(s.ns, "wgmb0"))
		must(tb, netns.AddAddr(s.ns, "wgmb0", s.addr))
		must(tb, netns.AddRoute(s.ns, s.peer, "", "wgmb0"))
	}
}

func nsCommander(ns *netns.NS) commander { return ns.Command }

func mbit(bps float64) string { return fmt.Sprintf("%.0f Mbit/s", bps/1e6) }

// kernelWireGuard makes a kernel WireGuard link in ns with one peer.
func kernelWireGuard(tb testing.TB, ns *netns.NS, name string, mtu int, priv, peer wgtypes.Key, endpoint, allowed string) {
	tb.Helper()
	_, ipnet, err := net.ParseCIDR(allowed)
	must(tb, err)
	port := handPort
	must(tb, ns.Do(func() error {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = name, mtu
		if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la}); err != nil {
			return fmt.Errorf("kernel WireGuard link %s in %s: %w", name, ns, err)
		}
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		return c.ConfigureDevice(name, wgtypes.Config{PrivateKey: &priv, ListenPort: &port, Peers: []wgtypes.PeerConfig{{
			PublicKey: peer, Endpoint: &net.UDPAddr{IP: net.ParseIP(endpoint), Port: handPort}, AllowedIPs: []net.IPNet{*ipnet}}}})
	}))
	tb.Cleanup(func() { _ = netns.DeleteLink(ns, name) })
}

// wireGuardLabel names the hand-configured tunnel's implementation in reports.
func wireGuardLabel(tb testing.TB) string {
	if wgmode.Mode(tb) == wgmode.Kernel {
		return "kernel WG (emulated)"
	}
	return "userspace WG"
}
