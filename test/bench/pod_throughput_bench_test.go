package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
	"github.com/wgmesh/wgmesh/test/wgmode"
)

// podCommander runs argv inside a pod's network namespace (the node
// runtime's /run/netns/wgm-pod-<uid>, in the node's mount namespace).
func podCommander(n *cluster.Node, pod *corev1.Pod) commander {
	return func(ctx context.Context, argv ...string) *exec.Cmd {
		return n.Command(ctx, append([]string{"nsenter", "--net=/run/netns/wgm-pod-" + string(pod.UID)}, argv...)...)
	}
}

// BenchmarkPodThroughput measures, in one run and between the same two node
// namespaces of a local cluster (wgm-node-1 and wgm-node-2, underlay MTU
// 1500 or WGM_BENCH_UNDERLAY_MTU): TCP throughput (iperf3) over the plain veth underlay, over a
// hand-configured WireGuard tunnel, and pod to pod through wgmesh. Userspace
// WireGuard, or kernel WireGuard in a kernel-mode run (test/wgmode) in make
// test-kernel's VM, where the figures show shape only: the CPU is emulated.
func BenchmarkPodThroughput(b *testing.B) {
	needRoot(b)
	bin := os.Getenv("WGMESH_BIN_DIR")
	if os.Getenv("KUBEBUILDER_ASSETS") == "" || bin == "" {
		skip.Unless(b, "pod throughput: needs KUBEBUILDER_ASSETS and WGMESH_BIN_DIR (make bench sets them)")
	}
	if _, err := os.Stat(filepath.Join(bin, "wgmesh-agent")); err != nil {
		skip.Unless(b, "pod throughput: wgmesh-agent not built in WGMESH_BIN_DIR (make build): "+err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mode := wgmode.Userspace
	if wgmode.Mode(b) == wgmode.Kernel {
		mode = "auto" // which must choose the module
	}
	// WGM_BENCH_UNDERLAY_MTU: the underlay's MTU (default 1500); the tunnels get 80 less.
	underlayMTU := 1500
	if v := os.Getenv("WGM_BENCH_UNDERLAY_MTU"); v != "" {
		if _, err := fmt.Sscan(v, &underlayMTU); err != nil {
			b.Fatalf("WGM_BENCH_UNDERLAY_MTU=%q: %v", v, err)
		}
	}
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 2, WireGuardMode: mode, UnderlayMTU: underlayMTU})
	if err != nil {
		b.Fatalf("cluster: %v", err)
	}
	b.Cleanup(func() { _ = c.Stop() })
	n1, n2 := c.Nodes[0], c.Nodes[1]

	var pods [2]*corev1.Pod
	for i, n := range []*cluster.Node{n1, n2} {
		name := fmt.Sprintf("iperf-%d", i+1)
		if _, err := c.CreatePod(ctx, n, name, 8080); err != nil {
			b.Fatal(err)
		}
		if pods[i], err = c.WaitPodReady(ctx, "default", name, 90*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	// The mesh is up once one pod reaches the other.
	wait.For(b, 60*time.Second, "pod "+pods[0].Name+" to reach "+pods[1].Name, func() error {
		_, err := c.PodDial(ctx, pods[0], "http", pods[1].Status.PodIP, 8080, "hostname")
		return err
	})
	if mode == "auto" {
		h, err := n1.NetNS.Netlink()
		must(b, err)
		l, err := h.LinkByName("wgmesh0")
		h.Close()
		if err != nil || l.Type() != "wireguard" {
			b.Fatalf("--wireguard-mode=auto made no kernel WireGuard link on %s: %v", n1.Name, err)
		}
	}
	handWireGuard(b, n1.NetNS, n2.NetNS, n1.UnderlayIP, n2.UnderlayIP, underlayMTU-80)

	b.ResetTimer()
	veth := iperfTCP(b, n2.Command, n1.Command, n2.UnderlayIP, 5201)
	hand := iperfTCP(b, n2.Command, n1.Command, handTunnelB, 5202)
	mesh := iperfTCP(b, podCommander(n2, pods[1]), podCommander(n1, pods[0]), pods[1].Status.PodIP, 5203)
	b.StopTimer()

	b.ReportMetric(veth/1e6, "veth-Mbit/s")
	b.ReportMetric(hand/1e6, "handwg-Mbit/s")
	b.ReportMetric(mesh/1e6, "wgmesh-pod-Mbit/s")
	b.ReportMetric(mesh/hand, "wgmesh/handwg")
	b.ReportMetric(mesh/veth, "wgmesh/veth")
	fmt.Printf("\nTCP throughput %s -> %s (iperf3, %ds each, same run, underlay MTU %d):\n", n1.Name, n2.Name, iperfSeconds, underlayMTU)
	fmt.Printf("  plain veth underlay              %10s\n", mbit(veth))
	fmt.Printf("  hand-configured %-16s %10s  (%.2f x veth)\n", wireGuardLabel(b), mbit(hand), hand/veth)
	fmt.Printf("  wgmesh pod to pod                %10s  (%.2f x veth, %.2f x hand WG)\n\n", mbit(mesh), mesh/veth, mesh/hand)
}
