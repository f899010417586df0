package cniinstall

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type recorded struct{ typ, reason, msg string }

func newTestManager(t *testing.T) (*Manager, string, *[]recorded) {
	t.Helper()
	root := t.TempDir()
	src := filepath.Join(root, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range StandardPlugins {
		writeFile(t, filepath.Join(src, p), "#!/bin/sh\necho "+p+"\n", 0o755)
	}
	var events []recorded
	m := New(Options{
		ConfDir:      filepath.Join(root, "etc/cni/net.d"),
		BinDir:       filepath.Join(root, "opt/cni/bin"),
		BinSource:    src,
		PluginRecord: filepath.Join(root, "var/lib/wgmesh/cni-plugins"),
		LookPath:     func(string) (string, error) { return "", errors.New("no nft") },
		Log:          logr.Discard(),
		Events:       func(typ, reason, msg string) { events = append(events, recorded{typ, reason, msg}) },
	})
	return m, root, &events
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func loadBridge(t *testing.T, path string) (mtu int, subnets []string) {
	t.Helper()
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatalf("libcni cannot load %s: %v", path, err)
	}
	var br struct {
		MTU  int `json:"mtu"`
		IPAM struct {
			Ranges [][]struct {
				Subnet string `json:"subnet"`
			} `json:"ranges"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(list.Plugins[1].Bytes, &br); err != nil {
		t.Fatal(err)
	}
	for _, rs := range br.IPAM.Ranges {
		subnets = append(subnets, rs[0].Subnet)
	}
	return br.MTU, subnets
}

func TestApplyLifecycle(t *testing.T) {
	ctx := context.Background()
	m, root, events := newTestManager(t)
	confDir := filepath.Join(root, "etc/cni/net.d")
	// Files that belong to others must survive everything below.
	others := map[string]string{
		"05-other.conflist":      `{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}`,
		"99-loopback.conf":       `{"cniVersion":"1.0.0","name":"lo","type":"loopback"}`,
		"notes.txt":              "keep me",
		"sub/10-wgmesh.conflist": "not ours",
	}
	for name, c := range others {
		writeFile(t, filepath.Join(confDir, name), c, 0o600)
	}
	checkOthers := func() {
		t.Helper()
		for name, c := range others {
			b, err := os.ReadFile(filepath.Join(confDir, name))
			if err != nil || string(b) != c {
				t.Errorf("%s was touched: %q, %v", name, b, err)
			}
		}
	}

	// No podCIDRs: no conflist.
	if err := m.Apply(ctx, State{MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.ConfigPath()); !os.IsNotExist(err) {
		t.Fatalf("conflist exists before the node has podCIDRs: %v", err)
	}

	// podCIDRs arrive.
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(m.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if mtu, subnets := loadBridge(t, m.ConfigPath()); mtu != 1420 || strings.Join(subnets, ",") != "198.19.1.0/24" {
		t.Errorf("mtu %d subnets %v", mtu, subnets)
	}
	if got := testutil.ToFloat64(m.opts.Metrics.ConfigWrites); got != 1 {
		t.Errorf("writes = %v, want 1", got)
	}

	// Same state: nothing written (same inode, same counter).
	ino := inode(t, m.ConfigPath())
	for range 3 {
		if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420}); err != nil {
			t.Fatal(err)
		}
	}
	if inode(t, m.ConfigPath()) != ino || testutil.ToFloat64(m.opts.Metrics.ConfigWrites) != 1 {
		t.Error("unchanged state rewrote the conflist")
	}

	// MTU change, then dual-stack: rewritten.
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1320}); err != nil {
		t.Fatal(err)
	}
	if mtu, _ := loadBridge(t, m.ConfigPath()); mtu != 1320 {
		t.Errorf("mtu %d after change, want 1320", mtu)
	}
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24", "2001:db8:100:1::/64"}, MTU: 1320}); err != nil {
		t.Fatal(err)
	}
	if _, subnets := loadBridge(t, m.ConfigPath()); strings.Join(subnets, ",") != "198.19.1.0/24,2001:db8:100:1::/64" {
		t.Errorf("subnets %v after podCIDR change", subnets)
	}
	if got := testutil.ToFloat64(m.opts.Metrics.ConfigWrites); got != 3 {
		t.Errorf("writes = %v, want 3", got)
	}

	// Drift: edited by hand, or mode changed: repaired.
	writeFile(t, m.ConfigPath(), "garbage", 0o644)
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24", "2001:db8:100:1::/64"}, MTU: 1320}); err != nil {
		t.Fatal(err)
	}
	loadBridge(t, m.ConfigPath())
	if err := os.Chmod(m.ConfigPath(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24", "2001:db8:100:1::/64"}, MTU: 1320}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(m.ConfigPath()); st.Mode().Perm() != 0o644 {
		t.Errorf("mode not repaired: %v", st.Mode().Perm())
	}

	// Stale temp file from a crash is removed; other dot files are not.
	writeFile(t, filepath.Join(confDir, tempPrefix+"10-wgmesh.conflist-123"), "partial", 0o600)
	writeFile(t, filepath.Join(confDir, ".hidden"), "keep", 0o600)
	others[".hidden"] = "keep"
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24", "2001:db8:100:1::/64"}, MTU: 1320}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(confDir, tempPrefix+"10-wgmesh.conflist-123")); !os.IsNotExist(err) {
		t.Error("stale temp file left")
	}

	// Invalid state: error, Warning event, existing file kept.
	before, _ := os.ReadFile(m.ConfigPath())
	err = m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 10})
	if err == nil || !strings.Contains(err.Error(), "mtu 10") {
		t.Fatalf("want an mtu error, got %v", err)
	}
	after, _ := os.ReadFile(m.ConfigPath())
	if string(before) != string(after) {
		t.Error("a failed render changed the file")
	}
	if last := (*events)[len(*events)-1]; last.reason != "CNIConfigInvalid" || last.typ != "Warning" {
		t.Errorf("last event %+v, want Warning CNIConfigInvalid", last)
	}

	// podCIDRs gone: only our file removed.
	if err := m.Apply(ctx, State{MTU: 1320}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.ConfigPath()); !os.IsNotExist(err) {
		t.Error("conflist kept although the node has no podCIDRs")
	}
	checkOthers()

	// Cleanup: idempotent, removes only ours.
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := m.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(m.ConfigPath()); !os.IsNotExist(err) {
		t.Error("cleanup left the conflist")
	}
	checkOthers()
	// The plugins it installed into an empty bin dir go too.
	if entries, err := os.ReadDir(filepath.Join(root, "opt/cni/bin")); err != nil || len(entries) != 0 {
		t.Errorf("cleanup left in the bin dir: %v %v", entries, err)
	}
	if got := testutil.ToFloat64(m.opts.Metrics.ConfigRemovals); got != 2 {
		t.Errorf("removals = %v, want 2", got)
	}
	entries, _ := os.ReadDir(confDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}

func TestPortMapBackendDetection(t *testing.T) {
	ctx := context.Background()
	m, _, _ := newTestManager(t)
	m.opts.LookPath = func(string) (string, error) { return "/usr/sbin/nft", nil }
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(m.ConfigPath())
	if !strings.Contains(string(b), `"backend": "nftables"`) {
		t.Errorf("want nftables backend when nft exists:\n%s", b)
	}
	m.opts.LookPath = func(string) (string, error) { return "", errors.New("not found") }
	if err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(m.ConfigPath())
	if !strings.Contains(string(b), `"backend": "iptables"`) {
		t.Errorf("want iptables backend without nft:\n%s", b)
	}
}

func TestPluginsInstalledBeforeConfig(t *testing.T) {
	ctx := context.Background()
	m, root, _ := newTestManager(t)
	if err := os.Remove(filepath.Join(root, "src", "portmap")); err != nil {
		t.Fatal(err)
	}
	err := m.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420})
	if err == nil || !strings.Contains(err.Error(), `"portmap"`) || !strings.Contains(err.Error(), "--cni-bin-source") {
		t.Fatalf("want an error naming the plugin and the flag, got %v", err)
	}
	if _, err := os.Stat(m.ConfigPath()); !os.IsNotExist(err) {
		t.Error("conflist written although a plugin is missing")
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	ino, err := fileInode(path)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestConflistWaitsForTheGuard: no conflist (and so no pod network) exists
// before the leak guard is in the kernel, also when plugins could be
// installed; once the guard is there, the next Apply writes it; when the
// guard goes again, the conflist on disk stays (pods keep their network; the
// wgmesh-guard plugin holds new ones back) and Apply reports the error.
func TestConflistWaitsForTheGuard(t *testing.T) {
	guardErr := errors.New("nftables table ip wgmesh has no chain guard-forward")
	m, root, _ := newTestManager(t)
	m.opts.GuardReady = func() error { return guardErr }
	conf := filepath.Join(root, "etc/cni/net.d", "10-wgmesh.conflist")
	st := State{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420}
	err := m.Apply(context.Background(), st)
	if !errors.Is(err, guardErr) || !strings.Contains(err.Error(), "leak guard is not in place") {
		t.Fatalf("Apply without the guard: %v, want the guard's error", err)
	}
	if _, err := os.Stat(conf); !os.IsNotExist(err) {
		t.Fatalf("a conflist exists before the leak guard: %v", err)
	}
	guardErr = nil
	m.opts.GuardReady = func() error { return nil }
	if err := m.Apply(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(conf); err != nil {
		t.Fatalf("no conflist once the guard is in place: %v", err)
	}
	m.opts.GuardReady = func() error { return errors.New("guard gone") }
	if err := m.Apply(context.Background(), st); err == nil {
		t.Error("Apply with the guard gone reports nothing")
	}
	if _, err := os.Stat(conf); err != nil {
		t.Errorf("the conflist went with the guard (running pods need it; wgmesh-guard holds new ones): %v", err)
	}
}
