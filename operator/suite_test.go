package operator

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/operator/cidr"
	"github.com/wgmesh/wgmesh/test/apiserver"
)

// The API tests share one real kube-apiserver + etcd (envtest). There is no
// kube-controller-manager: no garbage collector, no node IPAM.
var (
	testCfg    *rest.Config
	testClient client.Client // direct (uncached) admin client
)

func TestMain(m *testing.M) {
	os.Exit(apiserver.Main(m, func(cfg *rest.Config) error {
		cfg.QPS, cfg.Burst = 500, 1000
		testCfg = cfg
		scheme, err := NewScheme()
		if err != nil {
			return err
		}
		testClient, err = client.New(cfg, client.Options{Scheme: scheme})
		return err
	}))
}

func needAPI(t *testing.T) { t.Helper(); apiserver.Need(t) }

// operatorInstance is one running operator (a manager) in the test process.
type operatorInstance struct {
	registry *prometheus.Registry
	cancel   context.CancelFunc
	done     chan error
}

func (o *operatorInstance) stop(t *testing.T) {
	t.Helper()
	if o.cancel == nil {
		return
	}
	o.cancel()
	o.cancel = nil
	select {
	case err := <-o.done:
		if err != nil {
			t.Errorf("operator stopped with: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("operator did not stop within 60s")
	}
}

type testOperatorOptions struct {
	clusterCIDRs string
	leaderElect  bool
	name         string
	locations    LocationOptions
}

// startOperator runs the operator's manager against the test API server
// until the test ends (or stop is called).
func startOperator(t *testing.T, o testOperatorOptions) *operatorInstance {
	t.Helper()
	pools, err := cidr.Config{ClusterCIDRs: o.clusterCIDRs, NodeMaskSizeIPv4: 24, NodeMaskSizeIPv6: 64}.Parse()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	mgr, err := NewManager(testCfg, ManagerOptions{
		Pools:                   pools,
		LeaderElect:             o.leaderElect,
		LeaderElectionNamespace: "default",
		MetricsBindAddress:      "0",
		HealthProbeBindAddress:  "0",
		Registerer:              reg,
		LeaseDuration:           3 * time.Second,
		RenewDeadline:           2 * time.Second,
		RetryPeriod:             250 * time.Millisecond,
		SkipNameValidation:      true,
		Locations:               o.locations,
		Logger:                  testr.NewWithOptions(t, testr.Options{Verbosity: testLogVerbosity, LogTimestamp: true}).WithName(o.name),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &operatorInstance{registry: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { inst.done <- mgr.Start(ctx) }()
	t.Cleanup(func() { inst.stop(t) })
	return inst
}

// cleanCluster removes every Node and MeshPeer when the test ends, so tests
// do not see each other's objects (there is no garbage collector).
func cleanCluster(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		if err := testClient.DeleteAllOf(ctx, &corev1.Node{}); err != nil {
			t.Errorf("delete nodes: %v", err)
		}
		if err := testClient.DeleteAllOf(ctx, &wgv1.MeshPeer{}); err != nil {
			t.Errorf("delete MeshPeers: %v", err)
		}
	})
}

// findEvent returns the newest Event about an object with this reason.
func findEvent(t *testing.T, kind, name, reason string) *eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := testClient.List(context.Background(), &list); err != nil {
		t.Fatalf("list events: %v", err)
	}
	var found *eventsv1.Event
	for i := range list.Items {
		e := &list.Items[i]
		if e.Regarding.Kind == kind && e.Regarding.Name == name && e.Reason == reason {
			found = e
		}
	}
	return found
}

// countEvents counts the Events about an object with this reason (a
// series counts as its number of occurrences).
func countEvents(t *testing.T, kind, name, reason string) int {
	t.Helper()
	var list eventsv1.EventList
	if err := testClient.List(context.Background(), &list); err != nil {
		t.Fatalf("list events: %v", err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Kind != kind || e.Regarding.Name != name || e.Reason != reason {
			continue
		}
		if e.Series != nil {
			n += int(e.Series.Count)
		} else {
			n++
		}
	}
	return n
}

func createNode(t *testing.T, name string, annotations map[string]string, podCIDRs ...string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{}
	n.Name = name
	n.Annotations = annotations
	n.Spec.PodCIDRs = podCIDRs
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR = podCIDRs[0]
	}
	if err := testClient.Create(context.Background(), n); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	return n
}

func getNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{}
	if err := testClient.Get(context.Background(), client.ObjectKey{Name: name}, n); err != nil {
		t.Fatalf("get node %s: %v", name, err)
	}
	return n
}

// metric returns the sum of a metric's samples in this instance's registry.
func (o *operatorInstance) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := o.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// testLogVerbosity is the operator's log level in tests.
var testLogVerbosity = 0

// createNodeAt creates a Node the way a kubelet registers it, with its
// InternalIP addresses in status.addresses.
func createNodeAt(t *testing.T, name string, addrs []string, annotations map[string]string, podCIDRs ...string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{}
	n.Name = name
	n.Annotations = annotations
	n.Spec.PodCIDRs = podCIDRs
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR = podCIDRs[0]
	}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	if err := testClient.Create(context.Background(), n); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	if len(n.Status.Addresses) != len(addrs) {
		t.Fatalf("node %s: status.addresses %v not kept on create", name, n.Status.Addresses)
	}
	return n
}
