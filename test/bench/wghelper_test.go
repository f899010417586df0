package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/test/netns"
)

// Environment of the hand-configured userspace WireGuard helper: the test
// binary re-executed inside a namespace runs one wireguard-go device.
const (
	helperEnv     = "WGM_BENCH_WG_HELPER" // interface name
	helperMTUEnv  = "WGM_BENCH_WG_MTU"
	helperConfEnv = "WGM_BENCH_WG_UAPI" // UAPI "set" text
)

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		if err := runWireGuardHelper(name); err != nil {
			fmt.Fprintln(os.Stderr, "wireguard helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runWireGuardHelper creates the TUN device, configures it through UAPI,
// prints "ready" and runs until stdin closes.
func runWireGuardHelper(name string) error {
	mtu := 1420
	if v := os.Getenv(helperMTUEnv); v != "" {
		if _, err := fmt.Sscan(v, &mtu); err != nil {
			return fmt.Errorf("%s=%q: %w", helperMTUEnv, v, err)
		}
	}
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return fmt.Errorf("create TUN %s: %w", name, err)
	}
	dev := device.NewDevice(t, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, name+": "))
	defer dev.Close()
	if err := dev.IpcSet(os.Getenv(helperConfEnv)); err != nil {
		return fmt.Errorf("configure %s: %w", name, err)
	}
	if err := dev.Up(); err != nil {
		return fmt.Errorf("up %s: %w", name, err)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// startWireGuard runs the helper in ns and returns when the device is up.
func startWireGuard(tb testing.TB, ns *netns.NS, name string, mtu int, uapi string) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := ns.Command(context.Background(), exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+name, fmt.Sprintf("%s=%d", helperMTUEnv, mtu), helperConfEnv+"="+uapi)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		tb.Fatalf("wireguard helper in %s: %q %v %s", ns, line, err, stderr.String())
	}
}
