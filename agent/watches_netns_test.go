package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent/policy"
	"github.com/wgmesh/wgmesh/agent/servicenat"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

// watchCounter counts the watches open at once through a rest config, by
// resource: a watch is open from its request until its response body is
// closed. (A watch the API server ends and the informer opens again is
// still one watch: the most open at once is what counts.)
type watchCounter struct {
	mu        sync.Mutex
	open, max map[string]int
}

func (w *watchCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if q := r.URL.Query(); q.Get("watch") != "true" && q.Get("watch") != "1" {
			return rt.RoundTrip(r)
		}
		res := path.Base(r.URL.Path)
		w.mu.Lock()
		w.open[res]++
		w.max[res] = max(w.max[res], w.open[res])
		w.mu.Unlock()
		var once sync.Once
		done := func() {
			once.Do(func() {
				w.mu.Lock()
				w.open[res]--
				w.mu.Unlock()
			})
		}
		resp, err := rt.RoundTrip(r)
		if err != nil || resp == nil || resp.Body == nil {
			done()
			return resp, err
		}
		resp.Body = &closeHook{ReadCloser: resp.Body, hook: done}
		return resp, err
	})
}

// String is the most watches open at once and those open now, by resource.
func (w *watchCounter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for r, n := range w.max {
		out = append(out, fmt.Sprintf("%s=%d(now %d)", r, n, w.open[r]))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type closeHook struct {
	io.ReadCloser
	hook func()
}

func (c *closeHook) Close() error {
	defer c.hook()
	return c.ReadCloser.Close()
}

// TestOneWatchPerResource runs the agent with its service NAT and network
// policy against a real API server and counts the watches the process holds
// open: one per resource (Nodes, MeshPeers, Services, EndpointSlices, Pods,
// Namespaces, NetworkPolicies) however many of its parts read it (the mesh
// reads its own Node and every Node's UID, the service NAT every Node's
// addresses, the network policy every Node), and no more as Nodes,
// MeshPeers, Services and NetworkPolicies change. (Before one runtime: three
// Node watches.)
func TestOneWatchPerResource(t *testing.T) {
	netns.SkipUnlessRoot(t)
	if reason := apiserver.SkipReason(); reason != "" {
		skip.Unless(t, reason)
	}
	env, cfg, err := apiserver.StartWith(apiserver.Options{ServiceCIDR: "198.18.128.0/20"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	nodes := map[string]*corev1.Node{}
	for i, name := range []string{"wgm-watch-1", "wgm-watch-2"} {
		n := createTestNode(ctx, t, c, name, i)
		nodes[name] = n
		owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID, Controller: ptr.To(true)}}
		if err := c.Create(ctx, &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: owner}, Spec: wgv1.MeshPeerSpec{NodeName: name,
			PublicKey: wgv1.PublicKey(mustKey(t).String()), AllowedIPs: []wgv1.CIDR{wgv1.CIDR(n.Spec.PodCIDR)}}}); err != nil {
			t.Fatal(err)
		}
	}
	mkService := func(name string) {
		t.Helper()
		if err := c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}); err != nil {
			t.Fatal(err)
		}
		if err := c.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"198.19.2.5"}, NodeName: ptr.To("wgm-watch-2")}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	mkService("web")

	// The service NAT programs a namespace of its own.
	ns := netns.NewForTest(t, "wgm-watches")
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	natReg := prometheus.NewRegistry()
	sp := servicenat.New(servicenat.Options{NodeName: "wgm-watch-1", NetNSFd: int(f.Fd()),
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")}, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.128.0/20")},
		Log: testr.New(t).WithName("servicenat"), Registerer: natReg})

	// The network policy writes a fake table.
	npReg := prometheus.NewRegistry()
	np := policy.New(policy.Options{NodeName: "wgm-watch-1", NFT: nft.NewFake().For(policy.Part), Log: testr.New(t).WithName("policy"), Registerer: npReg})

	tun := &fakeTunnel{}
	a, err := New(Options{NodeName: "wgm-watch-1", StateDir: t.TempDir(), MetricsBindAddress: "0", HealthProbeAddress: "0",
		LinkName: "wgm-watch0", BridgeName: "wgm-watchbr0", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
		StatusMinInterval: 100 * time.Millisecond, StatusMembershipDelay: 200 * time.Millisecond,
		Tunnel: tun, ServiceProxy: sp, NetworkPolicy: np, Registerer: prometheus.NewRegistry()}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	watches := &watchCounter{open: map[string]int{}, max: map[string]int{}}
	agentCfg := rest.CopyConfig(cfg)
	agentCfg.Wrap(watches.wrap)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, agentCfg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	services := func(want float64) func() error {
		return func() error {
			if err := sp.Synced(); err != nil {
				return err
			}
			mfs, err := natReg.Gather()
			if err != nil {
				return err
			}
			for _, mf := range mfs {
				if mf.GetName() == "wgmesh_services" {
					if got := mf.GetMetric()[0].GetGauge().GetValue(); got != want {
						return fmt.Errorf("wgmesh_services = %v, want %v", got, want)
					}
					return nil
				}
			}
			return fmt.Errorf("no wgmesh_services yet")
		}
	}
	// Both loops ran: the mesh reports Ready, the service NAT programmed
	// web and default/kubernetes.
	wait.For(t, 60*time.Second, "Ready True on the node's MeshPeer", func() error {
		mp := &wgv1.MeshPeer{}
		if err := c.Get(ctx, client.ObjectKey{Name: "wgm-watch-1"}, mp); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionReady); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", cond)
		}
		return nil
	})
	wait.For(t, 60*time.Second, "the service NAT's first sync", services(2))
	wait.For(t, 60*time.Second, "the network policy's first sync", np.Synced)
	policies := func(want float64) func() error {
		return func() error {
			mfs, err := npReg.Gather()
			if err != nil {
				return err
			}
			for _, mf := range mfs {
				if mf.GetName() == "wgmesh_policy_policies" {
					if got := mf.GetMetric()[0].GetGauge().GetValue(); got != want {
						return fmt.Errorf("wgmesh_policy_policies = %v, want %v", got, want)
					}
					return nil
				}
			}
			return fmt.Errorf("no wgmesh_policy_policies yet")
		}
	}
	check := func(when string) {
		t.Helper()
		want := "endpointslices=1(now 1) meshpeers=1(now 1) namespaces=1(now 1) networkpolicies=1(now 1) nodes=1(now 1) pods=1(now 1) services=1(now 1)"
		if got := watches.String(); got != want {
			t.Errorf("%s, the agent's watches: %s; want %s", when, got, want)
		}
	}
	check("started")

	// The cluster changes: another node's addresses (every part reads
	// Nodes), a MeshPeer's spec, a new Service. Barriers: the mesh and the
	// service NAT saw them.
	n2 := nodes["wgm-watch-2"]
	if err := c.Get(ctx, client.ObjectKeyFromObject(n2), n2); err != nil {
		t.Fatal(err)
	}
	n2.Status.Addresses = append(n2.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "198.18.1.12"})
	if err := c.Status().Update(ctx, n2); err != nil {
		t.Fatal(err)
	}
	mp2 := &wgv1.MeshPeer{}
	if err := c.Get(ctx, client.ObjectKey{Name: "wgm-watch-2"}, mp2); err != nil {
		t.Fatal(err)
	}
	mp2.Spec.Endpoint = "198.18.0.12:51820"
	if err := c.Update(ctx, mp2); err != nil {
		t.Fatal(err)
	}
	mkService("api")
	if err := c.Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "deny"}}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the mesh's tunnel given wgm-watch-2's endpoint", func() error {
		d, _ := tun.last()
		for _, p := range d.Topology.Peers {
			if p.Name == "wgm-watch-2" && p.Endpoint == "198.18.0.12:51820" {
				return nil
			}
		}
		return fmt.Errorf("topology %+v", d.Topology.Peers)
	})
	wait.For(t, 30*time.Second, "the service NAT's sync of the new Service", services(3))
	wait.For(t, 30*time.Second, "the network policy's sync of the new NetworkPolicy", policies(1))
	check("after Node, MeshPeer, Service and NetworkPolicy changes")
}
