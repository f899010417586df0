package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr/testr"
	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/wgmesh/wgmesh/agent/cniinstall"
	"github.com/wgmesh/wgmesh/agent/egress"
	"github.com/wgmesh/wgmesh/agent/leakguard"
	"github.com/wgmesh/wgmesh/agent/servicenat"
	"github.com/wgmesh/wgmesh/agent/tunnel"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
)

// The node data plane components as cmd/wgmesh-agent plugs them in.
type testGuard struct {
	g  *leakguard.Guard
	fd int
}

func (testGuard) Name() string { return "leakguard" }
func (d testGuard) Apply(ctx context.Context, st NodeState) error {
	return d.g.Apply(ctx, st.NodePodCIDRs, st.Event)
}
func (d testGuard) Cleanup(context.Context) error { return nft.DeleteTable(d.fd) }

type testEgress struct{ m *egress.Manager }

func (testEgress) Name() string { return "egress" }
func (d testEgress) Apply(ctx context.Context, st NodeState) error {
	return d.m.Apply(ctx, st.PodCIDRs)
}
func (testEgress) Cleanup(context.Context) error { return nil }

type testCNI struct{ m *cniinstall.Manager }

func (testCNI) Name() string { return "cni" }
func (d testCNI) Apply(ctx context.Context, st NodeState) error {
	return d.m.Apply(ctx, cniinstall.State{PodCIDRs: []string{st.PodCIDRs[0].String(), st.PodCIDRs[1].String()}, MTU: st.MTU})
}
func (d testCNI) Cleanup(ctx context.Context) error { return d.m.Cleanup(ctx) }

// TestCleanupLeavesNothing runs the agent's one cleanup (helm uninstall,
// --cleanup-on-exit) in a network namespace over the real components of a
// running node: the leak guard and egress masquerade, the service NAT (all
// in nftables table wgmesh, both families), the CNI conflist and plugins,
// the pod bridge. Afterwards table wgmesh is gone in both families, so are
// the conflist and the plugins the agent installed, the bridge and the
// Node's announcements; what is not wgmesh's stays.
func TestCleanupLeavesNothing(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-clean")
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	const link, bridge = "wgmclean0", "wgmcleanbr"
	cluster := []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:db8:100::/56")}
	services := []netip.Prefix{netip.MustParsePrefix("198.18.128.0/20"), netip.MustParsePrefix("2001:db8:200::/112")}
	st := NodeState{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("2001:db8:100:1::/64")}, MTU: 1420}

	root := t.TempDir()
	src, confDir, binDir := filepath.Join(root, "src"), filepath.Join(root, "etc/cni/net.d"), filepath.Join(root, "opt/cni/bin")
	for _, dir := range []string{src, confDir, binDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range cniinstall.StandardPlugins {
		if err := os.WriteFile(filepath.Join(src, p), []byte("#!/bin/sh\necho "+p+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Not wgmesh's: a plugin the node had and another network's config.
	for path, content := range map[string]string{filepath.Join(binDir, "macvlan"): "theirs", filepath.Join(confDir, "05-other.conflist"): "{}"} {
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dataplanes := []NodeDataplane{
		testGuard{leakguard.New(leakguard.Options{ClusterCIDRs: cluster, ServiceCIDRs: services, TunnelIf: link, BridgeIf: bridge},
			&nft.Kernel{Part: leakguard.Part, NetNSFd: fd}, testr.New(t), nil), fd},
		testEgress{egress.NewManager(egress.ManagerOptions{ClusterCIDRs: cluster, ServiceCIDRs: services, TunnelIf: link,
			NFT: &nft.Kernel{Part: egress.Part, NetNSFd: fd}, ProcSys: t.TempDir(), Log: testr.New(t)})},
		testCNI{cniinstall.New(cniinstall.Options{ConfDir: confDir, BinDir: binDir, BinSource: src, PluginRecord: filepath.Join(root, "var/lib/wgmesh/cni-plugins"),
			LookPath: func(string) (string, error) { return "", os.ErrNotExist }, Log: testr.New(t)})},
	}
	for _, d := range dataplanes {
		if err := d.Apply(ctx, st); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
	}
	snat := &nft.Kernel{Part: servicenat.Part, NetNSFd: fd}
	for _, fam := range nft.Families {
		if err := snat.EnsureSkeleton(fam); err != nil {
			t.Fatal(err)
		}
	}
	if err := netns.Bridge(ns, bridge, 1420); err != nil {
		t.Fatal(err)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	wgmeshTables := func() []string {
		t.Helper()
		tables, err := conn.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tb := range tables {
			if tb.Name == "wgmesh" {
				out = append(out, map[nftables.TableFamily]string{nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6"}[tb.Family])
			}
		}
		return out
	}
	if got := wgmeshTables(); len(got) != 2 {
		t.Fatalf("before the cleanup, table wgmesh exists in %v, want ip and ip6", got)
	}

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wgm-clean-1", Annotations: map[string]string{
		wgv1.AnnotationPublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", wgv1.AnnotationEndpoint: "198.18.0.11:51820", "other": "keep"}}}
	c := fake.NewClientBuilder().WithScheme(Scheme()).WithObjects(node).Build()
	a := &Agent{
		o: Options{NodeName: node.Name, LinkName: link, BridgeName: bridge, Dataplanes: dataplanes,
			ServiceProxy: servicenat.New(servicenat.Options{NodeName: node.Name, ClusterCIDRs: cluster, ServiceCIDRs: services, TunnelIf: link,
				NetNSFd: fd, Log: testr.New(t), Registerer: prometheus.NewRegistry()})},
		log: testr.New(t), client: c,
		kernel: tunnel.New(tunnel.Options{LinkName: link, BridgeName: bridge, Netlink: h, SkipSysctl: true, Log: testr.New(t)}),
	}
	if err := a.cleanup(); err != nil {
		t.Fatalf("cleanup: %v", err)
	}

	if got := wgmeshTables(); len(got) != 0 {
		t.Errorf("after the cleanup, table wgmesh still exists in %v", got)
	}
	entries, _ := os.ReadDir(binDir)
	if len(entries) != 1 || entries[0].Name() != "macvlan" {
		t.Errorf("after the cleanup, %s holds %v, want only the node's own macvlan", binDir, entries)
	}
	entries, _ = os.ReadDir(confDir)
	if len(entries) != 1 || entries[0].Name() != "05-other.conflist" {
		t.Errorf("after the cleanup, %s holds %v, want only the other network's config", confDir, entries)
	}
	if _, err := h.LinkByName(bridge); err == nil {
		t.Errorf("after the cleanup, bridge %s exists", bridge)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
		t.Fatal(err)
	}
	if len(node.Annotations) != 1 || node.Annotations["other"] != "keep" {
		t.Errorf("after the cleanup, Node annotations %v, want only other=keep", node.Annotations)
	}
}
