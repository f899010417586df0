package kmod

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const modulesDep = `kernel/net/802/stp.ko.xz: kernel/net/llc/llc.ko.xz
kernel/net/llc/llc.ko.xz:
kernel/net/bridge/bridge.ko.xz: kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz
kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz
kernel/drivers/net/wireguard/wireguard.ko: kernel/net/ipv4/udp_tunnel.ko
kernel/net/ipv4/udp_tunnel.ko:
`

func TestOrderDependenciesFirst(t *testing.T) {
	d, err := ParseDeps(strings.NewReader(modulesDep))
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Order("br-netfilter")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/net/llc/llc.ko.xz", "kernel/net/802/stp.ko.xz", "kernel/net/bridge/bridge.ko.xz", "kernel/net/bridge/br_netfilter.ko.xz"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	if _, err := d.Order("nf_nat"); err == nil || !strings.Contains(err.Error(), "nf_nat: not in modules.dep") {
		t.Fatalf("unknown module: err = %v", err)
	}
	if _, err := ParseDeps(strings.NewReader("no colon here\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad line: err = %v", err)
	}
}

// Load skips what /sys/module shows loaded, passes compressed files with the
// kernel-decompression flag, and loads the rest in dependency order.
func TestLoadSkipsLoadedAndFlagsCompressed(t *testing.T) {
	dir, sys := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(modulesDep), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"kernel/net/llc/llc.ko.xz", "kernel/net/802/stp.ko.xz", "kernel/net/bridge/bridge.ko.xz",
		"kernel/net/bridge/br_netfilter.ko.xz", "kernel/drivers/net/wireguard/wireguard.ko", "kernel/net/ipv4/udp_tunnel.ko"} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o644)
	}
	os.Mkdir(filepath.Join(sys, "llc"), 0o755) // already loaded
	var loaded []string
	l := Loader{Dir: dir, SysModule: sys, Init: func(f *os.File, compressed bool) error {
		rel, _ := filepath.Rel(dir, f.Name())
		if compressed != strings.HasSuffix(rel, ".xz") {
			t.Errorf("%s: compressed = %v", rel, compressed)
		}
		loaded = append(loaded, ModuleName(rel))
		return nil
	}}
	if err := l.Load("br_netfilter"); err != nil {
		t.Fatal(err)
	}
	if err := l.Load("wireguard"); err != nil {
		t.Fatal(err)
	}
	want := []string{"stp", "bridge", "br_netfilter", "udp_tunnel", "wireguard"}
	if !reflect.DeepEqual(loaded, want) {
		t.Fatalf("loaded %v, want %v", loaded, want)
	}
}
