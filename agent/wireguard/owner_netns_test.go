package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/test/netns"
)

// startSidecar runs the userspace WireGuard process (this test binary) in ns,
// as the chart's userspace-wireguard container would.
func startSidecar(t *testing.T, ns *netns.NS, name string) *exec.Cmd {
	t.Helper()
	cmd := ns.Command(context.Background(), os.Args[0])
	cmd.Env = append(os.Environ(), envUserspace+"="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = os.Remove(SocketPath(name))
	})
	return cmd
}

// TestUserspaceSidecarIsTheOnlyOwner races the agent against a sidecar that
// starts late (a restarting userspace-wireguard container): in the sidecar
// layout the agent waits, never starts its own process and never deletes the
// TUN; it adopts the sidecar's device, and an agent restart keeps it.
func TestUserspaceSidecarIsTheOnlyOwner(t *testing.T) {
	netns.SkipUnlessRoot(t)
	name := fmt.Sprintf("wgmo%d", os.Getpid()%100000)
	ns := netns.NewForTest(t, "wgm-owner-"+name)
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	started := 0
	opts := LinkOptions{Name: name, Mode: ModeUserspace, Netlink: h, External: true, Wait: 20 * time.Second, Log: testr.New(t),
		StartUserspace: func(context.Context, string) error {
			started++
			return errors.New("the agent must not start userspace WireGuard")
		}}

	// Nothing there and no sidecar: a clear, bounded wait.
	short := opts
	short.Wait = 300 * time.Millisecond
	if _, err := EnsureLink(context.Background(), short); err == nil || !strings.Contains(err.Error(), "waiting for the userspace-wireguard container") {
		t.Fatalf("no sidecar: %v", err)
	}

	// The agent starts first; the sidecar comes up 1 s later.
	done := make(chan error, 1)
	go func() {
		_, err := EnsureLink(context.Background(), opts)
		done <- err
	}()
	time.Sleep(time.Second) // the late sidecar, the point of the race
	sidecar := startSidecar(t, ns, name)
	if err := <-done; err != nil {
		t.Fatalf("the agent did not adopt the sidecar's device: %v", err)
	}
	pid, ok := SocketAnswers(name)
	if !ok || pid != sidecar.Process.Pid || started != 0 {
		t.Fatalf("socket served by pid %d (answers %v), sidecar is %d, agent started %d processes", pid, ok, sidecar.Process.Pid, started)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	// An agent restart: the same device, untouched.
	if _, err := EnsureLink(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	again, err := h.LinkByName(name)
	if err != nil || again.Attrs().Index != link.Attrs().Index {
		t.Fatalf("the agent restart replaced the link: %v", err)
	}
	if p, _ := SocketAnswers(name); p != sidecar.Process.Pid {
		t.Fatalf("socket now served by %d, want the sidecar %d", p, sidecar.Process.Pid)
	}
}

// TestSlowSocketKeepsTheTUN: a TUN whose socket is held by a process that
// does not answer in time (starting, loaded) is never deleted, in either
// layout; only a TUN nobody listens for is replaced.
func TestSlowSocketKeepsTheTUN(t *testing.T) {
	netns.SkipUnlessRoot(t)
	name := fmt.Sprintf("wgms%d", os.Getpid()%100000)
	ns := netns.NewForTest(t, "wgm-slow-"+name)
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	// The TUN ioctl works in the calling thread's namespace, not the
	// handle's: create it from inside the node.
	tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_DEFAULTS}
	if err := ns.Do(func() error { return netlink.LinkAdd(tun) }); err != nil {
		t.Fatal(err)
	}
	// A socket that accepts and never answers.
	if err := os.MkdirAll(SocketDir, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(SocketPath(name))
	l, err := net.Listen("unix", SocketPath(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); _ = os.Remove(SocketPath(name)) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	before, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	started := 0
	for _, external := range []bool{false, true} {
		o := LinkOptions{Name: name, Mode: ModeUserspace, Netlink: h, External: external, Wait: 500 * time.Millisecond, Log: testr.New(t),
			StartUserspace: func(context.Context, string) error { started++; return errors.New("must not start") }}
		if _, err := EnsureLink(context.Background(), o); err == nil {
			t.Fatalf("external=%v: a silent socket counted as working", external)
		}
		after, err := h.LinkByName(name)
		if err != nil || after.Attrs().Index != before.Attrs().Index {
			t.Fatalf("external=%v: the TUN with a slow socket was deleted or replaced: %v", external, err)
		}
	}
	if started != 0 {
		t.Fatalf("a second userspace process was started %d times", started)
	}
	// Nobody listens any more: the dead TUN is replaced (agent-owned layout).
	l.Close()
	_ = os.Remove(SocketPath(name))
	o := LinkOptions{Name: name, Mode: ModeUserspace, Netlink: h, Wait: 10 * time.Second, Log: testr.New(t),
		StartUserspace: func(context.Context, string) error { startSidecar(t, ns, name); return nil }}
	if _, err := EnsureLink(context.Background(), o); err != nil {
		t.Fatalf("replacing a dead TUN: %v", err)
	}
}
