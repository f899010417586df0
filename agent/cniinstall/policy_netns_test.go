package cniinstall

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	gnft "github.com/google/nftables"

	"github.com/wgmesh/wgmesh/agent/policy"
	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
)

var policyPodCIDRs = []string{"198.19.6.0/24", "2001:db8:100:6::/64"}

// agentStub answers the plugin's requests on a real unix socket as the
// agent's protocol says (agent/policy's server is tested on its own),
// recording them.
type agentStub struct {
	mu     sync.Mutex
	reqs   []guard.PolicyRequest
	answer guard.PolicyResponse
}

func (a *agentStub) serve(t *testing.T, path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			var req guard.PolicyRequest
			if err := json.NewDecoder(conn).Decode(&req); err == nil {
				a.mu.Lock()
				a.reqs = append(a.reqs, req)
				resp := a.answer
				a.mu.Unlock()
				_ = json.NewEncoder(conn).Encode(resp)
			}
			conn.Close()
		}
	}()
}

func (a *agentStub) last() (guard.PolicyRequest, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.reqs) == 0 {
		return guard.PolicyRequest{}, 0
	}
	return a.reqs[len(a.reqs)-1], len(a.reqs)
}

// addPodArgs is the network's ADD as containerd runs it for pod ns/name.
func (r *cniRig) addPodArgs(ctx context.Context, pod *netns.NS, id, ns, name, uid string) (*types100.Result, error) {
	list, err := r.load()
	if err != nil {
		return nil, err
	}
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", name}, {"K8S_POD_UID", uid}}}
	var res *types100.Result
	err = r.node.Do(func() error {
		raw, err := r.cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(raw)
		return err
	})
	return res, err
}

// installPolicy writes the network policy's part (no pods programmed yet:
// every address of the pod CIDRs fails closed) in node, as the agent's
// first sync does.
func installPolicy(t *testing.T, node *netns.NS) {
	t.Helper()
	f, err := os.Open(node.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	k := &nft.Kernel{Part: policy.Part, NetNSFd: int(f.Fd())}
	n := policy.Node{Name: "n1"}
	for _, c := range policyPodCIDRs {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(c))
	}
	for _, fam := range nft.Families {
		if err := k.EnsureSkeleton(fam); err != nil {
			t.Fatal(err)
		}
		if _, err := nft.Sync(k, fam, policy.Render(netpol.NewIndex(), n, fam)); err != nil {
			t.Fatalf("network policy %s: %v", fam, err)
		}
	}
}

func resultAddrs(res *types100.Result) []netip.Addr {
	var out []netip.Addr
	for _, ip := range res.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		out = append(out, a.Unmap())
	}
	return out
}

// TestCNIPolicyHook: with the policy entry, real ADDs (bridge,
// host-local, wgmesh-guard built from this tree) ask the agent on its
// socket to judge the pod, with the pod's namespace, name, UID and the
// addresses bridge gave it, before ADD returns. An agent that does not
// answer, or refuses, fails ADD while the kernel has no fail-closed rules
// (after a reboot, before the agent's first sync), and lets it succeed
// once they are there (the pod stays denied until the agent programs it).
func TestCNIPolicyHook(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "wgm-np-node")
	socket := filepath.Join(t.TempDir(), "policy.sock")
	r.mgr.opts.PolicySocket = socket
	installGuard(t, r.node)
	if err := r.mgr.Apply(ctx, State{PodCIDRs: policyPodCIDRs, MTU: 1420}); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(r.mgr.ConfigPath())
	if err != nil || !strings.Contains(string(conf), `"policySocket": "`+socket+`"`) {
		t.Fatalf("conflist without the policy entry (%v):\n%s", err, conf)
	}

	// No agent, no fail-closed rules: ADD fails, to be retried.
	pod0 := netns.NewForTest(t, "wgm-np-pod0")
	t.Cleanup(func() { _ = r.del(ctx, pod0, "c0") })
	_, err = r.addPodArgs(ctx, pod0, "c0", "x", "p0", "u0")
	if err == nil || !strings.Contains(err.Error(), "network policy is not in the kernel") || !strings.Contains(err.Error(), "did not program the pod") {
		t.Fatalf("ADD with no agent and no fail-closed rules: %v, want a refusal naming both", err)
	}

	// An agent that answers: asked with the pod and its addresses.
	agent := &agentStub{}
	agent.serve(t, socket)
	pod1 := netns.NewForTest(t, "wgm-np-pod1")
	t.Cleanup(func() { _ = r.del(ctx, pod1, "c1") })
	res, err := r.addPodArgs(ctx, pod1, "c1", "x", "p1", "u1")
	if err != nil {
		t.Fatalf("ADD with the agent answering: %v", err)
	}
	req, n := agent.last()
	if n != 1 || req.Namespace != "x" || req.Name != "p1" || req.UID != "u1" || req.ContainerID != "c1" || !slices.Equal(req.IPs, resultAddrs(res)) || len(req.IPs) != 2 {
		t.Errorf("the agent was asked %d times, last %+v; want once for x/p1 uid u1 container c1 with the result's addresses %v", n, req, resultAddrs(res))
	}

	// The agent refuses, and the kernel has no fail-closed rules: ADD
	// fails, naming both.
	agent.mu.Lock()
	agent.answer = guard.PolicyResponse{Refused: true, Error: "wgmesh agent on node n1: pod x/p2 not programmed: the pod is bound to node n2"}
	agent.mu.Unlock()
	pod2 := netns.NewForTest(t, "wgm-np-pod2")
	t.Cleanup(func() { _ = r.del(ctx, pod2, "c2") })
	if _, err := r.addPodArgs(ctx, pod2, "c2", "x", "p2", "u2"); err == nil || !strings.Contains(err.Error(), "bound to node n2") || !strings.Contains(err.Error(), "not in the kernel") {
		t.Errorf("ADD refused by the agent, no fail-closed rules: %v, want a failure naming both", err)
	}

	// With the fail-closed rules, neither a refusal nor an absent agent
	// fails ADD: the pod's addresses stay out of policy-programmed (denied)
	// until the agent programs it from the Pod watch.
	installPolicy(t, r.node)
	pod3 := netns.NewForTest(t, "wgm-np-pod3")
	t.Cleanup(func() { _ = r.del(ctx, pod3, "c3") })
	if _, err := r.addPodArgs(ctx, pod3, "c3", "x", "p3", "u3"); err != nil {
		t.Errorf("ADD refused by the agent, the fail-closed rules in: %v, want success", err)
	}
	os.Remove(socket)
	pod4 := netns.NewForTest(t, "wgm-np-pod4")
	t.Cleanup(func() { _ = r.del(ctx, pod4, "c4") })
	res, err = r.addPodArgs(ctx, pod4, "c4", "x", "p4", "u4")
	if err != nil {
		t.Fatalf("ADD with no agent but the fail-closed rules: %v, want success", err)
	}
	var elems []gnft.SetElement
	if err := r.node.Do(func() error {
		conn, err := gnft.New()
		if err != nil {
			return err
		}
		table := &gnft.Table{Name: nft.Table, Family: gnft.TableFamilyIPv4}
		set, err := conn.GetSetByName(table, policy.SetProgrammed)
		if err != nil {
			return err
		}
		elems, err = conn.GetSetElements(set)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(elems) != 0 {
		t.Errorf("policy-programmed holds %d addresses, want none: pods 3 and 4 (%v) are denied until the agent programs them", len(elems), resultAddrs(res))
	}
}
