package vm

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeModules(t *testing.T, dep, builtin string) *Modules {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(builtin), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := ReadModules(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOrder: dependencies load first, each module once, in modprobe's order (the listed
// dependencies last to first); built-in modules are skipped; "-" and "_" are one name.
func TestOrder(t *testing.T) {
	m := writeModules(t, `kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/9p/9pnet.ko:
kernel/fs/netfs/netfs.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/net/wireguard/wireguard.ko: kernel/net/ipv4/udp_tunnel.ko
kernel/net/ipv4/udp_tunnel.ko:
`, "kernel/net/packet/af_packet.ko\n")
	got, err := m.Order("9pnet-virtio", "9p", "af_packet", "9p")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko", "kernel/net/9p/9pnet.ko",
		"kernel/net/9p/9pnet_virtio.ko", "kernel/fs/netfs/netfs.ko", "kernel/fs/9p/9p.ko"}
	if !slices.Equal(got, want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
	if _, err := m.Order("wireguard", "nonexistent"); err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Fatalf("unknown module: %v", err)
	}
}
