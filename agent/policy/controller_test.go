package policy

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
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/wgmesh/wgmesh/agent/egress"
	"github.com/wgmesh/wgmesh/agent/kube"
	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/wait"
)

// recording is a Programmer that records what each write changed: the
// chains whose rules differ before and after it (elements alone leave
// none).
type recording struct {
	nft.Programmer
	mu     sync.Mutex
	writes []write
}

type write struct {
	f      nft.Family
	chains []string
	size   int
}

func (r *recording) Apply(f nft.Family, ch *nft.Changes, want *nft.Ruleset) (int, error) {
	before, err := r.Programmer.Read(f)
	if err != nil {
		return 0, err
	}
	n, err := r.Programmer.Apply(f, ch, want)
	if err != nil || ch.Empty() {
		return n, err
	}
	after, err := r.Programmer.Read(f)
	if err != nil {
		return n, err
	}
	w := write{f: f, size: ch.Size(want)}
	for name := range before.Chains {
		if !slices.Equal(before.Chains[name], after.Chains[name]) {
			w.chains = append(w.chains, name)
		}
	}
	for name := range after.Chains {
		if _, ok := before.Chains[name]; !ok {
			w.chains = append(w.chains, name)
		}
	}
	r.mu.Lock()
	r.writes = append(r.writes, w)
	r.mu.Unlock()
	return n, nil
}

func (r *recording) since(n int) []write {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes[n:])
}

func (r *recording) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writes)
}

// testNode is one node's controller on its own runtime, writing a fake
// table.
type testNode struct {
	name string
	fake *nft.Fake
	rec  *recording
	ctl  *Controller
	reg  *prometheus.Registry
	brnf *brnfState
	// stop stops the node's runtime and waits for it.
	stop func()
}

// brnfState is what agent/egress would report about br_netfilter.
type brnfState struct {
	mu sync.Mutex
	st *egress.BridgeNFStatus
}

func (b *brnfState) get() *egress.BridgeNFStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

func (b *brnfState) set(st *egress.BridgeNFStatus) {
	b.mu.Lock()
	b.st = st
	b.mu.Unlock()
}

func startNode(ctx context.Context, t *testing.T, cfg *rest.Config, name string, opts ...func(*Options)) *testNode {
	t.Helper()
	n := &testNode{name: name, fake: nft.NewFake(), reg: prometheus.NewRegistry(), brnf: &brnfState{st: &egress.BridgeNFStatus{Enabled: true}}}
	n.rec = &recording{Programmer: n.fake.For(Part)}
	o := Options{NodeName: name, NFT: n.rec, SyncPeriod: 200 * time.Millisecond, BridgeNetfilter: n.brnf.get,
		Log: testr.New(t).WithName(name), Registerer: n.reg}
	for _, f := range opts {
		f(&o)
	}
	n.ctl = New(o)
	rt, err := kube.New(cfg, kube.Options{NodeName: name, Log: testr.New(t).WithName(name), MetricsBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Add(manager.RunnableFunc(func(ctx context.Context) error { return n.ctl.Run(ctx, rt) })); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rt.Start(rctx) }()
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("runtime of %s: %v", name, err)
			}
		})
	}
	t.Cleanup(n.stop)
	return n
}

// api is the test's client and the objects it made.
type api struct {
	t   *testing.T
	ctx context.Context
	cs  *kubernetes.Clientset
}

func (a *api) node(name, podCIDR, addr string) {
	a.t.Helper()
	n, err := a.cs.CoreV1().Nodes().Create(a.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}}, metav1.CreateOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
	if _, err := a.cs.CoreV1().Nodes().UpdateStatus(a.ctx, n, metav1.UpdateOptions{}); err != nil {
		a.t.Fatal(err)
	}
}

func (a *api) namespace(name string, labels map[string]string) {
	a.t.Helper()
	if _, err := a.cs.CoreV1().Namespaces().Create(a.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		a.t.Fatal(err)
	}
}

// pod creates a running pod with address ip on node, serving TCP 8080
// (named http) and UDP 53.
func (a *api) pod(ns, name, node, ip string, labels map[string]string) {
	a.t.Helper()
	p, err := a.cs.CoreV1().Pods(ns).Create(a.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "agnhost",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := a.cs.CoreV1().Pods(ns).UpdateStatus(a.ctx, p, metav1.UpdateOptions{}); err != nil {
		a.t.Fatal(err)
	}
}

func (a *api) policy(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	a.t.Helper()
	out, err := a.cs.NetworkingV1().NetworkPolicies(np.Namespace).Create(a.ctx, np, metav1.CreateOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	return out
}

// cluster is the API's objects as the model sees them.
func (a *api) cluster() (*netpol.Cluster, error) {
	var o netpol.Objects
	nss, err := a.cs.CoreV1().Namespaces().List(a.ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	pods, err := a.cs.CoreV1().Pods("").List(a.ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	nodes, err := a.cs.CoreV1().Nodes().List(a.ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	nps, err := a.cs.NetworkingV1().NetworkPolicies("").List(a.ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	o.Namespaces, o.Pods, o.Nodes, o.Policies = nss.Items, pods.Items, nodes.Items, nps.Items
	return netpol.FromAPI(o), nil
}

// probe is a connection the test judges.
type probe struct {
	proto netpol.Protocol
	port  uint16
}

var probes = []probe{{netpol.TCP, 8080}, {netpol.TCP, 81}, {netpol.UDP, 53}}

// tablesAllow traces conn through the fake tables of the nodes that judge
// it: the source pod's node (egress; ingress too when both pods are there),
// then the destination pod's node.
func tablesAllow(nodes map[string]*testNode, c *netpol.Cluster, conn netpol.Conn) (bool, error) {
	where := map[netip.Addr]string{}
	for _, p := range c.Pods {
		for _, a := range p.IPs {
			where[a] = p.Node
		}
	}
	trace := func(node string) (bool, error) {
		n := nodes[node]
		if n == nil {
			return true, nil // a node without an agent: judged nowhere
		}
		f := nft.FamilyOf(conn.Src)
		tr := n.fake.Tracer(f, map[netip.Addr]bool{}, func(netip.Addr) string { return "wgmesh-br0" })
		out := nft.Outcomes(tr.Trace(nft.Packet{Src: conn.Src, Dst: conn.Dst, Proto: protocols[conn.Proto], DPort: conn.DPort}))
		switch out {
		case "accept":
			return true, nil
		case "drop":
			return false, nil
		}
		return false, fmt.Errorf("%s at node %s: outcome %q", conn, node, out)
	}
	src, dst := where[conn.Src], where[conn.Dst]
	ok, err := trace(src)
	if err != nil || !ok || dst == src {
		return ok, err
	}
	return trace(dst)
}

// agree checks every probe between every two pod addresses: the fake
// tables decide as netpol.Evaluate does on the API's objects now. It
// returns the verdicts by "src->dst proto/port".
func agree(a *api, nodes map[string]*testNode) (map[string]bool, error) {
	c, err := a.cluster()
	if err != nil {
		return nil, err
	}
	verdicts := map[string]bool{}
	byAddr := map[netip.Addr]string{}
	for _, p := range c.Pods {
		for _, ip := range p.IPs {
			byAddr[ip] = p.Key()
		}
	}
	var problems []string
	for src, sk := range byAddr {
		for dst, dk := range byAddr {
			if src == dst {
				continue
			}
			for _, pr := range probes {
				conn := netpol.Conn{Src: src, Dst: dst, Proto: pr.proto, DPort: pr.port}
				want := netpol.Evaluate(c, conn)
				got, err := tablesAllow(nodes, c, conn)
				if err != nil {
					return nil, err
				}
				if got != want.Allowed {
					problems = append(problems, fmt.Sprintf("%s -> %s %s/%d: the table allows %v, the model %v (%s)", sk, dk, pr.proto, pr.port, got, want.Allowed, want))
				}
				verdicts[fmt.Sprintf("%s->%s %s/%d", sk, dk, pr.proto, pr.port)] = want.Allowed
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return verdicts, nil
}

// waitAgree waits until the tables agree with the model, then checks the
// verdicts the step is about, and returns how long agreement took.
func waitAgree(t *testing.T, a *api, nodes map[string]*testNode, what string, want map[string]bool) time.Duration {
	t.Helper()
	start := time.Now()
	var verdicts map[string]bool
	wait.For(t, 30*time.Second, what, func() (err error) {
		verdicts, err = agree(a, nodes)
		return err
	})
	took := time.Since(start)
	for k, v := range want {
		got, ok := verdicts[k]
		if !ok {
			t.Fatalf("%s: no probe %s", what, k)
		}
		if got != v {
			t.Errorf("%s: %s is allowed=%v by the model (and the tables), the step expects %v", what, k, got, v)
		}
	}
	t.Logf("%s: the tables agree with the model after %s (%d probes)", what, took.Round(time.Millisecond), len(verdicts))
	return took
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
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
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
					continue series
				}
			}
			switch {
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// waitEvent waits for an Event with reason about the object named name in
// namespace ns whose note contains text, and returns how many there are.
func waitEvent(t *testing.T, a *api, ns, name, reason, text string) int {
	t.Helper()
	n := 0
	wait.For(t, 30*time.Second, fmt.Sprintf("a %s Event about %s/%s", reason, ns, name), func() error {
		evs, err := a.cs.EventsV1().Events(ns).List(a.ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		n = 0
		var seen []string
		for _, e := range evs.Items {
			if e.Regarding.Name == name && e.Reason == reason && strings.Contains(e.Note, text) {
				n++
			}
			seen = append(seen, e.Reason+": "+e.Note)
		}
		if n == 0 {
			return fmt.Errorf("events %v", seen)
		}
		return nil
	})
	return n
}

func tcpPort(n int32) []networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	p := intstr.FromInt32(n)
	return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}}
}

// TestControllerAgainstAPIServer runs the controllers of two nodes against
// a real API server, each writing a fake table: after every step (a
// default-deny policy, an allow rule, a new peer pod, a namespace label, a
// policy deleted) every connection between the pods, traced through both
// tables, is allowed or denied as netpol.Evaluate says of the API's
// objects. A new peer pod writes one set element and no chain; drift in a
// table is repaired; failures, br_netfilter missing and invalid policy
// fields are reported (Events, metrics, readiness).
func TestControllerAgainstAPIServer(t *testing.T) {
	_, cfg := apiserver.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := &api{t: t, ctx: ctx, cs: kubernetes.NewForConfigOrDie(cfg)}

	a.node("n1", "198.19.1.0/24", "198.18.0.11")
	a.node("n2", "198.19.2.0/24", "198.18.0.12")
	a.namespace("x", nil)
	a.namespace("y", map[string]string{"team": "blue"})
	a.pod("x", "a", "n1", "198.19.1.10", map[string]string{"pod": "a"})
	a.pod("x", "b", "n1", "198.19.1.11", map[string]string{"pod": "b"})
	a.pod("y", "c", "n1", "198.19.1.12", map[string]string{"pod": "c"})
	a.pod("x", "d", "n2", "198.19.2.10", map[string]string{"pod": "d"})
	a.pod("y", "e", "n2", "198.19.2.11", map[string]string{"pod": "b"})

	nodes := map[string]*testNode{"n1": startNode(ctx, t, cfg, "n1"), "n2": startNode(ctx, t, cfg, "n2")}
	n1, n2 := nodes["n1"], nodes["n2"]
	for _, n := range nodes {
		wait.For(t, 30*time.Second, n.name+"'s first sync", n.ctl.Synced)
	}
	waitAgree(t, a, nodes, "no policy", map[string]bool{"y/c->x/a TCP/8080": true, "x/d->x/a TCP/81": true})

	var latencies []time.Duration
	t.Run("default deny ingress", func(t *testing.T) {
		a.policy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny-ingress"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
		latencies = append(latencies, waitAgree(t, a, nodes, "x/deny-ingress", map[string]bool{
			"y/c->x/a TCP/8080": false, // same node
			"x/d->x/a TCP/8080": false, // across nodes
			"x/a->x/d UDP/53":   false,
			"x/a->y/e TCP/8080": true, // y is not isolated
		}))
	})

	t.Run("allow by podSelector and port", func(t *testing.T) {
		a.policy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "allow-b"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}}},
					Ports: tcpPort(8080)}}}})
		latencies = append(latencies, waitAgree(t, a, nodes, "x/allow-b", map[string]bool{
			"x/b->x/a TCP/8080": true,
			"x/b->x/a TCP/81":   false,
			"y/e->x/a TCP/8080": false, // pod=b, but in another namespace
			"x/d->x/a TCP/8080": false,
		}))
	})

	t.Run("a new peer pod writes one element", func(t *testing.T) {
		before := n1.rec.count()
		writesBefore := metricValue(t, n1.reg, "wgmesh_policy_nftables_writes_total", map[string]string{"kind": "partial"})
		a.pod("x", "b2", "n2", "198.19.2.20", map[string]string{"pod": "b"})
		latencies = append(latencies, waitAgree(t, a, nodes, "x/b2 (pod=b on n2)", map[string]bool{"x/b2->x/a TCP/8080": true, "x/b2->x/d TCP/8080": false}))
		ws := n1.rec.since(before)
		if len(ws) != 1 || len(ws[0].chains) != 0 || ws[0].size != 1 {
			t.Errorf("node n1 wrote %+v for a new peer pod; want one write of one element (its address in the peer set), no chain", ws)
		}
		if got := metricValue(t, n1.reg, "wgmesh_policy_nftables_writes_total", map[string]string{"kind": "partial"}) - writesBefore; got != 1 {
			t.Errorf("wgmesh_policy_nftables_writes_total{kind=partial} grew by %v, want 1", got)
		}
	})

	t.Run("a namespace label", func(t *testing.T) {
		a.policy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "allow-blue"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "d"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "red"}}}}}}}})
		waitAgree(t, a, nodes, "x/allow-blue before the label", map[string]bool{"y/c->x/d TCP/8080": false})
		// A barrier: x/deny-ingress denies y/c -> x/d already, so the tables
		// agree before n2 has seen x/allow-blue. Its policy count says it has.
		wait.For(t, 10*time.Second, "n2 to count x/allow-blue", func() error {
			if got := metricValue(t, n2.reg, "wgmesh_policy_policies", nil); got != 3 {
				return fmt.Errorf("wgmesh_policy_policies = %v, want 3", got)
			}
			return nil
		})
		ns, err := a.cs.CoreV1().Namespaces().Get(ctx, "y", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns.Labels["team"] = "red"
		if _, err := a.cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		latencies = append(latencies, waitAgree(t, a, nodes, "namespace y labelled team=red", map[string]bool{"y/c->x/d TCP/8080": true, "y/c->x/d UDP/53": true}))
	})

	t.Run("metrics", func(t *testing.T) {
		wait.For(t, 10*time.Second, "n1's gauges", func() error {
			for _, m := range []struct {
				name   string
				labels map[string]string
				want   float64
			}{
				{"wgmesh_policy_policies", nil, 3},
				{"wgmesh_policy_isolated_pods", map[string]string{"direction": "ingress"}, 2}, // x/a, x/b
				{"wgmesh_policy_isolated_pods", map[string]string{"direction": "egress"}, 0},
				{"wgmesh_policy_ready", nil, 1},
			} {
				if got := metricValue(t, n1.reg, m.name, m.labels); got != m.want {
					return fmt.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
				}
			}
			return nil
		})
		if n := metricValue(t, n1.reg, "wgmesh_policy_programming_duration_seconds", nil); n < 4 {
			t.Errorf("programming duration observed %v times, want one per step at least", n)
		}
		if n := metricValue(t, n1.reg, "wgmesh_policy_sync_duration_seconds", map[string]string{"kind": "full"}); n < 1 {
			t.Errorf("full sync duration observed %v times", n)
		}
		// Packets dropped by a combination chain's final rule.
		rs := n1.fake.Ruleset(nft.IPv4)
		chain := ""
		for name := range rs.Chains {
			if strings.HasPrefix(name, prefixCombinationIn) {
				chain = name
			}
		}
		if chain == "" {
			t.Fatalf("no ingress combination chain in n1's table:\n%s", rs)
		}
		n1.fake.Count(nft.IPv4, chain, len(rs.Chains[chain])-1, 7, 700)
		n1.fake.Count(nft.IPv4, chain, 0, 100, 100) // ct state invalid: not a denial by policy
		// And by the fail-closed rule: addresses not judged yet.
		failClosed := slices.IndexFunc(rs.Chains[ChainIngress], func(r nft.Rule) bool { return r.NotDaddrSet == SetProgrammed })
		if failClosed < 0 {
			t.Fatalf("no fail-closed rule in n1's %s:\n%s", ChainIngress, rs)
		}
		n1.fake.Count(nft.IPv4, ChainIngress, failClosed, 3, 300)
		n1.fake.Count(nft.IPv4, ChainIngress, 0, 50, 500) // replies: not counted
		wait.For(t, 10*time.Second, "the drops counted", func() error {
			if got := metricValue(t, n1.reg, "wgmesh_policy_denied_packets_total", map[string]string{"direction": "ingress"}); got != 7 {
				return fmt.Errorf("wgmesh_policy_denied_packets_total{direction=ingress} = %v, want 7", got)
			}
			if got := metricValue(t, n1.reg, "wgmesh_policy_unjudged_packets_total", map[string]string{"direction": "ingress"}); got != 3 {
				return fmt.Errorf("wgmesh_policy_unjudged_packets_total{direction=ingress} = %v, want 3", got)
			}
			return nil
		})
	})

	t.Run("drift repaired", func(t *testing.T) {
		var removed []string
		n1.fake.Tamper(nft.IPv4, func(rs *nft.Ruleset) {
			for k := range rs.Maps[MapIngress] {
				delete(rs.Maps[MapIngress], k)
				removed = append(removed, k.String())
			}
			rs.Chains[ChainIngress] = nil
		})
		if len(removed) == 0 {
			t.Fatal("no ingress map element to remove")
		}
		waitAgree(t, a, nodes, "the flushed chain and the removed elements "+strings.Join(removed, ", ")+" back", map[string]bool{"y/c->x/a TCP/8080": false})
		wait.For(t, 10*time.Second, "the map repaired", func() error {
			if got := len(n1.fake.Ruleset(nft.IPv4).Maps[MapIngress]); got != len(removed) {
				return fmt.Errorf("%d elements in %s, want %d", got, MapIngress, len(removed))
			}
			return nil
		})
	})

	t.Run("write failure reported", func(t *testing.T) {
		refused := errors.New("netlink: device or resource busy")
		n2.fake.Tamper(nft.IPv4, func(*nft.Ruleset) { n2.fake.FailWrites = refused })
		waitEvent(t, a, "default", "n2", ReasonFailed, "device or resource busy")
		wait.For(t, 10*time.Second, "n2 not ready", func() error {
			if n2.ctl.Synced() == nil || metricValue(t, n2.reg, "wgmesh_policy_ready", nil) != 0 ||
				metricValue(t, n2.reg, "wgmesh_policy_sync_errors_total", map[string]string{"stage": "kernel"}) == 0 {
				return errors.New("still ready")
			}
			return nil
		})
		n2.fake.Tamper(nft.IPv4, func(*nft.Ruleset) { n2.fake.FailWrites = nil })
		wait.For(t, 30*time.Second, "n2 ready again", n2.ctl.Synced)
	})

	t.Run("br_netfilter missing", func(t *testing.T) {
		n2.brnf.set(&egress.BridgeNFStatus{Reason: "/proc/sys/net/bridge/bridge-nf-call-iptables is missing"})
		waitEvent(t, a, "default", "n2", ReasonBridgeNetfilterMissing, "bypasses NetworkPolicy")
		wait.For(t, 10*time.Second, "n2 not ready", func() error {
			if err := n2.ctl.Synced(); err == nil || !strings.Contains(err.Error(), "br_netfilter") {
				return fmt.Errorf("Synced() = %v", err)
			}
			if metricValue(t, n2.reg, "wgmesh_policy_ready", nil) != 0 {
				return errors.New("wgmesh_policy_ready is 1")
			}
			return nil
		})
		n2.brnf.set(&egress.BridgeNFStatus{Enabled: true})
		wait.For(t, 30*time.Second, "n2 ready again", n2.ctl.Synced)
	})

	t.Run("invalid field reported once per agent", func(t *testing.T) {
		// The API server refuses invalid policies; an older or newer API
		// server may accept what this version's model cannot read (API
		// skew). Such a policy is the API's valid one with a field the
		// model refuses, given to the handlers as an informer would.
		np := a.policy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "skewed"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "198.19.0.0/16"}}}}}}})
		waitAgree(t, a, nodes, "x/skewed", nil)
		skewed := np.DeepCopy()
		skewed.Spec.Ingress[0].From[0].IPBlock.Except = []string{"10.0.0.0/8"}
		for range 3 {
			n1.ctl.onPolicy(skewed)
		}
		n := waitEvent(t, a, "x", "skewed", ReasonInvalid, `spec.ingress[0].from[0].ipBlock: except[0]: "10.0.0.0/8" is not a strict subset of cidr`)
		// A barrier: a later sync of n1 has run (its partial writes grow
		// with a new pod), so any repeat would have been written.
		before := n1.rec.count()
		a.pod("x", "barrier", "n1", "198.19.1.30", map[string]string{"pod": "a"})
		wait.For(t, 30*time.Second, "n1's next write", wait.True(func() bool { return n1.rec.count() > before }))
		evs, err := a.cs.EventsV1().Events("x").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for _, e := range evs.Items {
			if e.Reason == ReasonInvalid {
				count++
				if e.Series != nil {
					t.Errorf("the invalid field was reported again (series %+v)", e.Series)
				}
			}
		}
		if n != 1 || count != 1 {
			t.Errorf("%d InvalidNetworkPolicy Events (first seen %d), want 1 from n1", count, n)
		}
	})

	t.Run("policies deleted", func(t *testing.T) {
		for _, name := range []string{"deny-ingress", "allow-b", "allow-blue", "skewed"} {
			if err := a.cs.NetworkingV1().NetworkPolicies("x").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		latencies = append(latencies, waitAgree(t, a, nodes, "no policy again", map[string]bool{"y/c->x/a TCP/8080": true, "x/d->x/a TCP/81": true}))
		// Chains a write leaves unreferenced go in a second commit about a
		// second later (or with the next change): wait for it.
		wait.For(t, 30*time.Second, "no policy chain left after every policy was deleted", func() error {
			for _, n := range nodes {
				for _, f := range nft.Families {
					rs := n.fake.Ruleset(f)
					for name := range rs.Chains {
						if strings.HasPrefix(name, prefixCombinationIn) || strings.HasPrefix(name, prefixPolicy) {
							return fmt.Errorf("node %s %s: chain %s left", n.name, f, name)
						}
					}
				}
			}
			return nil
		})
	})
	t.Logf("event to agreement (programmed and observed by the test's poll): %v", latencies)

	// --network-policy=false at the next start removes the part.
	n1.stop()
	if err := n1.ctl.Delete(); err != nil {
		t.Fatal(err)
	}
	for _, f := range nft.Families {
		if rs := n1.fake.Ruleset(f); len(rs.Chains)+len(rs.Maps)+len(rs.TypedSets) != 0 {
			t.Errorf("after Delete, n1's %s table holds\n%s", f, rs)
		}
	}
}
