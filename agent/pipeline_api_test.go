package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent/tunnel"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/wait"
)

// fakeTunnel records what the agent asks the node's kernel for, and fails
// when told to.
type fakeTunnel struct {
	mu      sync.Mutex
	applies []tunnel.Desired
	err     error
}

func (f *fakeTunnel) Apply(_ context.Context, d tunnel.Desired) (tunnel.Applied, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies = append(f.applies, d)
	dev := &wgtypes.Device{PrivateKey: d.PrivateKey}
	for _, p := range d.Topology.Peers {
		dev.Peers = append(dev.Peers, wgtypes.Peer{PublicKey: p.PublicKey})
	}
	return tunnel.Applied{MTU: 1420, Device: dev}, f.err
}

func (f *fakeTunnel) Cleanup() error { return nil }

// Peers are the last applied topology's peers (a fake device learns no
// endpoints).
func (f *fakeTunnel) Peers() []wgtypes.Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applies) == 0 {
		return nil
	}
	var out []wgtypes.Peer
	for _, p := range f.applies[len(f.applies)-1].Topology.Peers {
		out = append(out, wgtypes.Peer{PublicKey: p.PublicKey})
	}
	return out
}

func (f *fakeTunnel) last() (tunnel.Desired, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applies) == 0 {
		return tunnel.Desired{}, 0
	}
	return f.applies[len(f.applies)-1], len(f.applies)
}

func (f *fakeTunnel) fail(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// fakeDataplane records the node states it was given, in a log shared by the
// data planes so that their order shows.
type fakeDataplane struct {
	name string
	log  *callLog
	err  error
}

type callLog struct {
	mu    sync.Mutex
	calls []string
	last  map[string]NodeState
}

func (d *fakeDataplane) Name() string { return d.name }
func (d *fakeDataplane) Apply(_ context.Context, st NodeState) error {
	d.log.mu.Lock()
	defer d.log.mu.Unlock()
	d.log.calls = append(d.log.calls, d.name)
	d.log.last[d.name] = st
	return d.err
}
func (d *fakeDataplane) Cleanup(context.Context) error { return nil }

func (l *callLog) snapshot() ([]string, map[string]NodeState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls), map[string]NodeState{"guard": l.last["guard"], "cni": l.last["cni"]}
}

// TestReconcilePipeline runs the agent against a real API server with the
// node's kernel replaced by a fake: MeshPeers become the topology the tunnel
// gets (node peers by their owner, an external peer, a bad one left out);
// the node data planes run after the tunnel, in their declared order, with
// the node's facts; the status tells the truth; a failing tunnel leaves the
// data planes applied (the leak guard matters most then) and turns Ready
// false, naming the error; it recovers.
func TestReconcilePipeline(t *testing.T) {
	_, cfg := apiserver.StartForTest(t)
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	nodes := map[string]*corev1.Node{}
	for i, name := range []string{"wgm-pipe-1", "wgm-pipe-2"} {
		nodes[name] = createTestNode(ctx, t, c, name, i)
	}
	peerKey, extKey := mustKey(t), mustKey(t)
	owner := func(n *corev1.Node) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID, Controller: ptr.To(true)}}
	}
	peers := []*wgv1.MeshPeer{
		{ObjectMeta: metav1.ObjectMeta{Name: "wgm-pipe-1", OwnerReferences: owner(nodes["wgm-pipe-1"])}, Spec: wgv1.MeshPeerSpec{NodeName: "wgm-pipe-1",
			PublicKey: wgv1.PublicKey(mustKey(t).String()), AllowedIPs: []wgv1.CIDR{"198.19.1.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "wgm-pipe-2", OwnerReferences: owner(nodes["wgm-pipe-2"])}, Spec: wgv1.MeshPeerSpec{NodeName: "wgm-pipe-2",
			PublicKey: wgv1.PublicKey(peerKey.String()), Endpoint: "198.18.0.12:51820", AllowedIPs: []wgv1.CIDR{"198.19.2.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "wgm-pipe-laptop"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(extKey.String()), AllowedIPs: []wgv1.CIDR{"198.18.200.1/32"}}},
		// Left out: it would route the API server's address into the tunnel.
		{ObjectMeta: metav1.ObjectMeta{Name: "wgm-pipe-evil"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(mustKey(t).String()), AllowedIPs: []wgv1.CIDR{"127.0.0.1/32"}}},
	}
	for _, p := range peers {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	tun := &fakeTunnel{}
	calls := &callLog{last: map[string]NodeState{}}
	guard, cni := &fakeDataplane{name: "guard", log: calls}, &fakeDataplane{name: "cni", log: calls}
	a, err := New(Options{NodeName: "wgm-pipe-1", StateDir: t.TempDir(), MetricsBindAddress: "0", HealthProbeAddress: "0",
		LinkName: "wgm-fake0", BridgeName: "wgm-fakebr0", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
		StatusMinInterval: 100 * time.Millisecond, StatusMembershipDelay: 200 * time.Millisecond,
		Tunnel: tun, Dataplanes: []NodeDataplane{guard, cni}, Registerer: prometheus.NewRegistry()}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, cfg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	ready := func(want metav1.ConditionStatus, msg string) func() error {
		return func() error {
			mp := &wgv1.MeshPeer{}
			if err := c.Get(ctx, client.ObjectKey{Name: "wgm-pipe-1"}, mp); err != nil {
				return err
			}
			cond := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionReady)
			if cond == nil || cond.Status != want || !strings.Contains(cond.Message, msg) {
				return fmt.Errorf("Ready = %+v, want %s with %q", cond, want, msg)
			}
			return nil
		}
	}
	wait.For(t, 30*time.Second, "Ready True on the node's MeshPeer", ready(metav1.ConditionTrue, ""))

	// The tunnel got the topology: the other node and the laptop, not itself
	// nor the peer that would capture the API server.
	d, _ := tun.last()
	var names []string
	for _, p := range d.Topology.Peers {
		names = append(names, p.Name+"="+fmt.Sprint(p.AllowedIPs))
	}
	if got := strings.Join(names, " "); got != "wgm-pipe-2=[198.19.2.0/24] wgm-pipe-laptop=[198.18.200.1/32]" {
		t.Errorf("topology peers %s", got)
	}
	if len(d.Topology.Gateways) != 1 || d.Topology.Gateways[0].String() != "198.19.1.1/24" {
		t.Errorf("gateways %v", d.Topology.Gateways)
	}
	order, states := calls.snapshot()
	if len(order) < 2 || order[0] != "guard" || order[1] != "cni" {
		t.Errorf("data planes applied in order %v, want guard then cni", order)
	}
	st := states["cni"]
	if fmt.Sprint(st.PodCIDRs, st.ExternalPeerRanges, st.MTU, st.BridgeGateways) != "[198.19.1.0/24] [198.18.200.1/32] 1420 [198.19.1.1/24]" ||
		!slices.Contains(st.NodePodCIDRs, netip.MustParsePrefix("198.19.2.0/24")) {
		t.Errorf("node state %+v", st)
	}
	node := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: "wgm-pipe-1"}, node); err != nil || node.Annotations[wgv1.AnnotationPublicKey] != d.PrivateKey.PublicKey().String() {
		t.Errorf("the agent did not announce the key its tunnel uses (%s): %v %v", d.PrivateKey.PublicKey(), node.Annotations, err)
	}

	// The tunnel fails: the data planes still run, Ready turns false naming
	// the error. A change of a MeshPeer wakes the agent.
	before := len(order)
	tun.fail(errors.New("netlink: wgmesh0 refused"))
	bump := func(allowed string) {
		mp := &wgv1.MeshPeer{}
		if err := c.Get(ctx, client.ObjectKey{Name: "wgm-pipe-laptop"}, mp); err != nil {
			t.Fatal(err)
		}
		mp.Spec.AllowedIPs = []wgv1.CIDR{wgv1.CIDR(allowed)}
		if err := c.Update(ctx, mp); err != nil {
			t.Fatal(err)
		}
	}
	bump("198.18.200.2/32")
	wait.For(t, 30*time.Second, "Ready False naming the tunnel's error", ready(metav1.ConditionFalse, "wgmesh0 refused"))
	order, states = calls.snapshot()
	if len(order) < before+2 || !slices.Contains(states["guard"].ExternalPeerRanges, netip.MustParsePrefix("198.18.200.2/32")) {
		t.Errorf("with the tunnel failing the data planes were not applied with the new state: %v %+v", order[before:], states["guard"])
	}
	// It recovers.
	tun.fail(nil)
	bump("198.18.200.3/32")
	wait.For(t, 30*time.Second, "Ready True again", ready(metav1.ConditionTrue, ""))

	// A failing data plane does not stop the next one, and Ready says which.
	calls.mu.Lock()
	guard.err = errors.New("nftables: table wgmesh busy")
	calls.mu.Unlock()
	n := len(order)
	bump("198.18.200.4/32")
	wait.For(t, 30*time.Second, "Ready False naming the guard", ready(metav1.ConditionFalse, "guard: nftables: table wgmesh busy"))
	order, states = calls.snapshot()
	if len(order) < n+2 || !slices.Contains(states["cni"].ExternalPeerRanges, netip.MustParsePrefix("198.18.200.4/32")) {
		t.Errorf("the cni data plane was not applied after the guard failed: %v", order[n:])
	}
}

// createTestNode creates Node name, the i-th of a test, with pod CIDR
// 198.19.<i+1>.0/24 and InternalIP 198.18.0.<11+i>.
func createTestNode(ctx context.Context, t *testing.T, c client.Client, name string, i int) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{
		PodCIDR: fmt.Sprintf("198.19.%d.0/24", i+1), PodCIDRs: []string{fmt.Sprintf("198.19.%d.0/24", i+1)}}}
	if err := c.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("198.18.0.%d", 11+i)}}
	if err := c.Status().Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	return n
}
