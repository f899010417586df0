package wireguard

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wgmode"
)

// TestAutoPicksKernelWhenPresent: --wireguard-mode=auto makes a kernel
// WireGuard link where the kernel has WireGuard (make test-kernel runs this in
// a VM whose kernel has it) and starts userspace WireGuard where it has not (the
// host); a restarted agent keeps the link it finds. --wireguard-mode=kernel on
// a kernel without WireGuard fails, naming the flag.
func TestAutoPicksKernelWhenPresent(t *testing.T) {
	netns.SkipUnlessRoot(t)
	name := fmt.Sprintf("wgma%d", os.Getpid()%100000)
	ns := netns.NewForTest(t, "wgm-auto-"+name)
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	kernel := wgmode.KernelAvailable()
	want, wantType := ModeUserspace, "tuntap"
	if kernel {
		want, wantType = ModeKernel, "wireguard"
	}
	started := 0
	o := LinkOptions{Name: name, Mode: ModeAuto, Netlink: h, Wait: 20 * time.Second, Log: testr.New(t),
		StartUserspace: func(context.Context, string) error { started++; startSidecar(t, ns, name); return nil }}
	if !kernel {
		k := o
		k.Mode = ModeKernel
		if _, err := EnsureLink(context.Background(), k); err == nil || !strings.Contains(err.Error(), "--wireguard-mode=kernel") {
			t.Fatalf("kernel mode without kernel WireGuard: %v, want an error naming --wireguard-mode=kernel", err)
		}
	}
	mode, err := EnsureLink(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if mode != want || link.Type() != wantType || (started > 0) == kernel {
		t.Fatalf("auto with kernel WireGuard %v: mode %s, link type %s, %d userspace processes started; want %s, %s",
			kernel, mode, link.Type(), started, want, wantType)
	}
	t.Logf("kernel WireGuard available: %v; auto chose %s", kernel, mode)
	// The agent restarts: the same link, nothing started.
	if mode, err = EnsureLink(context.Background(), o); err != nil || mode != want {
		t.Fatalf("after a restart: %s %v", mode, err)
	}
	again, err := h.LinkByName(name)
	if err != nil || again.Attrs().Index != link.Attrs().Index || started > 1 {
		t.Fatalf("a restart replaced the link or started another process (%d): %v", started, err)
	}
	if kernel {
		if err := DeleteLink(h, name); err != nil {
			t.Fatal(err)
		}
	}
}
