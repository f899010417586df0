package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// show prints the cluster, runs pods, the connectivity matrix and the underlay proof.
func show(ctx context.Context, c *cluster.Cluster) {
	for _, n := range c.Nodes {
		if n.NATted {
			// What a user sets for nodes behind NAT, so that they keep their mapping open.
			say("node %s is behind NAT: kubectl annotate node %s %s=25", n.Name, n.Name, wgv1.AnnotationPersistentKeepalive)
			node := &corev1.Node{}
			if err := c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, node); err == nil {
				patch := client.MergeFrom(node.DeepCopy())
				if node.Annotations == nil {
					node.Annotations = map[string]string{}
				}
				node.Annotations[wgv1.AnnotationPersistentKeepalive] = "25"
				if err := c.Client.Patch(ctx, node, patch); err != nil {
					say("annotate %s: %v", n.Name, err)
				}
			}
		}
	}
	waitMesh(ctx, c, 20*time.Second)
	kubectl(ctx, c, "get", "nodes", "-o", "wide")
	kubectl(ctx, c, "get", "meshpeers", "-o", "wide")

	say("creating 2 pods per node (built-in workload: hostname over TCP, UDP and HTTP on 8080)")
	var pods []*corev1.Pod
	for _, n := range c.Nodes {
		for _, s := range []string{"a", "b"} {
			name := strings.TrimPrefix(n.Name, "wgm-") + "-" + s
			if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: name, Node: n, Labels: map[string]string{"app": "demo"}}); err != nil {
				say("create pod %s: %v", name, err)
			}
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		for _, s := range []string{"a", "b"} {
			name := strings.TrimPrefix(n.Name, "wgm-") + "-" + s
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := c.WaitPodReady(ctx, "default", name, 60*time.Second)
				if err != nil {
					say("pod %s not ready: %v", name, err)
				}
				mu.Lock()
				pods = append(pods, p)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	kubectl(ctx, c, "get", "pods", "-o", "wide")

	caps := startCaptures(ctx, c)
	matrix(ctx, c, pods)
	underlayProof(c, caps)
	fmt.Println()
	// CONNECTED comes from the agents' probes; they write their status when
	// it changes, never on a timer.
	waitConnected(ctx, c, 30*time.Second)
	say("after the matrix (CONNECTED: expected peers not found unreachable by the probes through the tunnel, which must fail for 3 intervals):")
	kubectl(ctx, c, "get", "meshpeers", "-o", "wide")
	kubectlWgmesh(ctx, c, "status")

	fmt.Println()
	say("resident memory now:")
	for _, l := range strings.Split(c.Memory().String(), "\n") {
		fmt.Println("    " + l)
	}
	fmt.Println()
	say("the cluster keeps running in the background. Point kubectl at it:")
	fmt.Printf("    export KUBECONFIG=%s\n", c.Kubeconfig)
	fmt.Printf("    export PATH=%s:$PATH   # kubectl %s\n", c.Options().Assets, "v1.37.2")
	fmt.Println("    kubectl get meshpeers -o wide")
	fmt.Printf("    ip netns exec wgm-node-1 ping 198.18.0.12   # nodes are namespaces wgm-node-1, wgm-node-2, wgm-nat-1\n")
	fmt.Printf("    logs: %s/nodes/<node>/{agent,runtime}.log and %s/logs/\n", c.WorkDir, c.WorkDir)
	say("remove everything with: make demo-down")
}

// waitMesh waits (bounded) until every node has a Ready MeshPeer.
func waitMesh(ctx context.Context, c *cluster.Cluster, timeout time.Duration) {
	if err := wait.Poll(ctx, timeout, func() error {
		mps := &wgv1.MeshPeerList{}
		if err := c.Client.List(ctx, mps); err != nil {
			return err
		}
		if len(mps.Items) != len(c.Nodes) {
			return fmt.Errorf("%d MeshPeers for %d nodes", len(mps.Items), len(c.Nodes))
		}
		for _, mp := range mps.Items {
			if !meta.IsStatusConditionTrue(mp.Status.Conditions, wgv1.ConditionReady) {
				return fmt.Errorf("MeshPeer %s is not Ready", mp.Name)
			}
		}
		return nil
	}); err != nil {
		say("not every node has a Ready MeshPeer (shown as is): %v", err)
	}
}

type capture struct {
	where string
	c     *netns.Capture
}

func startCaptures(ctx context.Context, c *cluster.Cluster) []capture {
	var out []capture
	for _, x := range []struct {
		ns *netns.NS
		at string
	}{{c.Underlay, "underlay (cloud 1, every bridge port)"}, {c.Router, "NAT router (cloud 2 inside and outside)"}} {
		cp, err := netns.StartCaptureWith(ctx, x.ns, netns.CaptureOptions{Iface: "any", Filter: "ip or ip6", InboundOnly: true})
		if err != nil {
			say("capture on %s: %v", x.at, err)
			continue
		}
		out = append(out, capture{where: x.at, c: cp})
	}
	return out
}

// matrix dials every pod from every other pod (HTTP and UDP, through the workload's /dial)
// and prints OK (both), http / udp (only that one), or FAIL.
func matrix(ctx context.Context, c *cluster.Cluster, pods []*corev1.Pod) {
	say("pod-to-pod connectivity (from row to column; HTTP and UDP via each pod's /dial):")
	type cell struct{ http, udp bool }
	res := make([][]cell, len(pods))
	var wg sync.WaitGroup
	for i, from := range pods {
		res[i] = make([]cell, len(pods))
		for j, to := range pods {
			if i == j || from.Status.PodIP == "" || to.Status.PodIP == "" {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, proto := range []string{"http", "udp"} {
					var ok bool
					for try := 0; try < 2 && !ok; try++ {
						got, err := c.PodDial(ctx, from, proto, to.Status.PodIP, 8080, "hostname")
						ok = err == nil && got == to.Name
					}
					if proto == "http" {
						res[i][j].http = ok
					} else {
						res[i][j].udp = ok
					}
				}
			}()
		}
	}
	wg.Wait()
	fmt.Printf("%-10s", "")
	for _, p := range pods {
		fmt.Printf(" %-9s", p.Name)
	}
	fmt.Println()
	okCount, total := 0, 0
	for i, from := range pods {
		fmt.Printf("%-10s", from.Name)
		for j, to := range pods {
			s := "FAIL"
			switch {
			case i == j:
				s = "-"
			case from.Status.PodIP == "" || to.Status.PodIP == "":
				s = "no-IP"
				total++
			case res[i][j].http && res[i][j].udp:
				s = "OK"
				okCount++
				total++
			case res[i][j].http:
				s, total = "http-only", total+1
			case res[i][j].udp:
				s, total = "udp-only", total+1
			default:
				total++
			}
			fmt.Printf(" %-9s", s)
		}
		fmt.Println()
	}
	say("%d/%d pod pairs reach each other over HTTP and UDP", okCount, total)
}

// underlayProof summarises what crossed the underlay during the matrix.
func underlayProof(c *cluster.Cluster, caps []capture) {
	podRange := netip.MustParsePrefix(cluster.PodCIDR)
	podRange6 := netip.MustParsePrefix(cluster.PodCIDR6)
	nodes := map[string]bool{cluster.RouterOutside: true, cluster.RouterOutside6: true}
	for _, n := range c.Nodes {
		nodes[n.UnderlayIP] = true
		if n.UnderlayIP6 != "" {
			nodes[n.UnderlayIP6] = true
		}
	}
	say("what crossed the underlay during the matrix (tcpdump -i any -Q in, in the underlay and router namespaces):")
	for _, cp := range caps {
		pkts, _ := cp.c.Stop()
		var wg, other, api, podAddr int
		var samples []string
		for _, p := range pkts {
			isPod := func(s string) bool {
				a, err := netip.ParseAddr(s)
				return err == nil && (podRange.Contains(a) || podRange6.Contains(a))
			}
			switch {
			case isPod(p.Src) || isPod(p.Dst):
				podAddr++
				samples = append(samples, p.Line)
			case p.Src == cluster.APIServerIP || p.Dst == cluster.APIServerIP:
				api++
			case nodes[p.Src] && nodes[p.Dst] && p.Proto == "UDP" && (p.SrcPort == cluster.WireGuardPort || p.DstPort == cluster.WireGuardPort):
				// NAT may rewrite a cloud-2 node's port; the cloud-1 end is always 51820.
				wg++
			case nodes[p.Src] && nodes[p.Dst]:
				other++
				samples = append(samples, p.Line)
			}
		}
		fmt.Printf("  %s: %d packets between nodes: %d WireGuard (UDP %d), %d other; %d with a pod address; (%d control-plane packets to/from the API server)\n",
			cp.where, wg+other, wg, cluster.WireGuardPort, other, podAddr, api)
		for i, s := range samples {
			if i == 5 {
				fmt.Printf("    ... %d more\n", len(samples)-5)
				break
			}
			fmt.Println("    not WireGuard:", s)
		}
		switch {
		case wg+other == 0:
			fmt.Println("    => no node-to-node traffic seen: the mesh does not carry the pods' traffic yet")
		case other == 0 && podAddr == 0:
			fmt.Println("    => only WireGuard crossed between nodes; no pod address was visible")
		default:
			fmt.Println("    => NOT only WireGuard: see the lines above")
		}
	}
}

// waitConnected waits until every MeshPeer reports all its peers connected,
// or the timeout passes (then the table shows what is true).
func waitConnected(ctx context.Context, c *cluster.Cluster, timeout time.Duration) {
	_ = wait.Poll(ctx, timeout, func() error {
		var list wgv1.MeshPeerList
		if err := c.Client.List(ctx, &list); err != nil {
			return err
		}
		if len(list.Items) == 0 {
			return errors.New("no MeshPeers")
		}
		for _, mp := range list.Items {
			// Every other node expected and reached (a join reaches the
			// others' counts within --status-min-interval, 10 s).
			if int(mp.Status.TotalPeers) != len(list.Items)-1 || mp.Status.ConnectedPeers != mp.Status.TotalPeers {
				return fmt.Errorf("MeshPeer %s: %s", mp.Name, mp.Status.Connected)
			}
		}
		return nil
	})
}
