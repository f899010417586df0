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
	write(t, root, "net.ipv6.conf.eth0.accept_ra", "1")
	res, err := Ensure(root, append(Required(Options{IPv6: true, IPv6Uplinks: []string{"eth0"}}), ForLink("wgmesh0")...))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"net.ipv4.ip_forward":             "1", // changed
		"net.ipv6.conf.all.forwarding":    "1", // already
		"net.ipv4.conf.all.rp_filter":     "2", // strict -> loose
		"net.ipv4.conf.wgmesh0.rp_filter": "0", // off stays off
		"net.ipv6.conf.eth0.accept_ra":    "2", // RAs kept with forwarding on
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
	if changed != 3 {
		t.Errorf("changed %d settings, want 3: %+v", changed, res)
	}
	// Missing key: reported, others still applied.
	res, err = Ensure(root, []Setting{{Key: "net.ipv4.nope", Value: "1"}, {Key: "net.ipv4.ip_forward", Value: "1"}})
	if err == nil || !strings.Contains(err.Error(), "net.ipv4.nope") || res[1].Err != nil {
		t.Errorf("missing key: err=%v res=%+v", err, res)
	}
}

// TestRequiredWithoutIPv6: a node without IPv6 pod CIDRs (or a host booted
// with IPv6 disabled, where /proc/sys/net/ipv6 does not exist) gets no IPv6
// setting, so nothing fails.
func TestRequiredWithoutIPv6(t *testing.T) {
	root := t.TempDir()
	write(t, root, "net.ipv4.ip_forward", "0")
	write(t, root, "net.ipv4.conf.all.rp_filter", "0")
	write(t, root, "net.ipv4.conf.wgmesh0.rp_filter", "0")
	res, err := Ensure(root, append(Required(Options{IPv6Uplinks: []string{"eth0"}}), ForLink("wgmesh0")...))
	if err != nil {
		t.Fatalf("IPv4-only node on an IPv6-less host: %v", err)
	}
	for _, r := range res {
		if strings.HasPrefix(r.Key, "net.ipv6.") {
			t.Errorf("IPv6 setting %s touched on an IPv4-only node", r.Key)
		}
	}
	if read(t, root, "net.ipv4.ip_forward") != "1" {
		t.Error("ip_forward not set")
	}
}

// TestRequiredWithoutLink: the host-wide settings never name the tunnel, so
// a node's first reconcile (the link not created yet) does not fail on them.
func TestRequiredWithoutLink(t *testing.T) {
	root := t.TempDir()
	write(t, root, "net.ipv4.ip_forward", "0")
	write(t, root, "net.ipv4.conf.all.rp_filter", "1")
	if _, err := Ensure(root, Required(Options{})); err != nil {
		t.Fatalf("host-wide settings before the link exists: %v", err)
	}
	if _, err := Ensure(root, ForLink("wgmesh0")); err == nil || !strings.Contains(err.Error(), "net.ipv4.conf.wgmesh0.rp_filter") {
		t.Errorf("link setting without the link: err = %v, want one naming net.ipv4.conf.wgmesh0.rp_filter", err)
	}
}
