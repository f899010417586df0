package wireguard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
)

// Mode is how WireGuard runs.
type Mode string

const (
	ModeAuto      Mode = "auto"
	ModeKernel    Mode = "kernel"
	ModeUserspace Mode = "userspace"
)

// ParseMode checks a --wireguard-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeKernel, ModeUserspace:
		return m, nil
	}
	return "", fmt.Errorf("--wireguard-mode=%q: want auto, kernel or userspace", s)
}

// LinkOptions describe the link to ensure.
type LinkOptions struct {
	Name string
	Mode Mode
	// Netlink is the handle for the node's network namespace.
	Netlink *netlink.Handle
	// StartUserspace starts the userspace WireGuard process; default Spawn
	// with SpawnOptions{LogFile: UserspaceLog}.
	StartUserspace StartFunc
	UserspaceLog   string
	// Wait bounds how long to wait for a started userspace process.
	Wait time.Duration
	Log  logr.Logger
}

// EnsureLink makes sure the WireGuard link exists and is up, and returns the
// mode it runs in. It never recreates a working link: an existing kernel link,
// or a TUN link whose userspace process answers on its UAPI socket, is kept as
// it is, so that an agent restart does not touch the data plane.
func EnsureLink(ctx context.Context, o LinkOptions) (Mode, error) {
	h := o.Netlink
	if h == nil {
		h = &netlink.Handle{}
	}
	mode, err := existing(h, o)
	if err != nil {
		return "", err
	}
	if mode == "" {
		mode, err = create(ctx, h, o)
		if err != nil {
			return "", err
		}
	}
	link, err := h.LinkByName(o.Name)
	if err != nil {
		return "", fmt.Errorf("link %s: %w", o.Name, err)
	}
	if link.Attrs().Flags&1 == 0 { // net.FlagUp
		if err := h.LinkSetUp(link); err != nil {
			return "", fmt.Errorf("setting link %s up: %w", o.Name, err)
		}
	}
	return mode, nil
}

// existing classifies a link already present; "" means it must be created.
func existing(h *netlink.Handle, o LinkOptions) (Mode, error) {
	link, err := h.LinkByName(o.Name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return "", nil
		}
		return "", fmt.Errorf("looking up link %s: %w", o.Name, err)
	}
	switch link.Type() {
	case "wireguard":
		if o.Mode != ModeUserspace {
			return ModeKernel, nil
		}
	case "tun", "tuntap":
		if _, ok := socketAnswers(o.Name); ok && o.Mode != ModeKernel {
			return ModeUserspace, nil
		}
	}
	// Wrong kind, or a TUN whose process is gone: it carries no traffic.
	o.Log.Info("removing unusable link", "link", o.Name, "type", link.Type(), "mode", o.Mode)
	if err := h.LinkDel(link); err != nil {
		return "", fmt.Errorf("removing unusable link %s (type %s): %w", o.Name, link.Type(), err)
	}
	return "", nil
}

func create(ctx context.Context, h *netlink.Handle, o LinkOptions) (Mode, error) {
	if o.Mode != ModeUserspace {
		err := h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: o.Name}})
		if err == nil {
			o.Log.Info("created kernel WireGuard link", "link", o.Name)
			return ModeKernel, nil
		}
		if o.Mode == ModeKernel {
			return "", fmt.Errorf("creating kernel WireGuard link %s (--wireguard-mode=kernel): %w", o.Name, err)
		}
		o.Log.Info("kernel WireGuard unavailable, using userspace WireGuard", "error", err.Error())
	}
	if pid, ok := socketAnswers(o.Name); ok {
		// A process serves the socket but its link is gone: it is useless.
		if p, err := os.FindProcess(pid); err == nil && pid > 0 {
			_ = p.Signal(syscall.SIGTERM)
		}
	}
	start := o.StartUserspace
	if start == nil {
		start = func(_ context.Context, name string) error {
			_, err := Spawn(name, SpawnOptions{LogFile: o.UserspaceLog})
			return err
		}
	}
	if err := start(ctx, o.Name); err != nil {
		return "", err
	}
	wait := o.Wait
	if wait == 0 {
		wait = 15 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		if _, err := h.LinkByName(o.Name); err == nil {
			if _, ok := socketAnswers(o.Name); ok {
				o.Log.Info("started userspace WireGuard", "link", o.Name, "log", o.UserspaceLog)
				return ModeUserspace, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("userspace WireGuard for %s did not come up within %s (link and UAPI socket %s); see %s", o.Name, wait, SocketPath(o.Name), o.UserspaceLog)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DeleteLink removes the link and stops a userspace process serving it.
func DeleteLink(h *netlink.Handle, name string) error {
	if h == nil {
		h = &netlink.Handle{}
	}
	if pid, ok := socketAnswers(name); ok && pid > 0 {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Signal(syscall.SIGTERM)
		}
	}
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("looking up link %s: %w", name, err)
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("removing link %s: %w", name, err)
	}
	return nil
}
