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
	// Wait bounds how long to wait for a started userspace process (or,
	// with External, for the one another container starts).
	Wait time.Duration
	// External: userspace WireGuard is owned by another process (the
	// chart's userspace-wireguard container). The agent only waits for its
	// link and socket; it never starts a process of its own and never
	// deletes the link, so that exactly one process owns the data plane.
	External bool
	Log      logr.Logger
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
	var mode Mode
	var err error
	if o.External {
		mode, err = waitExternal(ctx, h, o)
	} else if mode, err = existing(h, o); err == nil && mode == "" {
		mode, err = create(ctx, h, o)
	}
	if err != nil {
		return "", err
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
		st, pid := socketState(o.Name)
		switch {
		case st == socketServing && o.Mode != ModeKernel:
			return ModeUserspace, nil
		case st == socketBusy:
			// Its process may be starting or loaded: deleting the TUN
			// would drop the data plane. Look again later.
			return "", fmt.Errorf("userspace WireGuard of %s (pid %d) holds %s but did not answer in time; the link is kept and checked again", o.Name, pid, SocketPath(o.Name))
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
	if pid, ok := SocketAnswers(o.Name); ok {
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
			if _, ok := SocketAnswers(o.Name); ok {
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

// waitExternal waits for the link and socket of a userspace WireGuard
// process that another container owns. It starts nothing and deletes
// nothing.
func waitExternal(ctx context.Context, h *netlink.Handle, o LinkOptions) (Mode, error) {
	wait := o.Wait
	if wait == 0 {
		wait = 15 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		link, err := h.LinkByName(o.Name)
		if err == nil {
			if t := link.Type(); t != "tun" && t != "tuntap" {
				return "", fmt.Errorf("link %s is a %s link, not the TUN of the userspace-wireguard container; it is left alone (remove it by hand)", o.Name, t)
			}
			if st, _ := socketState(o.Name); st == socketServing {
				return ModeUserspace, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("waiting for the userspace-wireguard container: no TUN %s answering on %s after %s (the agent never starts its own)", o.Name, SocketPath(o.Name), wait)
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
	if pid, ok := SocketAnswers(name); ok && pid > 0 {
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
	// The userspace process removes its TUN as it exits on the signal
	// above: gone between the lookup and the delete is what was asked.
	if err := h.LinkDel(link); err != nil && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("removing link %s: %w", name, err)
	}
	return nil
}
