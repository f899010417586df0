package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/podnet"

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

// podBench is a two-node local cluster with one iperf pod on each node.
type podBench struct {
	c           *cluster.Cluster
	n1, n2      *cluster.Node
	pods        [2]*corev1.Pod
	underlayMTU int
}

// startPodBench starts the cluster of the pod benchmarks (underlay MTU 1500 or
// WGM_BENCH_UNDERLAY_MTU); userspace WireGuard, or kernel WireGuard in a
// kernel-mode run (test/wgmode) in make test-kernel's VM, where the figures
// show shape only: the CPU is emulated.
func startPodBench(b *testing.B) *podBench {
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
	pb := &podBench{underlayMTU: 1500}
	if v := os.Getenv("WGM_BENCH_UNDERLAY_MTU"); v != "" {
		if _, err := fmt.Sscan(v, &pb.underlayMTU); err != nil {
			b.Fatalf("WGM_BENCH_UNDERLAY_MTU=%q: %v", v, err)
		}
	}
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 2, WireGuardMode: mode, UnderlayMTU: pb.underlayMTU})
	if err != nil {
		b.Fatalf("cluster: %v", err)
	}
	b.Cleanup(func() { _ = c.Stop() })
	pb.c, pb.n1, pb.n2 = c, c.Nodes[0], c.Nodes[1]

	for i, n := range []*cluster.Node{pb.n1, pb.n2} {
		name := fmt.Sprintf("iperf-%d", i+1)
		if _, err := c.CreatePod(ctx, n, name, 8080); err != nil {
			b.Fatal(err)
		}
		if pb.pods[i], err = c.WaitPodReady(ctx, "default", name, 90*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	// The mesh is up once one pod reaches the other.
	wait.For(b, 60*time.Second, "pod "+pb.pods[0].Name+" to reach "+pb.pods[1].Name, func() error {
		_, err := c.PodDial(ctx, pb.pods[0], "http", pb.pods[1].Status.PodIP, 8080, "hostname")
		return err
	})
	if mode == "auto" {
		h, err := pb.n1.NetNS.Netlink()
		must(b, err)
		l, err := h.LinkByName("wgmesh0")
		h.Close()
		if err != nil || l.Type() != "wireguard" {
			b.Fatalf("--wireguard-mode=auto made no kernel WireGuard link on %s: %v", pb.n1.Name, err)
		}
	}
	return pb
}

// podToPod is iperf3 from the pod on node 1 to the pod on node 2.
func (pb *podBench) podToPod(b *testing.B, port int) float64 {
	return iperfTCP(b, podCommander(pb.n2, pb.pods[1]), podCommander(pb.n1, pb.pods[0]), pb.pods[1].Status.PodIP, port)
}

// BenchmarkPodThroughput measures, in one run and between the same two node
// namespaces of a local cluster (wgm-node-1 and wgm-node-2): TCP throughput
// (iperf3) over the plain veth underlay, over a hand-configured WireGuard
// tunnel, and pod to pod through wgmesh.
func BenchmarkPodThroughput(b *testing.B) {
	pb := startPodBench(b)
	n1, n2 := pb.n1, pb.n2
	handWireGuard(b, n1.NetNS, n2.NetNS, n1.UnderlayIP, n2.UnderlayIP, pb.underlayMTU-80)

	b.ResetTimer()
	veth := iperfTCP(b, n2.Command, n1.Command, n2.UnderlayIP, 5201)
	hand := iperfTCP(b, n2.Command, n1.Command, handTunnelB, 5202)
	mesh := pb.podToPod(b, 5203)
	b.StopTimer()

	b.ReportMetric(veth/1e6, "veth-Mbit/s")
	b.ReportMetric(hand/1e6, "handwg-Mbit/s")
	b.ReportMetric(mesh/1e6, "wgmesh-pod-Mbit/s")
	b.ReportMetric(mesh/hand, "wgmesh/handwg")
	b.ReportMetric(mesh/veth, "wgmesh/veth")
	fmt.Printf("\nTCP throughput %s -> %s (iperf3, %ds each, same run, underlay MTU %d):\n", n1.Name, n2.Name, iperfSeconds, pb.underlayMTU)
	fmt.Printf("  plain veth underlay              %10s\n", mbit(veth))
	fmt.Printf("  hand-configured %-16s %10s  (%.2f x veth)\n", wireGuardLabel(b), mbit(hand), hand/veth)
	fmt.Printf("  wgmesh pod to pod                %10s  (%.2f x veth, %.2f x hand WG)\n\n", mbit(mesh), mesh/veth, mesh/hand)
}

// BenchmarkPodPathPieces is the per-piece cost of the pod data path: pod to
// pod throughput with one piece taken away at a time, beside the same
// tunnel from node to node (no veth, no bridge, no forwarding) and a
// hand-configured WireGuard tunnel between the same namespaces. The agents
// are frozen (SIGSTOP) while their rules are removed, so that nothing puts
// them back mid-measurement, and thawed after; the cluster is thrown away
// at the end. make bench runs it; alone: -bench BenchmarkPodPathPieces.
func BenchmarkPodPathPieces(b *testing.B) {
	pb := startPodBench(b)
	ctx := context.Background()
	n1, n2 := pb.n1, pb.n2
	handWireGuard(b, n1.NetNS, n2.NetNS, n1.UnderlayIP, n2.UnderlayIP, pb.underlayMTU-80)
	// Node 2's pod bridge address, reached from node 1's own namespace
	// through wgmesh0 (wgmesh0's address is node 1's pod CIDR's network
	// address, which node 2 accepts from it).
	var node corev1.Node
	must(b, pb.c.Client.Get(ctx, client.ObjectKey{Name: n2.Name}, &node))
	cidr, err := netip.ParsePrefix(node.Spec.PodCIDR)
	must(b, err)
	gw, ok := podnet.Gateway(cidr)
	if !ok {
		b.Fatalf("no gateway in %s's pod CIDR %s", n2.Name, cidr)
	}
	both := func(argv ...string) {
		for _, n := range []*cluster.Node{n1, n2} {
			if out, err := n.Exec(ctx, argv...); err != nil {
				b.Fatalf("%s: %v: %v: %s", n.Name, argv, err, out)
			}
		}
	}
	// signalAgents signals both agents, whatever one's error.
	signalAgents := func(sig syscall.Signal) error {
		var errs []error
		for _, n := range []*cluster.Node{n1, n2} {
			if pid := n.AgentPID(); pid > 0 {
				if err := syscall.Kill(pid, sig); err != nil {
					errs = append(errs, fmt.Errorf("%v to %s's agent: %w", sig, n.Name, err))
				}
			}
		}
		return errors.Join(errs...)
	}
	// Whatever happens, the agents run again (the cluster's Stop needs them
	// to answer SIGTERM).
	b.Cleanup(func() {
		if err := signalAgents(syscall.SIGCONT); err != nil {
			b.Log(err)
		}
	})

	type row struct {
		what string
		bps  float64
	}
	var rows []row
	measure := func(what string, f func(port int) float64) {
		rows = append(rows, row{what, f(5210 + len(rows))})
	}
	b.ResetTimer()
	measure("hand-configured "+wireGuardLabel(b)+", node to node", func(port int) float64 {
		return iperfTCP(b, n2.Command, n1.Command, handTunnelB, port)
	})
	agentWireGuard(b, n1, n2, pb.underlayMTU-80)
	measure("the agent's userspace WG process, configured by hand", func(port int) float64 {
		return iperfTCP(b, n2.Command, n1.Command, agentTunnelB, port)
	})
	measure("wgmesh0, node to node (no veth, bridge or forwarding)", func(port int) float64 {
		return iperfTCP(b, n2.Command, n1.Command, gw.Addr().String(), port)
	})
	measure("wgmesh0, node to node's wgmesh0 address", func(port int) float64 {
		return iperfTCP(b, n2.Command, n1.Command, cidr.Masked().Addr().String(), port)
	})
	measure("wgmesh pod to pod, as installed", func(port int) float64 { return pb.podToPod(b, port) })
	both("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0")
	measure("  without br_netfilter", func(port int) float64 { return pb.podToPod(b, port) })
	both("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1")
	must(b, signalAgents(syscall.SIGSTOP))
	both("nft", "delete", "table", "ip", "wgmesh")
	measure("  without table ip wgmesh (service NAT, guard, egress)", func(port int) float64 { return pb.podToPod(b, port) })
	measure("wgmesh0 node to node, without table ip wgmesh", func(port int) float64 {
		return iperfTCP(b, n2.Command, n1.Command, gw.Addr().String(), port)
	})
	both("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0")
	measure("  without both", func(port int) float64 { return pb.podToPod(b, port) })
	b.StopTimer()
	must(b, signalAgents(syscall.SIGCONT))

	hand, inst := rows[0].bps, rows[4].bps // hand WG; pod to pod as installed
	fmt.Printf("\nPod data path, piece by piece, %s -> %s (iperf3, %ds each, same run, underlay MTU %d):\n", n1.Name, n2.Name, iperfSeconds, pb.underlayMTU)
	for _, r := range rows {
		fmt.Printf("  %-58s %10s  (%.2f x hand WG, %.2f x as installed)\n", r.what, mbit(r.bps), r.bps/hand, r.bps/inst)
	}
	fmt.Println()
	b.ReportMetric(inst/hand, "pod/handwg")
}

// The second hand-configured tunnel, run by the agent's own binary
// (wgmesh-agent userspace-wireguard, as the agent spawns it) and configured
// with wg(8): what the process costs apart from the mesh's configuration.
const (
	agentTunnelA = "198.18.251.1"
	agentTunnelB = "198.18.251.2"
	agentPort    = 51822
)

func agentWireGuard(b *testing.B, n1, n2 *cluster.Node, mtu int) {
	ctx := context.Background()
	ka, err := wgtypes.GeneratePrivateKey()
	must(b, err)
	kb, err := wgtypes.GeneratePrivateKey()
	must(b, err)
	for i, n := range []*cluster.Node{n1, n2} {
		own, peer, peerIP, addr, paddr := ka, kb, n2.UnderlayIP, agentTunnelA, agentTunnelB
		if i == 1 {
			own, peer, peerIP, addr, paddr = kb, ka, n1.UnderlayIP, agentTunnelB, agentTunnelA
		}
		cmd := n.Command(context.WithoutCancel(ctx), n.AgentBinary(), "userspace-wireguard", "--interface=wgmb1")
		must(b, cmd.Start())
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		kf := filepath.Join(b.TempDir(), "key")
		must(b, os.WriteFile(kf, []byte(own.String()), 0o600))
		wait.For(b, 10*time.Second, "wgmb1 on "+n.Name, func() error {
			out, err := n.Exec(ctx, "wg", "set", "wgmb1", "private-key", kf, "listen-port", fmt.Sprint(agentPort),
				"peer", peer.PublicKey().String(), "endpoint", fmt.Sprintf("%s:%d", peerIP, agentPort), "allowed-ips", paddr+"/32")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		for _, argv := range [][]string{
			{"ip", "link", "set", "wgmb1", "mtu", fmt.Sprint(mtu), "up"},
			{"ip", "addr", "add", addr + "/32", "dev", "wgmb1"},
			{"ip", "route", "add", paddr + "/32", "dev", "wgmb1"},
		} {
			if out, err := n.Exec(ctx, argv...); err != nil {
				b.Fatalf("%s: %v: %v: %s", n.Name, argv, err, out)
			}
		}
	}
}
