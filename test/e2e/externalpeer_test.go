package e2e

// An external peer in one command (issue 11): `kubectl wgmesh add-peer`
// makes the MeshPeer and a wg-quick configuration, and a namespace playing
// the laptop joins the mesh with Debian's real wg-quick (userspace
// wireguard-go: this machine has no WireGuard module) and reaches pods and
// a ClusterIP Service. Then `kubectl wgmesh graph` draws it.

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

const (
	laptopName    = "wgm-laptop"
	laptopIP      = "198.18.0.240/24"
	laptopAddress = "198.18.200.1"
	laptopIf      = "wgml0"
)

// wgQuickEnv makes wg-quick use Debian's wireguard-go when `ip link add
// type wireguard` fails, as it does without the kernel module.
var wgQuickEnv = []string{"WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1"}

func needWireGuardTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"wg-quick", "wg", "wireguard-go", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip.Unless(t, tool+" is not on PATH (apt-get install wireguard-tools wireguard-go)")
		}
	}
}

func TestExternalPeer(t *testing.T) {
	needCluster(t)
	needWireGuardTools(t)
	plugin := filepath.Join(os.Getenv("WGMESH_BIN_DIR"), "kubectl-wgmesh")
	if _, err := os.Stat(plugin); err != nil {
		t.Fatalf("kubectl-wgmesh missing in WGMESH_BIN_DIR (make build): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := startCluster(ctx, t, cluster.Options{Nodes: 3, NATNodes: 1})
	setNATKeepalive(ctx, t, c)

	// A web pod on every node (the NAT node's too) behind a ClusterIP.
	var web []*corev1.Pod
	for _, n := range c.Nodes {
		if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: "ext-" + strings.TrimPrefix(n.Name, "wgm-") + "-p1", Node: n,
			Labels: map[string]string{"app": "ext"}, Ports: []int32{podPort}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		p, err := c.WaitPodReady(ctx, "default", "ext-"+strings.TrimPrefix(n.Name, "wgm-")+"-p1", readyTimeout)
		if err != nil {
			t.Fatal(err)
		}
		web = append(web, p)
	}
	if !meshConverged(ctx, t, c, web) {
		t.FailNow()
	}
	svc := createService(ctx, t, c, "ext", map[string]string{"app": "ext"}, nil)
	waitEndpoints(ctx, t, c, "ext", len(web))
	cip := getService(ctx, t, c, "ext").Spec.ClusterIP

	// The laptop: its own network and mount namespace on the underlay.
	dir := t.TempDir()
	laptop, err := netns.NewMachine(ctx, netns.MachineOptions{Name: laptopName, StateDir: filepath.Join(dir, "root"),
		Private: []string{"/var/run/wireguard", "/etc/wireguard"}})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	if err := c.AttachHost(laptop.NS, laptopName); err != nil {
		t.Fatal(err)
	}
	if err := netns.AddAddr(laptop.NS, "eth0", laptopIP); err != nil {
		t.Fatal(err)
	}

	// add-peer, as a user runs it.
	conf := filepath.Join(dir, laptopIf+".conf")
	kubectl := func(args ...string) (stdout, stderr string, err error) {
		cmd := exec.CommandContext(ctx, plugin, append(args, "--kubeconfig", c.Kubeconfig)...)
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	out, errOut, err := kubectl("add-peer", laptopName, "--allowed-ips", laptopAddress+"/32", "-o", conf)
	if err != nil {
		t.Fatalf("kubectl wgmesh add-peer: %v\n%s%s", err, out, errOut)
	}
	defer func() {
		_ = c.Client.Delete(context.WithoutCancel(ctx), &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: laptopName}})
	}()
	t.Logf("add-peer:\n%s%s", out, errOut)
	text, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s:\n%s", conf, text)
	if st, _ := os.Stat(conf); st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", conf, st.Mode().Perm())
	}
	var natNode, viaNode *cluster.Node
	for _, n := range c.Nodes {
		if n.NATted {
			natNode = n
		} else if viaNode == nil {
			viaNode = n
		}
	}
	for _, want := range []string{
		"Service CIDRs " + cluster.ServiceCIDR + " (from ServiceCIDR kubernetes), routed via node " + viaNode.Name,
		// The NAT node announces its inside address; its keepalive marks it.
		"# node " + natNode.Name + ": keeps a NAT mapping open (persistentKeepalive " + natKeepalive + "s)",
		"Address = " + laptopAddress + "/32",
		"PersistentKeepalive = 25",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("the configuration lacks %q", want)
		}
	}

	// Debian's wg-quick brings it up.
	up := laptop.Command(ctx, "wg-quick", "up", conf)
	up.Env = append(os.Environ(), wgQuickEnv...)
	if b, err := up.CombinedOutput(); err != nil {
		t.Fatalf("wg-quick up %s: %v\n%s", conf, err, b)
	} else {
		t.Logf("wg-quick up:\n%s", b)
	}
	defer func() {
		down := laptop.Command(context.WithoutCancel(ctx), "wg-quick", "down", conf)
		down.Env = append(os.Environ(), wgQuickEnv...)
		if b, err := down.CombinedOutput(); err != nil {
			t.Logf("wg-quick down: %v\n%s", err, b)
		}
	}()

	// Pods of every node outside the NAT: HTTP answered by that pod, which
	// sees the laptop's own address; ping too.
	for _, p := range web {
		if p.Spec.NodeName == natNode.Name {
			continue
		}
		ip := podIPs(p)[0]
		var got string
		if err := wait.Poll(ctx, meshTimeout, func() (err error) {
			got, err = nsRequest(ctx, laptop.NS, "http", net.JoinHostPort(ip, strconv.Itoa(podPort)), "hostname")
			return err
		}); err != nil {
			t.Errorf("laptop -> pod %s (%s on %s): %v", p.Name, ip, p.Spec.NodeName, err)
			continue
		}
		if got != p.Name {
			t.Errorf("laptop -> pod %s (%s): answered by %q", p.Name, ip, got)
		}
		if got, err := nsRequest(ctx, laptop.NS, "http", net.JoinHostPort(ip, strconv.Itoa(podPort)), "clientip"); err != nil || hostOf(got) != laptopAddress {
			t.Errorf("laptop -> pod %s: the pod saw %q (%v), want the laptop's %s", p.Name, got, err, laptopAddress)
		}
		if b, err := laptop.NS.Exec(ctx, "ping", "-c", "1", "-W", "2", ip); err != nil {
			t.Errorf("laptop: ping %s (pod %s): %v\n%s", ip, p.Name, err, b)
		}
	}

	// The ClusterIP through the via node: every backend answers, the NAT
	// node's included, and no request fails.
	seen := map[string]bool{}
	if err := wait.Poll(ctx, meshTimeout, func() error {
		_, err := nsRequest(ctx, laptop.NS, "http", net.JoinHostPort(cip, "80"), "hostname")
		return err
	}); err != nil {
		t.Fatalf("laptop -> ClusterIP %s:80 (service %s): %v\n%s", cip, svc.Name, err, cluster.Tail(viaNode.AgentLog(), 20))
	}
	failed := 0
	for i := 0; i < 40 && len(seen) < len(web); i++ {
		got, err := nsRequest(ctx, laptop.NS, "http", net.JoinHostPort(cip, "80"), "hostname")
		if err != nil {
			failed++
			t.Logf("laptop -> ClusterIP %s:80: %v", cip, err)
			continue
		}
		seen[got] = true
	}
	if failed > 0 || len(seen) < len(web) {
		t.Errorf("laptop -> ClusterIP %s:80: %d of the requests failed, answered by %v; want all %d backends", cip, failed, seen, len(web))
	}
	// wg talks to wireguard-go through the laptop's own /var/run/wireguard.
	if b, err := laptop.Command(ctx, "wg", "show", laptopIf).CombinedOutput(); err != nil {
		t.Errorf("wg show %s: %v\n%s", laptopIf, err, b)
	} else if !strings.Contains(string(b), "latest handshake") {
		t.Errorf("wg show %s: no handshake:\n%s", laptopIf, b)
	} else {
		t.Logf("wg show %s:\n%s", laptopIf, b)
	}

	// showconf with the key file prints the same configuration.
	out, errOut, err = kubectl("showconf", laptopName, "--private-key-file", conf)
	if err != nil || out != string(text) {
		t.Errorf("showconf: %v\n%s\n%s\nwant the add-peer file:\n%s", err, errOut, out, text)
	}

	// The picture: three nodes, the NAT one marked, the laptop external;
	// the local cluster has no agent pods, so --rtt says why it has none.
	svgPath := filepath.Join(dir, "mesh.svg")
	if _, err := exec.LookPath("dot"); err != nil {
		skip.Unless(t, "Graphviz's dot is not on PATH (apt-get install graphviz)")
	}
	if _, errOut, err := kubectl("graph", "--rtt", "-o", svgPath); err != nil {
		t.Errorf("graph -o %s: %v\n%s", svgPath, err, errOut)
	} else if !strings.Contains(errOut, "RTT unavailable: no running wgmesh agent pods") {
		t.Errorf("graph --rtt without agent pods says %q", errOut)
	}
	svg, _ := os.ReadFile(svgPath)
	dot, _, err := kubectl("graph")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"` + laptopName + `" [shape=ellipse`, `label="` + natNode.Name + `\n`, `3 nodes (1 behind NAT`, `keepalive ` + natKeepalive + `s: behind NAT?`} {
		if !strings.Contains(dot, want) {
			t.Errorf("graph DOT lacks %q:\n%s", want, dot)
		}
	}
	for _, n := range c.Nodes {
		// dot writes '-' in titles as &#45;.
		if !strings.Contains(string(svg), "<title>"+strings.ReplaceAll(n.Name, "-", "&#45;")+"</title>") {
			t.Errorf("the SVG has no node %s", n.Name)
		}
	}
	mp := &wgv1.MeshPeer{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: laptopName}, mp); err != nil || mp.Spec.NodeName != "" {
		t.Errorf("MeshPeer %s: %v %+v", laptopName, err, mp.Spec)
	}
}
