package sysctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, root, key, val string) {
	t.Helper()
	p := filepath.Join(root, strings.ReplaceAll(key, ".", "/"))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(val+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, root, key string) string {
	data, err := os.ReadFile(filepath.Join(root, strings.ReplaceAll(key, ".", "/")))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func TestEnsure(t *testing.T) {
	root := t.TempDir()
	write(t, root, "net.ipv4.ip_forward", "0")
	write(t, root, "net.ipv6.conf.all.forwarding", "1")
	write(t, root, "net.ipv4.conf.all.rp_filter", "1")
	write(t, root, "net.ipv4.conf.wgmesh0.rp_filter", "0")
	res, err := Ensure(root, Required("wgmesh0"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"net.ipv4.ip_forward":             "1", // changed
		"net.ipv6.conf.all.forwarding":    "1", // already
		"net.ipv4.conf.all.rp_filter":     "2", // strict -> loose
		"net.ipv4.conf.wgmesh0.rp_filter": "0", // off stays off
	}
	for k, v := range want {
		if got := read(t, root, k); got != v {
			t.Errorf("%s = %s, want %s", k, got, v)
		}
	}
	changed := 0
	for _, r := range res {
		if r.Changed {
			changed++
		}
	}
	if changed != 2 {
		t.Errorf("changed %d settings, want 2: %+v", changed, res)
	}
	// Missing key: reported, others still applied.
	res, err = Ensure(root, []Setting{{Key: "net.ipv4.nope", Value: "1"}, {Key: "net.ipv4.ip_forward", Value: "1"}})
	if err == nil || !strings.Contains(err.Error(), "net.ipv4.nope") || res[1].Err != nil {
		t.Errorf("missing key: err=%v res=%+v", err, res)
	}
}
