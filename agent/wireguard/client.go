package wireguard

import (
	"fmt"

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

// Open returns a client for link name.
func Open(name string) (*Client, error) {
	wg, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("opening wgctrl: %w", err)
	}
	return &Client{name: name, wg: wg}, nil
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
