package policy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/nft"
)

// socketRig is a controller of node n1 (pod CIDR 198.19.1.0/24) writing a
// fake table, its Pods from an indexer standing in for the informer's, and
// serving the CNI plugin on a real unix socket in a temp dir.
type socketRig struct {
	c      *Controller
	fake   *nft.Fake
	pods   cache.Indexer
	socket string
}

func newSocketRig(t *testing.T) *socketRig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &socketRig{fake: nft.NewFake(), socket: filepath.Join(t.TempDir(), "run", "policy.sock")}
	r.c = New(Options{NodeName: "n1", NFT: r.fake.For(Part), Log: logr.Discard(), Socket: r.socket})
	r.pods = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	r.c.pods = corelisters.NewPodLister(r.pods)
	r.c.onNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"198.19.1.0/24"}}})
	r.c.onNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"198.19.2.0/24"}}})
	r.c.onNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}})
	// app=server pods admit app=client pods only.
	r.c.onPolicy(&networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "allow-client", UID: "np1"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}},
		},
	})
	l, err := r.c.listen(r.socket)
	if err != nil {
		t.Fatal(err)
	}
	close(r.c.started)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.c.serve(ctx, l) }()
	go func() { defer wg.Done(); _ = r.c.loop(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	r.barrier(t)
	return r
}

// barrier returns once a sync that began after it was called is in the
// fake kernel (as a CNI request waits).
func (r *socketRig) barrier(t *testing.T) {
	t.Helper()
	r.c.mu.Lock()
	r.c.judged++
	want := r.c.judged
	r.c.dirty = true
	r.c.mu.Unlock()
	r.c.run.Wake("test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.c.waitSynced(ctx, want); err != nil {
		t.Fatal(err)
	}
}

// pod adds a pod to the cache only (the watch has not delivered it).
func (r *socketRig) pod(t *testing.T, name, uid, node string, labels map[string]string) {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID(uid), Labels: labels},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	if err := r.pods.Add(p); err != nil {
		t.Fatal(err)
	}
}

// watched is a pod as the watch delivers it, with its status' addresses.
func watched(name, uid, node string, labels map[string]string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID(uid), Labels: labels},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func (r *socketRig) ask(name, uid string, ips ...string) error {
	req := guard.PolicyRequest{Namespace: "x", Name: name, UID: uid, ContainerID: "c-" + name}
	for _, ip := range ips {
		req.IPs = append(req.IPs, netip.MustParseAddr(ip))
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard.DefaultPolicyTimeout)
	defer cancel()
	return guard.AskPolicy(ctx, r.socket, req)
}

// trace is the fate of a new TCP connection through the node's forward
// hook.
func (r *socketRig) trace(src, dst string) string {
	tr := r.fake.Tracer(nft.IPv4, map[netip.Addr]bool{netip.MustParseAddr("198.18.0.11"): true}, func(netip.Addr) string { return "wgmesh-br0" })
	return nft.Outcomes(tr.Trace(nft.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: nft.TCP, DPort: 80}))
}

// TestCNISocket: the plugin's request over a real unix socket programs the
// pod from the cache before the answer (denied before, following its
// policy after, with nothing from the watch yet); bad requests are refused
// with a message naming what is wrong; an agent that is not there or does
// not answer is reported as unavailable; the socket is root's only.
func TestCNISocket(t *testing.T) {
	r := newSocketRig(t)
	if st, err := os.Stat(r.socket); err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v %v, want a socket of mode 0600", r.socket, st.Mode(), err)
	}
	r.c.onPod(watched("client", "u-client", "n2", map[string]string{"app": "client"}, "198.19.2.10"))
	r.c.onPod(watched("other", "u-other", "n2", nil, "198.19.2.11"))
	r.barrier(t)

	r.pod(t, "server", "u-server", "n1", map[string]string{"app": "server"})
	if got := r.trace("198.19.2.10", "198.19.1.10"); got != "drop" {
		t.Fatalf("before the request, client -> the new pod's address: %s, want drop", got)
	}
	start := time.Now()
	if err := r.ask("server", "u-server", "198.19.1.10"); err != nil {
		t.Fatalf("programming the new pod: %v", err)
	}
	t.Logf("programmed in %v", time.Since(start))
	for _, c := range []struct{ src, dst, want string }{
		{"198.19.2.10", "198.19.1.10", "accept"}, // allowed at once
		{"198.19.2.11", "198.19.1.10", "drop"},   // not a client
		{"198.19.1.10", "198.19.2.11", "accept"}, // egress not isolated
		{"198.19.1.11", "198.19.2.10", "drop"},   // another address, not judged
	} {
		if got := r.trace(c.src, c.dst); got != c.want {
			t.Errorf("after the request, %s -> %s: %s, want %s\n%s", c.src, c.dst, got, c.want, r.fake.Ruleset(nft.IPv4))
		}
	}
	// The watch then brings the pod without addresses (the kubelet has not
	// reported them yet): the CNI's stay.
	r.c.onPod(watched("server", "u-server", "n1", map[string]string{"app": "server"}))
	r.barrier(t)
	if got := r.trace("198.19.2.10", "198.19.1.10"); got != "accept" {
		t.Errorf("after a status without addresses: %s, want accept", got)
	}

	r.pod(t, "elsewhere", "u-elsewhere", "n2", nil)
	r.pod(t, "uid", "u-uid", "n1", nil)
	for _, c := range []struct {
		name, uid string
		ips       []string
		want      string
	}{
		{"Bad_Name", "", []string{"198.19.1.12"}, "pod name"},
		{"server", "u-server", []string{"198.19.2.12"}, "not a pod address of node n1"},
		{"server", "u-server", []string{"198.19.1.1"}, "not a pod address"}, // the gateway
		{"server", "u-server", []string{"198.19.1.0"}, "not a pod address"},
		{"server", "u-server", []string{"198.19.1.12", "198.19.1.13"}, "two addresses of one family"},
		{"server", "u-server", nil, "0 addresses"},
		{"elsewhere", "u-elsewhere", []string{"198.19.1.12"}, `bound to node "n2"`},
		{"uid", "u-other", []string{"198.19.1.12"}, "not known"},
		{"missing", "", []string{"198.19.1.12"}, "not known"},
	} {
		err := r.ask(c.name, c.uid, c.ips...)
		if err == nil || errors.Is(err, guard.ErrPolicyUnavailable) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("request %s/%s %v: %v, want a refusal naming %q", c.name, c.uid, c.ips, err, c.want)
		}
	}
	if got := r.trace("198.19.1.12", "198.19.2.10"); got != "drop" {
		t.Errorf("refused requests programmed 198.19.1.12: %s", got)
	}
	if got := testutil.ToFloat64(r.c.metrics.CNIRequests.WithLabelValues(ResultRefused)); got != 9 {
		t.Errorf("refused requests counted %v, want 9", got)
	}
	if got := testutil.ToFloat64(r.c.metrics.CNIRequests.WithLabelValues(ResultProgrammed)); got != 1 {
		t.Errorf("programmed requests counted %v, want 1", got)
	}

	// No agent, and an agent that does not answer: unavailable.
	err := guard.AskPolicy(context.Background(), filepath.Join(t.TempDir(), "none.sock"), guard.PolicyRequest{Namespace: "x", Name: "p"})
	if !errors.Is(err, guard.ErrPolicyUnavailable) {
		t.Errorf("no socket: %v, want ErrPolicyUnavailable", err)
	}
	mute := filepath.Join(t.TempDir(), "mute.sock")
	l, err := net.Listen("unix", mute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := guard.AskPolicy(ctx, mute, guard.PolicyRequest{Namespace: "x", Name: "p"}); !errors.Is(err, guard.ErrPolicyUnavailable) {
		t.Errorf("an agent that does not answer: %v, want ErrPolicyUnavailable", err)
	}
}

// TestCNIAddressReused: an address a CNI ADD gives a new pod is no longer
// an older pod's whose deletion the watch has not brought yet, even when
// that pod's status still lists it; when the new pod goes, the address is
// denied again.
func TestCNIAddressReused(t *testing.T) {
	r := newSocketRig(t)
	r.c.onPod(watched("client", "u-client", "n2", map[string]string{"app": "client"}, "198.19.2.10"))
	// The old pod: a client (so it could reach servers), at .10.
	r.c.onPod(watched("old", "u-old", "n1", map[string]string{"app": "client"}, "198.19.1.10"))
	r.pod(t, "new", "u-new", "n1", map[string]string{"app": "server"})
	if err := r.ask("new", "u-new", "198.19.1.10"); err != nil {
		t.Fatal(err)
	}
	r.c.onPod(watched("old", "u-old", "n1", map[string]string{"app": "client"}, "198.19.1.10")) // a late status
	// .10 is the server's: only clients get in.
	r.c.onPod(watched("other", "u-other", "n2", nil, "198.19.2.11"))
	r.barrier(t)
	if got := r.trace("198.19.2.11", "198.19.1.10"); got != "drop" {
		t.Errorf("a non-client to the reused address: %s, want drop (the new pod's policy)\n%s", got, r.fake.Ruleset(nft.IPv4))
	}
	if got := r.trace("198.19.2.10", "198.19.1.10"); got != "accept" {
		t.Errorf("a client to the reused address: %s, want accept", got)
	}
	r.c.onPodDelete(watched("new", "u-new", "n1", nil))
	r.barrier(t)
	if got := r.trace("198.19.2.10", "198.19.1.10"); got != "drop" {
		t.Errorf("the new pod gone, a client to its address: %s, want drop", got)
	}
}

// TestPluginKnowsTheKernelNames: the plugin checks the fail-closed rules
// by these names when the agent does not answer.
func TestPluginKnowsTheKernelNames(t *testing.T) {
	if guard.PolicyEgressChain != ChainEgress || guard.PolicyIngressChain != ChainIngress || guard.PolicyProgrammed != SetProgrammed {
		t.Errorf("cni/guard names %s, %s, %s; agent/policy %s, %s, %s", guard.PolicyEgressChain, guard.PolicyIngressChain, guard.PolicyProgrammed,
			ChainEgress, ChainIngress, SetProgrammed)
	}
}

// TestCNIPodOfTheSameName: a pod recreated under the same name (a
// StatefulSet's) is programmed by its ADD; the older pod's late update and
// its deletion, which the watch brings after, change nothing.
func TestCNIPodOfTheSameName(t *testing.T) {
	r := newSocketRig(t)
	r.c.onPod(watched("client", "u-client", "n2", map[string]string{"app": "client"}, "198.19.2.10"))
	r.c.onPod(watched("other", "u-other", "n2", nil, "198.19.2.11"))
	old := watched("web-0", "u-old", "n1", map[string]string{"app": "client"}, "198.19.1.10")
	r.c.onPod(old)
	// The new pod in the cache (the API server has it), then its ADD.
	r.pod(t, "web-0", "u-new", "n1", map[string]string{"app": "server"})
	if err := r.ask("web-0", "u-new", "198.19.1.11"); err != nil {
		t.Fatal(err)
	}
	r.c.onPod(old)
	r.c.onPodDelete(old)
	r.barrier(t)
	for _, c := range []struct{ src, dst, want string }{
		{"198.19.2.10", "198.19.1.11", "accept"}, // the server's policy
		{"198.19.2.11", "198.19.1.11", "drop"},
		{"198.19.2.10", "198.19.1.10", "drop"}, // the old pod's address: not judged
	} {
		if got := r.trace(c.src, c.dst); got != c.want {
			t.Errorf("%s -> %s: %s, want %s\n%s", c.src, c.dst, got, c.want, r.fake.Ruleset(nft.IPv4))
		}
	}
}

// TestCNIPodDeletedMeanwhile: a CNI request that read its pod just before
// the pod's deletion, which the watch brought first, is refused; the pod's
// address stays unjudged (it would otherwise stay in policy-programmed
// under the dead pod's policies, no later event removing it).
func TestCNIPodDeletedMeanwhile(t *testing.T) {
	r := newSocketRig(t)
	r.c.onPod(watched("client", "u-client", "n2", map[string]string{"app": "client"}, "198.19.2.10"))
	r.pod(t, "gone", "u-gone", "n1", map[string]string{"app": "client"}) // the stale read
	r.c.onPodDelete(watched("gone", "u-gone", "n1", map[string]string{"app": "client"}))
	err := r.ask("gone", "u-gone", "198.19.1.12")
	if err == nil || !strings.Contains(err.Error(), "has been deleted") {
		t.Fatalf("request for a deleted pod: %v, want refused as deleted", err)
	}
	r.barrier(t)
	if got := r.trace("198.19.1.12", "198.19.2.10"); got != "drop" {
		t.Errorf("the deleted pod's address: %s, want drop (unjudged)\n%s", got, r.fake.Ruleset(nft.IPv4))
	}
}
