// Package tunnel is the mesh's edge to the node's kernel: it brings the
// WireGuard link (kernel module or the long-lived userspace process), its
// peers, the MTU, the pod bridge, the routes and the sysctls to a topology,
// reading everything back each time. The agent reaches it through its
// Tunnel interface, so its pipeline is tested with a fake.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent/bridge"
	"github.com/wgmesh/wgmesh/agent/linkaddr"
	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/mtu"
	"github.com/wgmesh/wgmesh/agent/paths"
	"github.com/wgmesh/wgmesh/agent/routes"
	"github.com/wgmesh/wgmesh/agent/sysctl"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	"github.com/wgmesh/wgmesh/podnet"
)

// Options configure the node's kernel side of the mesh.
type Options struct {
	LinkName   string
	BridgeName string
	Mode       wireguard.Mode
	ListenPort int
	MTU        int // configured; 0 = underlay - 80
	// Netlink is bound to the node's network namespace; nil = the caller's.
	Netlink *netlink.Handle
	// Namespace is that same namespace when it is not the caller's: the WireGuard
	// client is opened there (kernel WireGuard's generic netlink socket belongs to the
	// namespace it is opened in). nil = the caller's.
	Namespace *vnetns.NsHandle
	// StartUserspace overrides how the userspace WireGuard process starts.
	StartUserspace wireguard.StartFunc
	UserspaceLog   string
	// UserspaceExternal: another container owns userspace WireGuard
	// (wireguard.LinkOptions.External).
	UserspaceExternal bool
	// SysctlRoot is /proc/sys unless set; SkipSysctl leaves sysctls alone.
	SysctlRoot string
	SkipSysctl bool
	Resolver   *wireguard.Resolver
	Log        logr.Logger
}

// Reconciler applies a mesh topology to the node: WireGuard link and peers,
// MTU, pod bridge, routes and sysctls. It holds no state that a restart
// would need: everything is read back from the kernel on each Apply.
type Reconciler struct {
	o    Options
	h    *netlink.Handle
	wg   *wireguard.Client
	mode wireguard.Mode
}

// New returns a Reconciler for o.
func New(o Options) *Reconciler {
	if o.Resolver == nil {
		o.Resolver = &wireguard.Resolver{}
	}
	h := o.Netlink
	if h == nil {
		h = &netlink.Handle{}
	}
	return &Reconciler{o: o, h: h}
}

// Desired is what Apply brings the kernel to.
type Desired struct {
	PrivateKey wgtypes.Key
	Topology   mesh.Topology
}

// Applied reports what Apply found and did.
type Applied struct {
	Mode           wireguard.Mode
	MTU            int
	UnderlayIface  string
	UnderlayMTU    int
	Peers          wireguard.Result
	Routes         routes.SyncResult
	Device         *wgtypes.Device // after the change
	Sysctls        []sysctl.Result
	EndpointErrors []mesh.Problem // peers kept, but their endpoint could not be resolved
}

// Apply reconciles the kernel with d. One failing part is reported and
// never stops the others: sysctls, the pod bridge (same-node pods work
// without the tunnel), the WireGuard link and its peers, the routes. Errors
// are joined.
func (k *Reconciler) Apply(ctx context.Context, d Desired) (Applied, error) {
	var a Applied
	var errs []error

	ensureSysctls := func(settings []sysctl.Setting) {
		if k.o.SkipSysctl {
			return
		}
		res, err := sysctl.Ensure(k.o.SysctlRoot, settings)
		a.Sysctls = append(a.Sysctls, res...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if !k.o.SkipSysctl { // (finding the IPv6 uplinks is a route dump)
		v6 := slices.ContainsFunc(d.Topology.Gateways, func(g netip.Prefix) bool { return g.Addr().Is6() })
		ensureSysctls(sysctl.Required(sysctl.Options{IPv6: v6, IPv6Uplinks: k.ipv6Uplinks(v6)}))
	}

	peers, targets := k.resolve(ctx, d.Topology.Peers, &a)

	iface, under, err := mtu.Underlay(k.h, targets, k.o.LinkName, k.o.BridgeName)
	if err != nil && k.o.MTU == 0 {
		k.o.Log.V(1).Info("underlay MTU unknown", "error", err.Error())
	}
	a.UnderlayIface, a.UnderlayMTU = iface, under
	a.MTU = mtu.Choose(k.o.MTU, under)

	if len(d.Topology.Gateways) > 0 {
		if err := bridge.Ensure(k.h, bridge.Options{Name: k.o.BridgeName, Gateways: d.Topology.Gateways, MTU: a.MTU,
			HardwareAddr: bridge.StableMAC(k.o.BridgeName, d.Topology.Gateways)}); err != nil {
			errs = append(errs, err)
		}
	}

	if err := k.ensureLink(ctx); err != nil {
		return a, errors.Join(append(errs, err)...)
	}
	a.Mode = k.mode
	ensureSysctls(sysctl.ForLink(k.o.LinkName)) // its /proc/sys entries exist only now
	if err := k.setMTU(a.MTU); err != nil {
		errs = append(errs, err)
	}
	if err := k.setAddrs(TunnelAddrs(d.Topology.Gateways)); err != nil {
		errs = append(errs, err)
	}

	res, err := k.wg.Apply(wireguard.Config{PrivateKey: d.PrivateKey, ListenPort: k.o.ListenPort, Peers: peers})
	a.Peers = res
	if err != nil {
		// The device may have gone away (userspace process killed): find
		// out at the next Apply.
		k.wg.Close()
		k.wg = nil
		return a, errors.Join(append(errs, err)...)
	}

	tb := &routes.Table{Link: k.o.LinkName, Netlink: k.h}
	rr, err := tb.Sync(d.Topology.Routes)
	a.Routes = rr
	if err != nil {
		errs = append(errs, err)
	}
	if dev, err := k.wg.Device(); err == nil {
		a.Device = dev
	} else {
		errs = append(errs, err)
	}
	return a, errors.Join(errs...)
}

// ipv6Uplinks are the interfaces of the IPv6 default routes (see
// sysctl.Options.IPv6Uplinks).
func (k *Reconciler) ipv6Uplinks(v6 bool) []string {
	if !v6 {
		return nil
	}
	rs, err := k.h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range rs {
		if r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		if l, err := k.h.LinkByIndex(r.LinkIndex); err == nil && !slices.Contains(out, l.Attrs().Name) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

func (k *Reconciler) ensureLink(ctx context.Context) error {
	if k.wg != nil {
		if _, err := k.h.LinkByName(k.o.LinkName); err == nil {
			if _, err := k.wg.Device(); err == nil {
				return nil
			}
		}
		k.wg.Close()
		k.wg = nil
	}
	mode, err := wireguard.EnsureLink(ctx, wireguard.LinkOptions{
		Name: k.o.LinkName, Mode: k.o.Mode, Netlink: k.h,
		StartUserspace: k.o.StartUserspace, UserspaceLog: k.o.UserspaceLog, External: k.o.UserspaceExternal, Log: k.o.Log,
	})
	if err != nil {
		return err
	}
	wg, err := wireguard.Open(k.o.LinkName, k.o.Namespace)
	if err != nil {
		return err
	}
	k.wg, k.mode = wg, mode
	return nil
}

func (k *Reconciler) setMTU(m int) error {
	link, err := k.h.LinkByName(k.o.LinkName)
	if err != nil {
		return fmt.Errorf("link %s: %w", k.o.LinkName, err)
	}
	if link.Attrs().MTU == m {
		return nil
	}
	if err := k.h.LinkSetMTU(link, m); err != nil {
		return fmt.Errorf("setting MTU %d on %s: %w", m, k.o.LinkName, err)
	}
	return nil
}

// TunnelAddrs are the WireGuard link's addresses: podnet.TunnelAddress of
// each pod CIDR (the gateways carry the pod CIDRs' lengths).
func TunnelAddrs(gateways []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, g := range gateways {
		if a, ok := podnet.TunnelAddress(g); ok {
			out = append(out, a)
		}
	}
	return out
}

// setAddrs makes the WireGuard link's global addresses exactly want.
// Without an address, a masquerade into the link (kube-proxy's) takes the
// underlay address, which no peer's AllowedIPs accept.
func (k *Reconciler) setAddrs(want []netip.Prefix) error {
	link, err := k.h.LinkByName(k.o.LinkName)
	if err != nil {
		return fmt.Errorf("link %s: %w", k.o.LinkName, err)
	}
	if err := linkaddr.Sync(k.h, link, want); err != nil {
		return fmt.Errorf("link %s: %w", k.o.LinkName, err)
	}
	return nil
}

// resolve turns topology peers into WireGuard peers. A peer whose endpoint
// cannot be resolved is kept without an endpoint (it can still reach us, and
// the endpoint WireGuard learned stays), and reported.
func (k *Reconciler) resolve(ctx context.Context, ps []mesh.Peer, a *Applied) ([]wireguard.Peer, []netip.Addr) {
	out := make([]wireguard.Peer, 0, len(ps))
	var targets []netip.Addr
	keep := map[string]bool{}
	for _, p := range ps {
		wp := wireguard.Peer{PublicKey: p.PublicKey, AllowedIPs: p.WireGuardAllowedIPs(), Keepalive: time.Duration(p.Keepalive) * time.Second,
			// Private and public paths are set even over a session at another
			// address (a new location label moves a pair at once); a punched
			// endpoint only until a session exists, since the NAT may map
			// this pair elsewhere than the observers saw and WireGuard's
			// roaming then knows better.
			Pinned: p.Path == paths.KindPrivate || p.Path == paths.KindPublic}
		if p.Endpoint != "" {
			keep[p.Endpoint] = true
			addr, err := k.o.Resolver.Resolve(ctx, p.Endpoint)
			if err != nil {
				a.EndpointErrors = append(a.EndpointErrors, mesh.Problem{Peer: p.Name, Field: "spec.endpoint", Value: p.Endpoint,
					Reason: mesh.ReasonUnresolvableEndpoint, Detail: err.Error() + "; the peer is kept without a configured endpoint"})
			}
			if addr != nil {
				wp.Endpoint = addr
				if ip, ok := netip.AddrFromSlice(addr.IP); ok {
					targets = append(targets, ip.Unmap())
				}
			}
		}
		out = append(out, wp)
	}
	k.o.Resolver.Forget(keep)
	return out, targets
}

// Cleanup removes the routes, the bridge and the link, and stops a userspace
// WireGuard process (--cleanup-on-exit).
// Peers are the WireGuard device's peers as they are now, with the endpoints
// it learned from their handshakes (a peer behind NAT is reached at its
// router's address, which no MeshPeer names); nil before the link exists.
func (k *Reconciler) Peers() []wgtypes.Peer {
	if k.wg == nil {
		return nil
	}
	dev, err := k.wg.Device()
	if err != nil {
		return nil
	}
	return dev.Peers
}

func (k *Reconciler) Cleanup() error {
	var errs []error
	tb := &routes.Table{Link: k.o.LinkName, Netlink: k.h}
	if err := tb.Flush(); err != nil {
		errs = append(errs, err)
	}
	if k.wg != nil {
		k.wg.Close()
		k.wg = nil
	}
	if err := wireguard.DeleteLink(k.h, k.o.LinkName); err != nil {
		errs = append(errs, err)
	}
	if br, err := k.h.LinkByName(k.o.BridgeName); err == nil {
		if err := k.h.LinkDel(br); err != nil {
			errs = append(errs, fmt.Errorf("removing bridge %s: %w", k.o.BridgeName, err))
		}
	}
	return errors.Join(errs...)
}

// Mode is the WireGuard mode in use ("" before the first Apply).
func (k *Reconciler) Mode() wireguard.Mode { return k.mode }
