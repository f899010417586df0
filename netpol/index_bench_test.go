package netpol

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The scale of design §3.4: 50 nodes x 100 pods (5,000 pods, dual-stack),
// 200 namespaces x 5 policies (1,000), a third with egress, 1-2 rules of
// 1-2 peers and 1-2 ports, a tenth with an ipBlock, 20 port names, a few
// cluster-wide selectors.
const (
	benchNamespaces  = 200
	benchPodsPerNS   = 25
	benchNodes       = 50
	benchPortNames   = 20
	benchPolicyPerNS = 5
)

type benchCluster struct {
	namespaces []*Namespace
	pods       []*Pod
	policies   []*Policy
}

func benchPod(r *rand.Rand, ns string, i, n int) *Pod {
	p := &Pod{
		Namespace: ns,
		Name:      fmt.Sprintf("pod-%d", i),
		Labels:    map[string]string{"app": fmt.Sprintf("app%d", i%5), "tier": []string{"web", "db", "cache"}[i%3], "pod-template-hash": fmt.Sprintf("h%d", r.IntN(1000))},
		Node:      fmt.Sprintf("node-%d", n%benchNodes),
		Phase:     corev1.PodRunning,
		IPs: []netip.Addr{
			netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}),
			netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(n >> 16), byte(n >> 8), byte(n)}),
		},
	}
	for k := range 2 + i%2 {
		p.Ports = append(p.Ports, ContainerPort{Name: fmt.Sprintf("port-%d", (i+k)%benchPortNames), Protocol: TCP, Port: uint16(8000 + (i+k)%benchPortNames)})
	}
	return p
}

func benchPolicy(r *rand.Rand, ns string, i int) *Policy {
	appSel := func() *metav1.LabelSelector { return labelSel("app", fmt.Sprintf("app%d", r.IntN(5))) }
	peer := func() networkingv1.NetworkPolicyPeer {
		switch k := r.IntN(20); {
		case k < 2:
			return blockPeer(fmt.Sprintf("10.%d.0.0/16", r.IntN(4)), fmt.Sprintf("10.%d.%d.0/24", r.IntN(4), r.IntN(256)))
		case k < 9:
			return podPeer(appSel())
		case k < 13:
			return podNsPeer(appSel(), labelSel("team", fmt.Sprintf("t%d", r.IntN(10))))
		case k < 16:
			return nsPeer(labelSel(nsName, fmt.Sprintf("ns-%d", r.IntN(benchNamespaces))))
		case k < 18:
			return podNsPeer(labelSel("app", "monitoring"), labelSel()) // cluster-wide
		}
		return nsPeer(labelSel("env", "prod"))
	}
	ports := func() []networkingv1.NetworkPolicyPort {
		var out []networkingv1.NetworkPolicyPort
		for range 1 + r.IntN(2) {
			if r.IntN(3) == 0 {
				out = append(out, port(pTCP, fmt.Sprintf("port-%d", r.IntN(benchPortNames))))
			} else {
				out = append(out, port(pTCP, 80+r.IntN(10)))
			}
		}
		return out
	}
	var opts []npOpt
	var rules []networkingv1.NetworkPolicyIngressRule
	for range 1 + r.IntN(2) {
		var ps []networkingv1.NetworkPolicyPeer
		for range 1 + r.IntN(2) {
			ps = append(ps, peer())
		}
		rules = append(rules, in(ps, ports()...))
	}
	opts = append(opts, ingress(rules...))
	if i%3 == 0 {
		var eg []networkingv1.NetworkPolicyEgressRule
		for range 1 + r.IntN(2) {
			eg = append(eg, out(peers(peer()), ports()...))
		}
		opts = append(opts, egress(eg...))
	}
	sel := labelSel("app", fmt.Sprintf("app%d", i%5))
	if i == 0 {
		sel = labelSel()
	}
	return PolicyFromAPI(policySel(ns, fmt.Sprintf("policy-%d", i), *sel, opts...))
}

func newBenchCluster() *benchCluster {
	r := rand.New(rand.NewPCG(7, 8))
	c := &benchCluster{}
	n := 0
	for i := range benchNamespaces {
		name := fmt.Sprintf("ns-%d", i)
		ns := &Namespace{Name: name, Labels: map[string]string{nsName: name, "team": fmt.Sprintf("t%d", i%10), "env": []string{"prod", "dev"}[i%2]}}
		c.namespaces = append(c.namespaces, ns)
		for j := range benchPodsPerNS {
			n++
			c.pods = append(c.pods, benchPod(r, name, j, n))
		}
		for j := range benchPolicyPerNS {
			c.policies = append(c.policies, benchPolicy(r, name, j))
		}
	}
	return c
}

func (c *benchCluster) index() *Index {
	ix := NewIndex()
	for _, ns := range c.namespaces {
		ix.SetNamespace(ns)
	}
	for _, p := range c.pods {
		ix.SetPod(p)
	}
	for _, p := range c.policies {
		ix.SetPolicy(p)
	}
	return ix
}

func BenchmarkIndexBuild(b *testing.B) {
	c := newBenchCluster()
	var ix *Index
	for b.Loop() {
		ix = c.index()
	}
	elems := 0
	for _, k := range ix.Selectors() {
		elems += len(ix.Members(k.ID))
	}
	b.ReportMetric(float64(len(ix.Selectors())), "selectors")
	b.ReportMetric(float64(elems), "set-elements")
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ix = c.index()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-heap")
	runtime.KeepAlive(ix)
}

// BenchmarkIndexPodChurn replaces a pod by a new one (a new name, labels
// and address, as a Deployment's rollout does) and deletes the old: one op
// is one delete and one add.
func BenchmarkIndexPodChurn(b *testing.B) {
	c := newBenchCluster()
	ix := c.index()
	r := rand.New(rand.NewPCG(9, 10))
	n := len(c.pods)
	i := 0
	for b.Loop() {
		old := c.pods[i%len(c.pods)]
		n++
		p := benchPod(r, old.Namespace, i, n)
		p.Name = fmt.Sprintf("churn-%d", i)
		ix.DeletePod(old.Namespace, old.Name)
		ix.SetPod(p)
		c.pods[i%len(c.pods)] = p
		i++
	}
}

// BenchmarkIndexPodLabelChange flips one label of a pod, moving it between
// selectors.
func BenchmarkIndexPodLabelChange(b *testing.B) {
	c := newBenchCluster()
	ix := c.index()
	i := 0
	for b.Loop() {
		p := *c.pods[i%len(c.pods)]
		p.Labels = map[string]string{"app": fmt.Sprintf("app%d", (i/len(c.pods)+1)%5), "tier": p.Labels["tier"]}
		ix.SetPod(&p)
		c.pods[i%len(c.pods)] = &p
		i++
	}
}

// BenchmarkIndexPodStatusUpdate sets a pod again unchanged (status
// heartbeats): the most frequent event.
func BenchmarkIndexPodStatusUpdate(b *testing.B) {
	c := newBenchCluster()
	ix := c.index()
	i := 0
	for b.Loop() {
		p := *c.pods[i%len(c.pods)]
		ix.SetPod(&p)
		i++
	}
}

// BenchmarkIndexNamespaceLabelChange moves a namespace of 25 pods between
// teams (namespaceSelector members).
func BenchmarkIndexNamespaceLabelChange(b *testing.B) {
	c := newBenchCluster()
	ix := c.index()
	i := 0
	for b.Loop() {
		old := c.namespaces[i%len(c.namespaces)]
		ns := &Namespace{Name: old.Name, Labels: map[string]string{nsName: old.Name, "team": fmt.Sprintf("t%d", (i/len(c.namespaces)+i)%10), "env": old.Labels["env"]}}
		ix.SetNamespace(ns)
		c.namespaces[i%len(c.namespaces)] = ns
		i++
	}
}

// BenchmarkIndexPolicyUpdate replaces a policy by another version.
func BenchmarkIndexPolicyUpdate(b *testing.B) {
	c := newBenchCluster()
	ix := c.index()
	r := rand.New(rand.NewPCG(11, 12))
	versions := make([]*Policy, 64)
	for k := range versions {
		p := c.policies[k*len(c.policies)/len(versions)]
		versions[k] = benchPolicy(r, p.Namespace, k)
		versions[k].Name = p.Name
	}
	i := 0
	for b.Loop() {
		ix.SetPolicy(versions[i%len(versions)])
		i++
	}
}

// BenchmarkEvaluate is the reference evaluator on the whole cluster: what
// one `kubectl wgmesh policy trace` costs once the objects are listed.
func BenchmarkEvaluate(b *testing.B) {
	c := newBenchCluster()
	cl := &Cluster{Namespaces: c.namespaces, Pods: c.pods, Policies: c.policies}
	i := 0
	for b.Loop() {
		src, dst := c.pods[(i*7)%len(c.pods)], c.pods[(i*13+1)%len(c.pods)]
		Evaluate(cl, Conn{Src: src.IPs[0], Dst: dst.IPs[0], Proto: TCP, DPort: 80})
		i++
	}
}
