package cluster

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/noderuntime"
)

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func TestOptionsDefaultsAndErrors(t *testing.T) {
	o := Options{Assets: "/x"}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if o.Nodes != 3 || o.WireGuardMode != "userspace" || o.UnderlayMTU != 1500 {
		t.Fatalf("defaults = %+v", o)
	}
	for _, bad := range []Options{
		{Assets: "/x", Nodes: 2, NATNodes: 3},
		{Assets: "/x", WireGuardMode: "fast"},
		{Assets: "/x", UnderlayMTU: 100},
	} {
		if err := bad.defaults(); err == nil {
			t.Errorf("options %+v accepted", bad)
		}
	}
	if v4, v6 := nodeAddress(true, 1); v4 != "198.18.1.12" || v6 != "2001:db8:1::12" {
		t.Fatalf("nodeAddress(natted, 1) = %s %s", v4, v6)
	}
}

// TestUnderlayNATAndTeardown checks the harness itself, with no product binaries: nodes
// register through the underlay (and through the NAT), the NAT hides the second cloud, and
// Stop leaves nothing with the prefix.
func TestUnderlayNATAndTeardown(t *testing.T) {
	netns.SkipUnlessControlPlane(t)
	for _, dual := range []bool{false, true} {
		t.Run(fmt.Sprintf("dualstack=%v", dual), func(t *testing.T) {
			ctx := context.Background()
			c, err := Start(ctx, Options{Nodes: 3, NATNodes: 1, DualStack: dual, NoAgents: true, NoOperator: true, UnderlayMTU: 1400, Log: testWriter{t}})
			if err != nil {
				t.Fatal(err)
			}
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					c.Stop()
				}
			})
			checkUnderlay(t, ctx, c)
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			stopped = true
			lo, err := Leftovers()
			if err != nil {
				t.Fatal(err)
			}
			if len(lo) > 0 {
				t.Fatalf("left behind after Stop: %v", lo)
			}
			if _, err := os.Stat(c.WorkDir); !os.IsNotExist(err) {
				t.Fatalf("work dir %s left behind: %v", c.WorkDir, err)
			}
			if owned := netns.Owned(os.Getpid()); len(owned) > 0 {
				t.Errorf("owner records of this process left behind: %v", owned)
			}
			if st, err := readState(); err == nil && st.OwnerPID == os.Getpid() {
				t.Errorf("%s still names this process", statePath())
			}
			// Without another cluster or run holding objects on the machine, not even
			// the helper directories stay.
			if _, err := readState(); os.IsNotExist(err) && len(netns.LiveOwners(os.Getpid())) == 0 {
				for _, p := range []string{netns.MountNSDir, netns.OwnersDir} {
					if _, err := os.Stat(p); !os.IsNotExist(err) {
						t.Errorf("%s left behind", p)
					}
				}
			}
		})
	}
}

func checkUnderlay(t *testing.T, ctx context.Context, c *Cluster) {
	t.Helper()
	want := map[string]string{"wgm-node-1": "198.18.0.11", "wgm-node-2": "198.18.0.12", "wgm-nat-1": "198.18.1.11"}
	for _, n := range c.Nodes {
		node := &corev1.Node{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ips = append(ips, a.Address)
			}
		}
		if len(ips) == 0 || ips[0] != want[n.Name] || (c.opts.DualStack && len(ips) != 2) {
			t.Errorf("Node %s InternalIPs = %v, want %s (+IPv6 in dual-stack)", n.Name, ips, want[n.Name])
		}
		if len(node.Spec.PodCIDRs) != 0 {
			t.Errorf("Node %s has podCIDRs %v without an operator: something else allocates", n.Name, node.Spec.PodCIDRs)
		}
		out, err := n.Exec(ctx, "cat", "/sys/class/net/eth0/mtu")
		if err != nil || strings.TrimSpace(string(out)) != "1400" {
			t.Errorf("node %s eth0 mtu = %q, %v; want 1400", n.Name, out, err)
		}
	}
	// An "internet" server sees cloud-1 nodes as themselves and NAT nodes as the router.
	wl, err := noderuntime.StartWorkload("internet", c.Internet, []int{8080})
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Stop()
	for _, n := range c.Nodes {
		wantSrc := n.UnderlayIP
		if n.NATted {
			wantSrc = RouterOutside
		}
		for _, proto := range []string{"tcp", "udp"} {
			got, err := n.Dial(ctx, proto, net.JoinHostPort(InternetIP, "8080"), "clientip")
			if err != nil {
				t.Fatal(err)
			}
			if host, _, _ := net.SplitHostPort(got); host != wantSrc {
				t.Errorf("%s from %s arrives from %s, want %s", proto, n.Name, got, wantSrc)
			}
		}
		if c.opts.DualStack {
			got, err := n.Dial(ctx, "tcp", net.JoinHostPort(InternetIP6, "8080"), "clientip")
			if err != nil {
				t.Fatal(err)
			}
			want6 := n.UnderlayIP6
			if n.NATted {
				want6 = RouterOutside6
			}
			if host, _, _ := net.SplitHostPort(got); host != want6 {
				t.Errorf("IPv6 from %s arrives from %s, want %s", n.Name, got, want6)
			}
		}
	}
	// The second cloud's addresses are not reachable from the first.
	nat := c.Node("wgm-nat-1")
	natWL, err := noderuntime.StartWorkload("nat-host", nat.NetNS, []int{8080})
	if err != nil {
		t.Fatal(err)
	}
	defer natWL.Stop()
	if got, err := c.Node("wgm-node-1").Dial(ctx, "tcp", net.JoinHostPort(nat.UnderlayIP, "8080"), "hostname"); err == nil {
		t.Errorf("wgm-node-1 reached the NAT node's private address directly: %q", got)
	}
	// The API server is reachable from the NAT node (it registered through the NAT; check
	// the TLS port once more from inside).
	err = nat.NetNS.Do(func() error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(APIServerIP, fmt.Sprint(APIServerPort)), 3*time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if err != nil {
		t.Errorf("API server from %s: %v", nat.Name, err)
	}
	// The controller manager's service-account controller is alive.
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "default"}, &corev1.ServiceAccount{}); err != nil {
		t.Errorf("service account kube-system/default: %v", err)
	}
}

// TestCrashedRunIsCleanedUp kills a process that runs a cluster with SIGKILL and checks that
// the next Start removes everything it left (processes, namespaces, links, mounts).
func TestCrashedRunIsCleanedUp(t *testing.T) {
	if os.Getenv("WGM_CRASH_CHILD") == "1" {
		c, err := Start(context.Background(), Options{Nodes: 2, NATNodes: 1, NoAgents: true, NoOperator: true})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Println("READY", c.WorkDir)
		time.Sleep(10 * time.Minute)
		return
	}
	netns.SkipUnlessControlPlane(t)
	child := exec.Command(os.Args[0], "-test.run=^TestCrashedRunIsCleanedUp$", "-test.count=1")
	child.Env = append(os.Environ(), "WGM_CRASH_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var workDir string
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "READY" {
			workDir = f[1]
			break
		} else if strings.HasPrefix(sc.Text(), "ERROR") {
			t.Fatal(sc.Text())
		}
	}
	if workDir == "" {
		child.Process.Kill()
		t.Fatal("child cluster never became ready")
	}
	st, err := readState()
	if err != nil {
		t.Fatal(err)
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	lo, _ := Leftovers()
	if len(lo) == 0 {
		t.Fatal("a SIGKILLed cluster left nothing behind: the test cannot tell whether cleanup works")
	}
	c, err := Start(context.Background(), Options{Nodes: 1, NoAgents: true, NoOperator: true, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Procs {
		if s, err := netns.ProcessStart(p.PID); err == nil && s == p.Start {
			t.Errorf("process %s (%d) of the crashed run survived the next Start", p.Name, p.PID)
		}
	}
	if _, err := os.Stat(workDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s of the crashed run survived: %v", workDir, err)
	}
	if _, err := os.Stat("/run/netns/wgm-nat-1"); !os.IsNotExist(err) {
		t.Errorf("namespace wgm-nat-1 of the crashed run survived")
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if lo, _ := Leftovers(); len(lo) > 0 {
		t.Fatalf("left behind: %v", lo)
	}
}
