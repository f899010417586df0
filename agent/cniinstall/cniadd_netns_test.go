package cniinstall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/agent/leakguard"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
)

// loopbackConfList is what containerd's CRI plugin runs for every pod besides
// the network's own conflist.
const loopbackConfList = `{"cniVersion":"1.0.0","name":"cni-loopback","plugins":[{"type":"loopback"}]}`

func pluginSource(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root, network namespaces and the built CNI plugins; skipped with -short")
	}
	if os.Geteuid() != 0 {
		skip.Unless(t, "needs root to create network namespaces")
	}
	dir := os.Getenv("WGMESH_BIN_DIR")
	if dir == "" {
		skip.Unless(t, "WGMESH_BIN_DIR is unset: run `make cni-plugins` and set WGMESH_BIN_DIR=<repo>/bin (make test does)")
	}
	src := filepath.Join(dir, "cni")
	for _, p := range StandardPlugins {
		if _, err := os.Stat(filepath.Join(src, p)); err != nil {
			skip.Unless(t, fmt.Sprintf("CNI plugin %s missing in %s: run `make cni-plugins`", p, src))
		}
	}
	return src
}

type cniRig struct {
	node    *netns.NS
	mgr     *Manager
	cni     *libcni.CNIConfig
	dataDir string
}

func newRig(t *testing.T, nodeName string) *cniRig {
	root := t.TempDir()
	r := &cniRig{node: netns.NewForTest(t, nodeName), dataDir: filepath.Join(root, "networks")}
	r.mgr = New(Options{
		ConfDir: filepath.Join(root, "net.d"), BinDir: filepath.Join(root, "bin"), BinSource: pluginSource(t),
		IPAMDataDir: r.dataDir, Log: logr.Discard(),
	})
	r.cni = libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(root, "bin")}, filepath.Join(root, "cache"), nil)
	return r
}

// load is what a runtime does: find the network's conflist in the directory.
func (r *cniRig) load() (*libcni.NetworkConfigList, error) {
	return libcni.LoadNetworkConf(r.mgr.opts.ConfDir, "wgmesh")
}

// add runs loopback and the network's ADD in the node namespace, as containerd does.
func (r *cniRig) add(ctx context.Context, pod *netns.NS, id string, ports []map[string]any) (*types100.Result, error) {
	list, err := r.load()
	if err != nil {
		return nil, err
	}
	lo, err := libcni.ConfListFromBytes([]byte(loopbackConfList))
	if err != nil {
		return nil, err
	}
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"}
	if ports != nil {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	var res *types100.Result
	err = r.node.Do(func() error {
		if _, err := r.cni.AddNetworkList(ctx, lo, &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "lo"}); err != nil {
			return err
		}
		raw, err := r.cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(raw)
		return err
	})
	return res, err
}

func (r *cniRig) del(ctx context.Context, pod *netns.NS, id string) error {
	list, err := r.load()
	if err != nil {
		return err
	}
	return r.node.Do(func() error {
		return r.cni.DelNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"})
	})
}

func (r *cniRig) allocated(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(r.dataDir, "wgmesh"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// installGuard programs the agent's leak guard (agent/leakguard) in node, as
// the agent does before it writes the conflist.
func installGuard(t *testing.T, node *netns.NS) {
	t.Helper()
	f, err := os.Open(node.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	g := leakguard.New(leakguard.Options{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:db8:100::/56")}},
		&nft.Kernel{Part: leakguard.Part, NetNSFd: int(f.Fd())}, logr.Discard(), nil)
	if err := g.Apply(context.Background(), nil, nil); err != nil {
		t.Fatalf("leak guard: %v", err)
	}
}

func podLinks(t *testing.T, pod *netns.NS) []string {
	t.Helper()
	names, err := netns.LinkNames(pod)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestCNIAddWithRealPlugins: before the node has a podCIDR there is no
// config and ADD fails cleanly; with it, the real bridge/host-local/portmap
// plugins configure the pod with the mesh MTU; DEL frees the address.
func TestCNIAddWithRealPlugins(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "wgm-cni-node")
	pod := netns.NewForTest(t, "wgm-cni-pod")

	// No podCIDR yet: the runtime finds no network config; nothing is set up.
	if err := r.mgr.Apply(ctx, State{MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	_, err := r.add(ctx, pod, "c1", nil)
	var noConf libcni.NoConfigsFoundError
	if !errors.As(err, &noConf) {
		t.Fatalf("ADD before podCIDR: got %v, want libcni's 'no net configurations found'", err)
	}
	if links := podLinks(t, pod); strings.Join(links, ",") != "lo" {
		t.Errorf("pod has links %v after a refused ADD, want only lo", links)
	}
	if ips := r.allocated(t); len(ips) != 0 {
		t.Errorf("addresses allocated by a refused ADD: %v", ips)
	}

	// podCIDR arrives; the conflist is on disk (as after a reboot) but the
	// leak guard is not in nftables yet: the gate refuses, nothing is set up.
	if err := r.mgr.Apply(ctx, State{PodCIDRs: []string{"198.19.1.0/24", "2001:db8:100:1::/64"}, MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.add(ctx, pod, "c0", nil); err == nil || !strings.Contains(err.Error(), "the wgmesh leak guard is not installed yet") {
		t.Fatalf("ADD without the leak guard: %v, want the wgmesh-guard refusal", err)
	}
	if links := podLinks(t, pod); strings.Join(links, ",") != "lo" {
		t.Errorf("pod has links %v after the gate refused, want only lo", links)
	}
	if ips := r.allocated(t); len(ips) != 0 {
		t.Errorf("addresses allocated behind the gate: %v", ips)
	}
	installGuard(t, r.node)
	res, err := r.add(ctx, pod, "c1", []map[string]any{{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	var v4, v6 string
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() != nil {
			v4 = ip.Address.String()
			if ip.Gateway.String() != "198.19.1.1" {
				t.Errorf("IPv4 gateway %s, want 198.19.1.1", ip.Gateway)
			}
		} else {
			v6 = ip.Address.String()
		}
	}
	if !strings.HasPrefix(v4, "198.19.1.") || !strings.HasPrefix(v6, "2001:db8:100:1::") {
		t.Fatalf("pod addresses %q %q, want from the node's podCIDRs", v4, v6)
	}
	h, err := pod.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().MTU != 1420 {
		t.Errorf("pod eth0 MTU %d, want the mesh MTU 1420", eth0.Attrs().MTU)
	}
	routes, err := h.RouteList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	hasDefault := false
	for _, rt := range routes {
		if (rt.Dst == nil || rt.Dst.String() == "0.0.0.0/0") && rt.Gw.String() == "198.19.1.1" {
			hasDefault = true
		}
	}
	if !hasDefault {
		t.Errorf("pod has no default route via 198.19.1.1: %v", routes)
	}
	nh, err := r.node.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	br, err := nh.LinkByName("wgmesh-br0")
	if err != nil {
		t.Fatalf("bridge wgmesh-br0 missing in the node: %v", err)
	}
	if br.Attrs().MTU != 1420 {
		t.Errorf("bridge MTU %d, want 1420", br.Attrs().MTU)
	}
	if out, err := r.node.Exec(ctx, "nft", "list", "ruleset"); err == nil && !strings.Contains(string(out), "18080") {
		t.Errorf("portmap (nftables backend) did not program hostPort 18080:\n%s", out)
	}
	if ips := r.allocated(t); len(ips) != 2 {
		t.Errorf("allocated %v, want one IPv4 and one IPv6", ips)
	}

	// DEL frees the addresses.
	if err := r.del(ctx, pod, "c1"); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if ips := r.allocated(t); len(ips) != 0 {
		t.Errorf("addresses still allocated after DEL: %v", ips)
	}
}

// TestCNIAddBrokenConfigSurfacesPluginError: when the bridge plugin cannot do
// its job (here wgmesh-br0 exists but is not a bridge) ADD returns the
// plugin's own error, and the pod has no interface and no address.
func TestCNIAddBrokenConfigSurfacesPluginError(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "wgm-cni-node2")
	pod := netns.NewForTest(t, "wgm-cni-pod2")
	// A veth (this kernel has no dummy driver) squatting on the bridge's name.
	if err := netns.Veth(r.node, "wgmesh-br0", r.node, "squat", 0); err != nil {
		t.Fatal(err)
	}
	if err := r.mgr.Apply(ctx, State{PodCIDRs: []string{"198.19.2.0/24"}, MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	installGuard(t, r.node)
	_, err := r.add(ctx, pod, "c2", nil)
	if err == nil {
		t.Fatal("ADD succeeded with a non-bridge wgmesh-br0")
	}
	if !strings.Contains(err.Error(), "wgmesh-br0") {
		t.Errorf("error %q does not carry the bridge plugin's explanation", err)
	}
	t.Logf("bridge plugin error surfaced: %v", err)
	if links := podLinks(t, pod); strings.Join(links, ",") != "lo" {
		t.Errorf("pod half-configured: links %v", links)
	}
	if ips := r.allocated(t); len(ips) != 0 {
		t.Errorf("addresses leaked by a failed ADD: %v", ips)
	}
	// The conflist itself is well-formed: the failure is the plugin's, not ours.
	b, _ := os.ReadFile(r.mgr.ConfigPath())
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
}
