package wireguard

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Config is the desired device configuration.
type Config struct {
	PrivateKey wgtypes.Key
	ListenPort int
	Peers      []Peer
}

// Result counts what Apply changed.
type Result struct {
	Added, Updated, Removed int
	DeviceChanged           bool // private key or listen port
}

// Changed reports whether Apply touched the device.
func (r Result) Changed() bool {
	return r.DeviceChanged || r.Added+r.Updated+r.Removed > 0
}

// Client configures one WireGuard link through wgctrl (kernel netlink or the
// userspace UAPI socket, whichever serves the link).
type Client struct {
	name string
	wg   *wgctrl.Client
}

// Open returns a client for link name in network namespace ns (nil: the caller's).
// Kernel WireGuard is configured over generic netlink, whose socket belongs to the
// namespace it was opened in: opened anywhere else, a kernel link is "file does not
// exist". (Userspace WireGuard answers on a UAPI socket in the mount namespace, wherever
// the client was opened.)
func Open(name string, ns *netns.NsHandle) (*Client, error) {
	var wg *wgctrl.Client
	err := inNamespace(ns, func() error {
		var err error
		wg, err = wgctrl.New()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening wgctrl for %s: %w", name, err)
	}
	return &Client{name: name, wg: wg}, nil
}

// inNamespace runs fn on an OS thread that has joined ns (nil: fn runs as it is). The
// thread goes back to its namespace afterwards, or, if it cannot, dies with its goroutine.
func inNamespace(ns *netns.NsHandle, fn func() error) error {
	if ns == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("reading the thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(*ns); err != nil {
			errc <- fmt.Errorf("entering network namespace %s: %w", ns, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Close releases the client.
func (c *Client) Close() error { return c.wg.Close() }

// Device reads the device's current state.
func (c *Client) Device() (*wgtypes.Device, error) {
	d, err := c.wg.Device(c.name)
	if err != nil {
		return nil, fmt.Errorf("reading WireGuard device %s: %w", c.name, err)
	}
	return d, nil
}

// Apply brings the device to cfg with per-peer changes; it does not call the
// device at all when nothing differs, and never replaces all peers.
func (c *Client) Apply(cfg Config) (Result, error) {
	dev, err := c.Device()
	if err != nil {
		return Result{}, err
	}
	var res Result
	wc := wgtypes.Config{Peers: Diff(cfg.Peers, dev.Peers)}
	if dev.PrivateKey != cfg.PrivateKey {
		wc.PrivateKey = &cfg.PrivateKey
		res.DeviceChanged = true
	}
	if dev.ListenPort != cfg.ListenPort {
		wc.ListenPort = &cfg.ListenPort
		res.DeviceChanged = true
	}
	for _, p := range wc.Peers {
		switch {
		case p.Remove:
			res.Removed++
		case p.UpdateOnly:
			res.Updated++
		default:
			res.Added++
		}
	}
	if !res.Changed() {
		return res, nil
	}
	if err := c.wg.ConfigureDevice(c.name, wc); err != nil {
		return res, fmt.Errorf("configuring WireGuard device %s (%d added, %d updated, %d removed): %w", c.name, res.Added, res.Updated, res.Removed, err)
	}
	return res, nil
}

// Replace configures all peers at once with ReplacePeers. The agent never
// uses it (it resets every session); it exists for the benchmark that
// compares it with Apply.
func (c *Client) Replace(cfg Config) error {
	var peers []wgtypes.PeerConfig
	for _, p := range cfg.Peers {
		ka := p.Keepalive
		peers = append(peers, wgtypes.PeerConfig{PublicKey: p.PublicKey, Endpoint: p.Endpoint, PersistentKeepaliveInterval: &ka,
			ReplaceAllowedIPs: true, AllowedIPs: toIPNets(p.AllowedIPs)})
	}
	return c.wg.ConfigureDevice(c.name, wgtypes.Config{PrivateKey: &cfg.PrivateKey, ListenPort: &cfg.ListenPort, ReplacePeers: true, Peers: peers})
}
