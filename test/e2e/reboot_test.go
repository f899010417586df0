package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestLeakGuardFromBoot simulates a reboot of a node: its WireGuard process,
// links and whole nftables ruleset are gone while the CNI conflist and
// plugins stay on disk, and the node runtime (the kubelet) starts before the
// agent. A pod scheduled then must not get a network until the agent has put
// the leak guard back (the conflist's wgmesh-guard gate refuses it with a
// clear message); once it has, the pod works across the tunnel, and the
// underlay capture over the whole episode holds no clear-text pod packet.
func TestLeakGuardFromBoot(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := startCluster(ctx, t, cluster.Options{Nodes: 2})
	a, b := c.Nodes[0], c.Nodes[1]
	for _, n := range c.Nodes {
		checkNodeEvent(ctx, t, c, n.Name, "CNIConfigWritten")
	}
	target, err := c.CreatePod(ctx, b, "boot-target", podPort)
	if err != nil {
		t.Fatal(err)
	}
	if target, err = c.WaitPodReady(ctx, "default", target.Name, readyTimeout); err != nil {
		t.Fatal(err)
	}

	// Clear-text pod addresses on the underlay, from now on.
	capUnder, err := netns.StartCapture(ctx, c.Underlay, "any", "net "+cluster.PodCIDR)
	if err != nil {
		t.Fatal(err)
	}

	// "Reboot" node a: everything in the kernel goes, files stay.
	kernel, err := kernelLink(a)
	if err != nil {
		t.Fatal(err)
	}
	wgPID := 0
	if !kernel {
		wgPID = wireguardPID(t, a)
	}
	a.StopRuntime()
	if err := a.KillAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if wgPID != 0 {
		if err := syscall.Kill(wgPID, syscall.SIGKILL); err != nil {
			t.Fatalf("stopping userspace WireGuard (pid %d): %v", wgPID, err)
		}
	}
	for _, argv := range [][]string{
		{"ip", "link", "del", agent.DefaultLinkName}, {"ip", "link", "del", agent.DefaultBridgeName}, {"nft", "flush", "ruleset"},
	} {
		if out, err := a.Exec(ctx, argv...); err != nil && !strings.Contains(string(out), "Cannot find device") {
			t.Fatalf("%v: %v %s", argv, err, out)
		}
	}
	if out, err := a.Exec(ctx, "test", "-s", "/etc/cni/net.d/10-wgmesh.conflist"); err != nil {
		t.Fatalf("the conflist should survive the reboot: %v %s", err, out)
	}

	// The kubelet comes back first and gets a pod: the gate holds it back.
	if err := a.StartRuntime(ctx); err != nil {
		t.Fatal(err)
	}
	early, err := c.CreatePod(ctx, a, "boot-early", podPort)
	if err != nil {
		t.Fatal(err)
	}
	err = wait.Poll(ctx, readyTimeout, func() error {
		p := &corev1.Pod{}
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(early), p); err != nil {
			return err
		}
		if p.Status.PodIP != "" {
			return fmt.Errorf("pod %s got IP %s before the agent put the leak guard back", p.Name, p.Status.PodIP)
		}
		if p.Status.Reason != "FailedCreatePodSandBox" || !strings.Contains(p.Status.Message, "the wgmesh leak guard is not installed yet") {
			return fmt.Errorf("pod %s: %s %q, want Pending behind wgmesh-guard", p.Name, p.Status.Reason, p.Status.Message)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("before the agent: the pod is held back by wgmesh-guard")

	// The agent comes back: guard, then CNI; the pod starts and works.
	if err := a.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	if early, err = c.WaitPodReady(ctx, "default", early.Name, readyTimeout); err != nil {
		t.Fatal(err)
	}
	err = wait.Poll(ctx, readyTimeout, func() error {
		got, err := c.PodDial(ctx, early, "tcp", target.Status.PodIP, podPort, "hostname")
		if err != nil {
			return err
		}
		if got != target.Name {
			return fmt.Errorf("answer %q, want %q", got, target.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after the reboot the pod cannot reach %s over the tunnel: %v", target.Name, err)
	}

	pkts, err := capUnder.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) > 0 {
		for i, p := range pkts {
			if i == 10 {
				break
			}
			t.Errorf("clear-text pod packet on the underlay: %+v", p)
		}
		t.Fatalf("%d clear-text pod packets on the underlay across the reboot", len(pkts))
	}
	t.Logf("underlay across the reboot: 0 clear-text packets with a %s address", cluster.PodCIDR)
}
