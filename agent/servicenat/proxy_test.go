package servicenat

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/wgmesh/wgmesh/agent/kube"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestProxyAgainstAPIServer runs the proxy against a real API server and a
// real kernel: a Service it cannot use is reported and skipped while the
// others work, metrics and Events tell what happened, drift is repaired,
// kube-proxy beside it is reported, and a restart over an existing ruleset
// writes nothing.
func TestProxyAgainstAPIServer(t *testing.T) {
	netns.SkipUnlessRoot(t)
	if reason := apiserver.SkipReason(); reason != "" {
		skip.Unless(t, reason)
	}
	env, cfg, err := apiserver.StartWith(apiserver.Options{ServiceCIDR: "198.18.128.0/20"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "198.19.1.0/24", PodCIDRs: []string{"198.19.1.0/24"}}}
	node, err = cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	crc, err := client.New(cfg, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := crc.Create(ctx, &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec: wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", AllowedIPs: []wgv1.CIDR{"198.19.1.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	conflict := func() *metav1.Condition {
		mp := &wgv1.MeshPeer{}
		if err := crc.Get(ctx, client.ObjectKey{Name: "n1"}, mp); err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(mp.Status.Conditions, wgv1.ConditionKubeProxyConflict)
	}
	mkSvc := func(name, ip string) {
		t.Helper()
		_, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: ip, Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	mkSvc("good", "198.18.128.10")
	// Inside the API server's range but outside the proxy's --service-cidrs.
	mkSvc("outside", "198.18.129.10")
	trigger := time.Now().Add(-50 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "good-1", Labels: map[string]string{discoveryv1.LabelServiceName: "good"},
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"198.19.2.5"}, NodeName: ptr.To("n2")}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	ns := netns.NewForTest(t, "wgmsn-proxy")
	k := kernelIn(t, ns)
	listen := func(network, addr string) (l net.Listener, err error) {
		err = ns.Do(func() error { l, err = net.Listen(network, addr); return err })
		return l, err
	}
	start := func(reg *prometheus.Registry) (context.CancelFunc, chan error) {
		pctx, pcancel := context.WithCancel(ctx)
		p := New(Options{NodeName: "n1", NetNSFd: k.NetNSFd, SyncPeriod: time.Second,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.128.0/24")},
			HealthCheck:  NewHealthServer(listen, testr.New(t)), Log: testr.New(t), Registerer: reg})
		done := make(chan error, 1)
		go func() { done <- runOnRuntime(pctx, t, cfg, "n1", p) }()
		return pcancel, done
	}
	reg := prometheus.NewRegistry()
	stop, done := start(reg)
	goodKey := nft.MapKey{Addr: netip.MustParseAddr("198.18.128.10"), Proto: nft.TCP, Port: 80}
	good := func(d *nft.Digest) bool { return dnatTo(d, goodKey) == "198.19.2.5:8080" }
	waitKernel(t, k, "the good Service's element", good)

	t.Run("bad Service skipped and reported", func(t *testing.T) {
		d, err := k.Read(nft.IPv4)
		if err != nil {
			t.Fatal(err)
		}
		outside := nft.MapKey{Addr: netip.MustParseAddr("198.18.129.10"), Proto: nft.TCP, Port: 80}
		if to := dnatTo(d, outside); to != "" {
			t.Errorf("Service outside --service-cidrs programmed: %s to %s", outside, to)
		}
		wait.For(t, 30*time.Second, "an InvalidServiceField Event on default/outside", func() error {
			evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=outside"})
			if err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == "InvalidServiceField" && strings.Contains(e.Message, `spec.clusterIPs[0]="198.18.129.10"`) {
					return nil
				}
			}
			return fmt.Errorf("events %v", evs.Items)
		})
	})

	t.Run("metrics", func(t *testing.T) {
		// Set at the end of the sync that wrote the kernel: waited for.
		// good, outside, and the API server's own default/kubernetes.
		wait.For(t, 10*time.Second, "the sync's metrics", func() error {
			if got := metricSum(t, reg, "wgmesh_services"); got != 3 {
				return fmt.Errorf("wgmesh_services = %v, want 3", got)
			}
			if got := metricSum(t, reg, "wgmesh_service_endpoints"); got != 2 {
				return fmt.Errorf("wgmesh_service_endpoints = %v, want 2", got)
			}
			if n := metricSum(t, reg, "wgmesh_service_network_programming_duration_seconds"); n < 1 {
				return fmt.Errorf("network programming duration observed %v times, want at least 1", n)
			}
			if n := metricSum(t, reg, "wgmesh_service_sync_duration_seconds"); n < 1 {
				return fmt.Errorf("sync duration observed %v times", n)
			}
			return nil
		})
	})

	t.Run("drift repaired", func(t *testing.T) {
		if out, err := ns.Exec(ctx, "nft", "delete", "element", "ip", nft.Table, PrefixEndpointsMod+"1", "{ 198.18.128.10 . tcp . 80 . 0 }"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if out, err := ns.Exec(ctx, "nft", "flush", "chain", "ip", nft.Table, ChainEndpointsDNAT); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		// One DNAT rule (mod 1).
		waitKernel(t, k, "the element and the DNAT rule back", func(d *nft.Digest) bool {
			return good(d) && len(d.Chains[ChainEndpointsDNAT]) == 1
		})
	})

	t.Run("kube-proxy beside it reported", func(t *testing.T) {
		if out, err := ns.Exec(ctx, "nft", "add", "table", "ip", "kube-proxy"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		wait.For(t, 30*time.Second, "a KubeProxyDetected Event on the Node", func() error {
			evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=n1"})
			if err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == ReasonKubeProxyDetected && strings.Contains(e.Message, "kube-proxy") {
					return nil
				}
			}
			return fmt.Errorf("events %v", evs.Items)
		})
		if got := metricSum(t, reg, "wgmesh_service_kube_proxy_detected"); got != 1 {
			t.Errorf("wgmesh_service_kube_proxy_detected = %v", got)
		}
		wait.For(t, 30*time.Second, "KubeProxyConflict True on the node's MeshPeer", func() error {
			if c := conflict(); c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "kube-proxy") {
				return fmt.Errorf("condition %+v", c)
			}
			return nil
		})
		if out, err := ns.Exec(ctx, "nft", "delete", "table", "ip", "kube-proxy"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		wait.For(t, 30*time.Second, "KubeProxyConflict False once kube-proxy is gone", func() error {
			if c := conflict(); c == nil || c.Status != metav1.ConditionFalse {
				return fmt.Errorf("condition %+v", c)
			}
			return nil
		})
	})

	t.Run("restart writes only differences", func(t *testing.T) {
		stop()
		<-done
		reg2 := prometheus.NewRegistry()
		stop2, done2 := start(reg2)
		defer func() { stop2(); <-done2 }()
		wait.For(t, 30*time.Second, "the first sync of the restarted proxy", func() error {
			if metricSum(t, reg2, "wgmesh_service_sync_duration_seconds") < 1 {
				return fmt.Errorf("not synced yet")
			}
			return nil
		})
		if got := metricSum(t, reg2, "wgmesh_service_nftables_writes_total"); got != 0 {
			t.Errorf("a restart over the same ruleset wrote %v objects, want 0", got)
		}
	})
}

// TestProxyStandsAsideForKubeProxy: with --service-proxy=auto the proxy
// removes its rules and programs nothing while kube-proxy's rules, or its
// health endpoint, are on the node, and comes back when they are gone; each
// step is told by an Event on the Node and wgmesh_service_nat_standing_aside,
// and the agent stays ready.
func TestProxyStandsAsideForKubeProxy(t *testing.T) {
	netns.SkipUnlessRoot(t)
	if reason := apiserver.SkipReason(); reason != "" {
		skip.Unless(t, reason)
	}
	env, cfg, err := apiserver.StartWith(apiserver.Options{ServiceCIDR: "198.18.128.0/20"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "198.19.1.0/24", PodCIDRs: []string{"198.19.1.0/24"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "198.18.128.10", Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// kube-proxy's health endpoint, answering as kube-proxy does while up.
	var healthzUp atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthzUp.Load() || r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"lastUpdated": "2026-12-07 21:00:00 +0000 UTC", "currentTime": "2026-12-07 21:00:01 +0000 UTC"}`)
	}))
	defer srv.Close()

	ns := netns.NewForTest(t, "wgmsn-aside")
	k := kernelIn(t, ns)
	listen := func(network, addr string) (l net.Listener, err error) {
		err = ns.Do(func() error { l, err = net.Listen(network, addr); return err })
		return l, err
	}
	reg := prometheus.NewRegistry()
	p := New(Options{NodeName: "n1", NetNSFd: k.NetNSFd, SyncPeriod: time.Second,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.128.0/24")},
		StandAside:   true, KubeProxyHealthz: strings.TrimPrefix(srv.URL, "http://"),
		HealthCheck: NewHealthServer(listen, testr.New(t)), Log: testr.New(t), Registerer: reg})
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runOnRuntime(pctx, t, cfg, "n1", p) }()
	defer func() { pcancel(); <-done }()

	key := nft.MapKey{Addr: netip.MustParseAddr("198.18.128.10"), Proto: nft.TCP, Port: 80}
	// No endpoints: the Service is programmed as a rejection.
	programmed := func(d *nft.Digest) bool {
		return d.TypedSets[SetNoEndpointPorts].Elems[nft.SetElem{Addr: key.Addr, Proto: key.Proto, Port: key.Port}]
	}
	waitKernel(t, k, "the Service programmed (no kube-proxy yet)", programmed)
	nodeEvent := func(reason string) {
		t.Helper()
		wait.For(t, 30*time.Second, "a "+reason+" Event on the Node", func() error {
			evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=n1,reason=" + reason})
			if err != nil {
				return err
			}
			if len(evs.Items) == 0 {
				return fmt.Errorf("none yet")
			}
			return nil
		})
	}
	aside := func(want float64) {
		t.Helper()
		wait.For(t, 30*time.Second, fmt.Sprintf("wgmesh_service_nat_standing_aside %v", want), func() error {
			if got := metricSum(t, reg, "wgmesh_service_nat_standing_aside"); got != want {
				return fmt.Errorf("%v", got)
			}
			return nil
		})
	}
	for _, c := range []struct {
		name          string
		appear, leave func()
	}{
		{"kube-proxy's nftables table",
			func() { nftExec(ctx, t, ns, "add", "table", "ip", "kube-proxy") },
			func() { nftExec(ctx, t, ns, "delete", "table", "ip", "kube-proxy") }},
		{"kube-proxy's health endpoint", func() { healthzUp.Store(true) }, func() { healthzUp.Store(false) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.appear()
			waitKernel(t, k, "the service NAT's rules gone", func(d *nft.Digest) bool { return !programmed(d) && len(d.Chains[ChainServices]) == 0 })
			aside(1)
			nodeEvent(ReasonStandingAside)
			if err := p.Synced(); err != nil {
				t.Errorf("standing aside, the proxy is not ready: %v", err)
			}
			c.leave()
			waitKernel(t, k, "the Service programmed again", programmed)
			aside(0)
			nodeEvent(ReasonResumed)
		})
	}
}

func nftExec(ctx context.Context, t *testing.T, ns *netns.NS, args ...string) {
	t.Helper()
	if out, err := ns.Exec(ctx, append([]string{"nft"}, args...)...); err != nil {
		t.Fatalf("nft %v: %v: %s", args, err, out)
	}
}

// runOnRuntime runs p as the agent does: on the agent's runtime
// (agent/kube), until ctx ends.
func runOnRuntime(ctx context.Context, t *testing.T, cfg *rest.Config, node string, p *Proxy) error {
	rt, err := kube.New(cfg, kube.Options{NodeName: node, Log: testr.New(t), MetricsBindAddress: "0", ByObject: CacheOptions()})
	if err != nil {
		return err
	}
	if err := rt.Add(manager.RunnableFunc(func(ctx context.Context) error { return p.Run(ctx, rt) })); err != nil {
		return err
	}
	return rt.Start(ctx)
}

// dnatTo lists the endpoints the kernel's DNAT maps send key to, by slot.
func dnatTo(d *nft.Digest, key nft.MapKey) string {
	var out []string
	for n, ts := range d.TypedSets {
		if modOf(n) == 0 {
			continue
		}
		for slot := 0; slot < modOf(n); slot++ {
			for e := range ts.Elems {
				if e.NATKey() == (nft.NATKey{Addr: key.Addr, Proto: key.Proto, Port: key.Port, Slot: uint16(slot)}) {
					out = append(out, e.NATTo().String())
				}
			}
		}
	}
	return strings.Join(out, ",")
}

func waitKernel(t *testing.T, k *nft.Kernel, what string, ok func(*nft.Digest) bool) {
	t.Helper()
	wait.For(t, 30*time.Second, what, func() error {
		d, err := k.Read(nft.IPv4)
		if err != nil {
			return err
		}
		if !ok(d) {
			return fmt.Errorf("not in the kernel yet")
		}
		return nil
	})
}

// metricSum adds up a metric's series: gauge and counter values,
// histogram sample counts.
func metricSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += seriesValue(m)
		}
	}
	return sum
}

func seriesValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = wgv1.AddToScheme(s)
	return s
}
