package wireguard

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// envUserspace turns the test binary into the userspace WireGuard process.
const envUserspace = "WGMESH_TEST_USERSPACE_INTERFACE"

func TestMain(m *testing.M) {
	if name := os.Getenv(envUserspace); name != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := RunUserspace(ctx, name, logr.Discard()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchDevice starts a real userspace WireGuard process in a fresh network
// namespace and returns a client for it.
func benchDevice(b *testing.B) *Client {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root (network namespace + TUN)")
	}
	name := fmt.Sprintf("wgmbn%d", os.Getpid()%100000)
	ns, err := netns.New("wgm-bench-" + name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ns.Close() })
	cmd := ns.Command(context.Background(), os.Args[0])
	cmd.Env = append(os.Environ(), envUserspace+"="+name)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = os.Remove(SocketPath(name))
	})
	wait.For(b, 10*time.Second, "userspace WireGuard to answer on its socket", wait.True(func() bool {
		_, ok := SocketAnswers(name)
		return ok
	}))
	c, err := Open(name, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// config1000 is a 1,000-peer mesh: each peer a key, an endpoint and a /26.
func config1000(b *testing.B) Config {
	priv, _ := wgtypes.GeneratePrivateKey()
	cfg := Config{PrivateKey: priv, ListenPort: 51820}
	for i := range 1000 {
		k, _ := wgtypes.GeneratePrivateKey()
		cfg.Peers = append(cfg.Peers, Peer{
			PublicKey:  k.PublicKey(),
			Endpoint:   udp(fmt.Sprintf("198.18.%d.%d:51820", i/250, 1+i%250)),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i / 4), byte(i % 4 * 64)}), 26)},
		})
	}
	return cfg
}

// BenchmarkApply1000Peers measures, side by side on one userspace device:
// applying a 1,000-peer configuration to an empty device with per-peer diffs
// (Apply) against a full ReplacePeers, then one peer changing in the
// 1,000-peer mesh, and a reconcile where nothing changed. Ratios > 1 mean
// Apply is faster than ReplacePeers.
func BenchmarkApply1000Peers(b *testing.B) {
	c := benchDevice(b)
	cfg := config1000(b)
	empty := Config{PrivateKey: cfg.PrivateKey, ListenPort: cfg.ListenPort}
	var fullApply, fullReplace, oneApply, oneReplace, noop time.Duration
	for i := 0; b.Loop(); i++ {
		if err := c.Replace(empty); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := c.Apply(cfg); err != nil {
			b.Fatal(err)
		}
		fullApply += time.Since(t0)

		if err := c.Replace(empty); err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		if err := c.Replace(cfg); err != nil {
			b.Fatal(err)
		}
		fullReplace += time.Since(t0)

		// One peer's AllowedIPs change.
		p := &cfg.Peers[i%len(cfg.Peers)]
		old := p.AllowedIPs
		p.AllowedIPs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 200, byte(i % 250)}), 32)}
		t0 = time.Now()
		res, err := c.Apply(cfg)
		if err != nil || res.Updated != 1 || res.Added+res.Removed != 0 {
			b.Fatalf("one change: %+v %v", res, err)
		}
		oneApply += time.Since(t0)
		p.AllowedIPs = old
		t0 = time.Now()
		if err := c.Replace(cfg); err != nil {
			b.Fatal(err)
		}
		oneReplace += time.Since(t0)

		t0 = time.Now()
		if res, err := c.Apply(cfg); err != nil || res.Changed() {
			b.Fatalf("no-op apply: %+v %v", res, err)
		}
		noop += time.Since(t0)
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	b.ReportMetric(ms(fullApply), "apply-1000-ms")
	b.ReportMetric(ms(fullReplace), "replace-1000-ms")
	b.ReportMetric(float64(fullReplace)/float64(fullApply), "replace/apply-1000")
	b.ReportMetric(ms(oneApply), "apply-1change-ms")
	b.ReportMetric(ms(oneReplace), "replace-1change-ms")
	b.ReportMetric(float64(oneReplace)/float64(oneApply), "replace/apply-1change")
	b.ReportMetric(ms(noop), "noop-reconcile-ms")
	b.ReportMetric(0, "ns/op")
}
