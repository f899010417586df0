package vm

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// readNewc lists a newc archive's entries: name -> (mode, data).
func readNewc(t *testing.T, b []byte) map[string]struct {
	mode uint64
	data string
} {
	t.Helper()
	out := map[string]struct {
		mode uint64
		data string
	}{}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		if len(b) < off+110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at %d", off)
		}
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		mode, size, nameSize := field(1), int(field(6)), int(field(11))
		name := string(b[off+110 : off+110+nameSize-1])
		data := align(off + 110 + nameSize)
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = struct {
			mode uint64
			data string
		}{mode, string(b[data : data+size])}
		off = align(data + size)
	}
}

// TestWriteInitramfs: the archive the kernel unpacks holds /init, the console device, and
// the boot modules with their dependencies and their load order.
func TestWriteInitramfs(t *testing.T) {
	m := writeModules(t, `kernel/fs/overlayfs/overlay.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko
kernel/net/9p/9pnet.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko
`, "")
	for _, p := range []string{"kernel/fs/overlayfs/overlay.ko", "kernel/drivers/virtio/virtio_pci.ko", "kernel/drivers/virtio/virtio.ko",
		"kernel/net/9p/9pnet_virtio.ko", "kernel/net/9p/9pnet.ko", "kernel/fs/9p/9p.ko"} {
		if err := os.MkdirAll(filepath.Join(m.Dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(m.Dir, p), []byte("module "+ModName(p)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	init := filepath.Join(t.TempDir(), "init")
	if err := os.WriteFile(init, []byte("#!init"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := WriteInitramfs(out, init, m); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ents := readNewc(t, b)
	if e := ents["init"]; e.data != "#!init" || e.mode&0o111 == 0 {
		t.Errorf("init = %+v", e)
	}
	if e, ok := ents["dev/console"]; !ok || e.mode&0o170000 != 0o020000 {
		t.Errorf("dev/console = %+v, want a character device", e)
	}
	if e := ents["modules/9pnet_virtio.ko"]; e.data != "module 9pnet_virtio" {
		t.Errorf("modules/9pnet_virtio.ko = %q", e.data)
	}
	want := "virtio.ko\nvirtio_pci.ko\n9pnet.ko\n9pnet_virtio.ko\n9p.ko\noverlay.ko\n"
	if got := ents["modules/order"].data; got != want {
		t.Errorf("modules/order = %q, want %q", got, want)
	}
}
