package cniinstall

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestPluginInstaller(t *testing.T) {
	root := t.TempDir()
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "bin")
	for _, p := range StandardPlugins {
		writeFile(t, filepath.Join(src, p), "v1 "+p, 0o755)
	}
	writeFile(t, filepath.Join(dst, "other-plugin"), "someone else's", 0o700)
	inst := &PluginInstaller{SourceDir: src, BinDir: dst}

	got, err := inst.Ensure()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(StandardPlugins, ",") {
		t.Fatalf("installed %v, want all of %v", got, StandardPlugins)
	}
	for _, p := range StandardPlugins {
		st, err := os.Stat(filepath.Join(dst, p))
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", p, st, err)
		}
	}

	// Nothing to do the second time.
	ino := inode(t, filepath.Join(dst, "bridge"))
	if got, err := inst.Ensure(); err != nil || len(got) != 0 {
		t.Fatalf("second Ensure installed %v, %v", got, err)
	}
	if inode(t, filepath.Join(dst, "bridge")) != ino {
		t.Error("unchanged plugin replaced")
	}

	// A running binary keeps its old inode: open the old file, then upgrade.
	old, err := os.Open(filepath.Join(dst, "bridge"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	writeFile(t, filepath.Join(src, "bridge"), "v2 bridge", 0o755)
	// Same size, different content: must be detected by hash.
	writeFile(t, filepath.Join(dst, "portmap"), "v9 portmap", 0o755)
	// Wrong mode: reinstalled.
	if err := os.Chmod(filepath.Join(dst, "loopback"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = inst.Ensure()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "bridge,portmap,loopback" {
		t.Errorf("installed %v, want bridge,portmap,loopback", got)
	}
	oldContent, _ := io.ReadAll(old)
	if string(oldContent) != "v1 bridge" {
		t.Errorf("the old binary was modified in place: %q", oldContent)
	}
	for p, want := range map[string]string{"bridge": "v2 bridge", "portmap": "v1 portmap", "other-plugin": "someone else's"} {
		if b, _ := os.ReadFile(filepath.Join(dst, p)); string(b) != want {
			t.Errorf("%s = %q, want %q", p, b, want)
		}
	}
	entries, _ := os.ReadDir(dst)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}

// A reader polling the target while it is rewritten sees one whole version or
// the other, never a mix or a truncated file.
func TestWriteFileAtomicReaders(t *testing.T) {
	dir := t.TempDir()
	a := bytes.Repeat([]byte("a"), 1<<20)
	b := bytes.Repeat([]byte("b"), 1<<19)
	if err := writeFileAtomic(dir, "f", a, 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := os.ReadFile(filepath.Join(dir, "f"))
			if err != nil || (!bytes.Equal(got, a) && !bytes.Equal(got, b)) {
				bad = append(bad, "partial read")
				return
			}
		}
	}()
	for i := range 50 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if err := writeFileAtomic(dir, "f", data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatal(bad)
	}
}

// TestPluginRemoveOnlyWhatItCreated: Remove (helm uninstall) deletes the
// plugins the installer created, across agent restarts (the record lives in
// the state directory), and wgmesh-guard; a plugin the node had before
// wgmesh, one replaced since, and every other file stay.
func TestPluginRemoveOnlyWhatItCreated(t *testing.T) {
	root := t.TempDir()
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "bin")
	record := filepath.Join(root, "state", "cni-plugins")
	for _, p := range StandardPlugins {
		writeFile(t, filepath.Join(src, p), "v1 "+p, 0o755)
	}
	// The node's own bridge (a distribution package, older) and an
	// unrelated plugin were there before wgmesh.
	writeFile(t, filepath.Join(dst, "bridge"), "distro bridge", 0o755)
	writeFile(t, filepath.Join(dst, "other-plugin"), "someone else's", 0o755)

	first := &PluginInstaller{SourceDir: src, BinDir: dst, Record: record}
	if _, err := first.Ensure(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(record); string(b) != "host-local\nloopback\nportmap\nwgmesh-guard\n" {
		t.Errorf("record = %q, want the four plugins that were absent", b)
	}
	// An upgrade: the agent restarts with a newer image; everything is in
	// place or rewritten in place, and the record is unchanged.
	writeFile(t, filepath.Join(src, "portmap"), "v2 portmap", 0o755)
	second := &PluginInstaller{SourceDir: src, BinDir: dst, Record: record}
	if got, err := second.Ensure(); err != nil || strings.Join(got, ",") != "portmap" {
		t.Fatalf("after the restart Ensure installed %v (%v), want portmap", got, err)
	}
	if b, _ := os.ReadFile(record); string(b) != "host-local\nloopback\nportmap\nwgmesh-guard\n" {
		t.Errorf("record after the restart = %q", b)
	}
	// Someone replaced loopback since: it is theirs now.
	writeFile(t, filepath.Join(dst, "loopback"), "their loopback", 0o755)

	removed, err := second.Remove()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, ",") != "wgmesh-guard,host-local,portmap" {
		t.Errorf("removed %v, want wgmesh-guard,host-local,portmap", removed)
	}
	entries, _ := os.ReadDir(dst)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	// bridge was overwritten by the install (as before this change); it
	// stays because it was not wgmesh's to begin with.
	if strings.Join(left, ",") != "bridge,loopback,other-plugin" {
		t.Errorf("left in the bin dir: %v, want bridge,loopback,other-plugin", left)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "loopback")); string(b) != "their loopback" {
		t.Errorf("loopback = %q", b)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Errorf("record left after Remove: %v", err)
	}
	// Idempotent.
	if removed, err := second.Remove(); err != nil || len(removed) != 0 {
		t.Errorf("second Remove: %v %v", removed, err)
	}
}
