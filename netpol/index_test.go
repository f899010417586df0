package netpol

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func mustPolicy(t testing.TB, np *networkingv1.NetworkPolicy) *Policy {
	t.Helper()
	p := PolicyFromAPI(np)
	if len(p.Errors) > 0 {
		t.Fatalf("policy %s: %v", p.Key(), p.Errors)
	}
	return p
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestIndexQueries(t *testing.T) {
	ix := NewIndex()
	for _, n := range []int{1, 2} {
		node := testNode(n)
		ix.SetNode(NodeFromAPI(&node))
	}
	for _, name := range testNamespaces {
		ns := testNamespace(name)
		ix.SetNamespace(NamespaceFromAPI(&ns))
	}
	for _, k := range []string{"x/a", "x/b", "y/a", "y/b"} {
		p := testPod(k)
		ix.SetPod(PodFromAPI(&p))
	}
	h := hostNetworkPod("x/h", 2)
	ix.SetPod(PodFromAPI(&h))
	s := podWith("x/s", corev1.PodSucceeded, "10.244.1.99", "pod", "b")
	ix.SetPod(PodFromAPI(&s))

	fromB := mustPolicy(t, policy("x", "from-b", []string{"pod", "a"}, ingress(in(peers(podPeer(labelSel("pod", "b")))))))
	ch := ix.SetPolicy(fromB)
	selB := fromB.IngressRules[0].Peers[0].Pods.Key
	if want := []string{selB.ID}; !reflect.DeepEqual(ch.Selectors, want) {
		t.Errorf("SetPolicy changed selectors %v, want %v", ch.Selectors, want)
	}
	if want := []string{"x/a"}; !reflect.DeepEqual(ch.Subjects, want) {
		t.Errorf("SetPolicy changed subjects %v, want %v", ch.Subjects, want)
	}
	if got, want := ix.Members(selB.ID), addrs("10.244.2.12", "fd00:10:244:2::12"); !reflect.DeepEqual(got, want) {
		t.Errorf("members of %s: %v, want %v (the Succeeded pod labelled pod=b is none)", selB.ID, got, want)
	}
	if got := ix.PoliciesFor("x/a", Ingress); !reflect.DeepEqual(got, []string{"x/from-b"}) {
		t.Errorf("PoliciesFor(x/a, ingress) = %v", got)
	}
	if got := ix.PoliciesFor("x/a", Egress); got != nil {
		t.Errorf("PoliciesFor(x/a, egress) = %v, want none", got)
	}
	if got := ix.SelectedPods("x/from-b", Ingress); !reflect.DeepEqual(got, []string{"x/a"}) {
		t.Errorf("SelectedPods = %v", got)
	}
	if p, ok := ix.PodByAddr(netip.MustParseAddr("fd00:10:244:1::11")); !ok || p.Key() != "x/a" {
		t.Errorf("PodByAddr(x/a's IPv6) = %v, %v", p, ok)
	}
	if p, ok := ix.PodByAddr(nodeIP(2)); ok {
		t.Errorf("PodByAddr(node IP) = %v: a hostNetwork pod is not selectable", p.Key())
	}
	if p, ok := ix.PodByAddr(netip.MustParseAddr("10.244.1.99")); ok {
		t.Errorf("PodByAddr = %v: a Succeeded pod's address is released", p.Key())
	}
	if n, ok := ix.NodeByAddr(netip.MustParseAddr("10.244.2.1")); !ok || n != "n2" {
		t.Errorf("NodeByAddr(n2's gateway) = %q, %v", n, ok)
	}
	if got := ix.NamedPort("serve-80-udp"); len(got) != 8 || got[0] != (PortTuple{Addr: netip.MustParseAddr("10.244.1.11"), Protocol: UDP, Port: 80}) {
		t.Errorf("NamedPort(serve-80-udp) = %v", got)
	}

	// A second policy sharing the selector: one set, two references.
	fromB2 := mustPolicy(t, policy("x", "from-b-too", []string{"pod", "b"}, ingress(in(peers(podPeer(labelSel("pod", "b")))))))
	if ch := ix.SetPolicy(fromB2); len(ch.Selectors) != 0 {
		t.Errorf("a selector already in use changed: %v", ch.Selectors)
	}
	if ch := ix.DeletePolicy("x", "from-b"); len(ch.Selectors) != 0 || !reflect.DeepEqual(ch.Subjects, []string{"x/a"}) {
		t.Errorf("deleting one user: %+v", ch)
	}
	if _, ok := ix.Selector(selB.ID); !ok {
		t.Fatalf("selector gone while x/from-b-too uses it")
	}
	if ch := ix.DeletePolicy("x", "from-b-too"); !reflect.DeepEqual(ch.Selectors, []string{selB.ID}) {
		t.Errorf("deleting the last user changed selectors %v", ch.Selectors)
	}
	if len(ix.Selectors()) != 0 {
		t.Errorf("selectors left: %v", ix.Selectors())
	}

	// Level-based: the same object again changes nothing.
	ix.SetPolicy(fromB)
	a := testPod("x/a")
	if ch := ix.SetPod(PodFromAPI(&a)); !ch.Empty() {
		t.Errorf("setting the same pod again: %+v", ch)
	}
	ns := testNamespace("y")
	if ch := ix.SetNamespace(NamespaceFromAPI(&ns)); !ch.Empty() {
		t.Errorf("setting the same namespace again: %+v", ch)
	}
	if ch := ix.SetPolicy(mustPolicy(t, policy("x", "from-b", []string{"pod", "a"}, ingress(in(peers(podPeer(labelSel("pod", "b")))))))); len(ch.Selectors)+len(ch.Subjects) != 0 {
		t.Errorf("setting the same policy again: %+v", ch)
	}
	// A Namespace without the default label still has it.
	if ch := ix.SetNamespace(&Namespace{Name: "y", Labels: map[string]string{"team": "red"}}); len(ch.Selectors) != 0 {
		t.Errorf("relabelling y touched %v", ch.Selectors)
	}
}

func TestIndexNameCollision(t *testing.T) {
	ix := NewIndex()
	a := mustPolicy(t, policy("x", "a", nil, ingress(in(peers(podPeer(labelSel("pod", "a")))))))
	b := mustPolicy(t, policy("x", "b", nil, ingress(in(peers(podPeer(labelSel("pod", "b")))))))
	b.IngressRules[0].Peers[0].Pods.Key.Name = a.IngressRules[0].Peers[0].Pods.Key.Name
	ix.SetPolicy(a)
	ix.SetPolicy(b)
	keys := ix.Selectors()
	if len(keys) != 2 || keys[0].Name == keys[1].Name || len(keys[0].Name) > MaxNameLen || len(keys[1].Name) > MaxNameLen {
		t.Errorf("two selectors with one hash: %v", keys)
	}
}

func TestSelectorKeys(t *testing.T) {
	key := func(ns string, pods, nss *metav1.LabelSelector) SelectorKey {
		var p networkingv1.NetworkPolicyPeer
		p.PodSelector, p.NamespaceSelector = pods, nss
		pol := mustPolicy(t, policy(ns, "p", nil, ingress(in(peers(p)))))
		return pol.IngressRules[0].Peers[0].Pods.Key
	}
	twoExprs := func(order bool) *metav1.LabelSelector {
		e := []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: opIn, Values: []string{"web", "api"}},
			{Key: "app", Operator: metav1.LabelSelectorOpExists},
		}
		if order {
			e[0], e[1] = e[1], e[0]
			e[1].Values = []string{"api", "web"}
		}
		return &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a", "zone": "1"}, MatchExpressions: e}
	}
	k1, k2 := key("x", twoExprs(false), nil), key("x", twoExprs(true), nil)
	if k1 != k2 {
		t.Errorf("one selector written two ways has two keys: %v, %v", k1, k2)
	}
	if k3 := key("y", twoExprs(false), nil); k3.ID == k1.ID || k3.Name == k1.Name {
		t.Errorf("the same podSelector in another namespace shares a key: %v, %v", k1, k3)
	}
	if a, b := key("x", nil, labelSel()), key("y", labelSel(), labelSel()); a != b {
		t.Errorf("namespaceSelector {} with and without podSelector {}: %v, %v", a, b)
	}
	for _, k := range []SelectorKey{
		k1,
		key("x", labelSel("pod", "b"), nil),
		key("x", nil, labelSel(nsName, "a-very-long-namespace-name-indeed")),
		key("a-very-long-namespace-name-indeed-and-more", exprSel("app.kubernetes.io/name", notIn, "x", "y"), nil),
	} {
		t.Logf("%s  %s", k.Name, k.ID)
		n := len(PeersPrefix)
		if len(k.Name) > MaxNameLen || !strings.HasPrefix(k.Name, PeersPrefix) || len(k.Name) < n+hashLen+2 || k.Name[n+hashLen] != '-' {
			t.Errorf("name %q: want %s<%d hash characters>-<readable>, at most %d characters", k.Name, PeersPrefix, hashLen, MaxNameLen)
		}
		if strings.IndexFunc(k.Name, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_.-", r))
		}) >= 0 {
			t.Errorf("name %q has characters an nft identifier cannot", k.Name)
		}
	}
	if got := key("x", labelSel("pod", "b"), nil).Name; !strings.HasSuffix(got, "-x/pod_b") {
		t.Errorf("name %q, want it to end in -x/pod_b", got)
	}
}

// indexView is everything an Index answers, for comparing two of them.
type indexView struct {
	Selectors  map[string]selectorView
	Subjects   map[string][2][]string
	Selected   map[string][2][]string
	NamedPorts map[string][]PortTuple
	Addrs      map[netip.Addr]string
	Snapshot   *Cluster
}

type selectorView struct {
	Name    string
	Members []netip.Addr
	Pods    []string
}

func viewOf(ix *Index) indexView {
	v := indexView{Selectors: map[string]selectorView{}, Subjects: map[string][2][]string{}, Selected: map[string][2][]string{}, NamedPorts: map[string][]PortTuple{}, Addrs: map[netip.Addr]string{}, Snapshot: ix.Snapshot()}
	for _, k := range ix.Selectors() {
		v.Selectors[k.ID] = selectorView{Name: k.Name, Members: ix.Members(k.ID), Pods: ix.MemberPods(k.ID)}
	}
	for _, p := range v.Snapshot.Pods {
		v.Subjects[p.Key()] = [2][]string{ix.PoliciesFor(p.Key(), Ingress), ix.PoliciesFor(p.Key(), Egress)}
		for _, a := range p.IPs {
			if q, ok := ix.PodByAddr(a); ok {
				v.Addrs[a] = q.Key()
			}
		}
	}
	for _, pol := range v.Snapshot.Policies {
		v.Selected[pol.Key()] = [2][]string{ix.SelectedPods(pol.Key(), Ingress), ix.SelectedPods(pol.Key(), Egress)}
	}
	for _, name := range ix.NamedPorts() {
		v.NamedPorts[name] = ix.NamedPort(name)
	}
	return v
}

// bruteView is what the index should answer, computed from a Cluster
// directly with the model's own predicates.
func bruteView(c *Cluster) indexView {
	v := indexView{Selectors: map[string]selectorView{}, Subjects: map[string][2][]string{}, Selected: map[string][2][]string{}, NamedPorts: map[string][]PortTuple{}, Addrs: map[netip.Addr]string{}, Snapshot: c}
	w := newWorld(c)
	for _, pol := range c.Policies {
		for _, d := range []Direction{Ingress, Egress} {
			for _, r := range pol.Rules(d) {
				for _, peer := range r.Peers {
					if peer.Pods == nil || peer.Err != nil {
						continue
					}
					sv := selectorView{Name: peer.Pods.Key.Name}
					for _, p := range c.Pods {
						if peer.Pods.Matches(p, w.nsLabels(p.Namespace)) {
							sv.Members = append(sv.Members, p.IPs...)
							sv.Pods = append(sv.Pods, p.Key())
						}
					}
					slices.SortFunc(sv.Members, netip.Addr.Compare)
					sv.Members = slices.Compact(sv.Members)
					slices.Sort(sv.Pods)
					v.Selectors[peer.Pods.Key.ID] = sv
				}
			}
		}
	}
	for _, p := range c.Pods {
		var subj [2][]string
		for _, pol := range c.Policies {
			for _, d := range []Direction{Ingress, Egress} {
				if p.Selectable() && pol.Namespace == p.Namespace && pol.Has(d) && pol.PodSelector.Matches(p.Labels) {
					subj[d] = append(subj[d], pol.Key())
				}
			}
		}
		v.Subjects[p.Key()] = subj
		for _, a := range p.IPs {
			if r := w.resolve(a, ""); r.pod != nil {
				v.Addrs[a] = r.Pod
			}
		}
		if p.Selectable() {
			for _, cp := range p.Ports {
				for _, a := range p.IPs {
					v.NamedPorts[cp.Name] = append(v.NamedPorts[cp.Name], PortTuple{Addr: a, Protocol: cp.Protocol, Port: cp.Port})
				}
			}
		}
	}
	for name, l := range v.NamedPorts {
		slices.SortFunc(l, func(a, b PortTuple) int {
			if c := a.Addr.Compare(b.Addr); c != 0 {
				return c
			}
			if a.Protocol != b.Protocol {
				return int(a.Protocol) - int(b.Protocol)
			}
			return int(a.Port) - int(b.Port)
		})
		v.NamedPorts[name] = slices.Compact(l)
	}
	for _, pol := range c.Policies {
		var sel [2][]string
		for _, d := range []Direction{Ingress, Egress} {
			for _, p := range c.Pods {
				if slices.Contains(v.Subjects[p.Key()][d], pol.Key()) {
					sel[d] = append(sel[d], p.Key())
				}
			}
		}
		v.Selected[pol.Key()] = sel
	}
	return v
}

// objectsGen makes random versions of a fixed set of objects.
type objectsGen struct{ gen }

func (g objectsGen) namespace() *Namespace {
	ns := testNamespace(g.pick("x", "y", "z", "w"))
	ns.Labels["team"] = g.pick("red", "blue")
	if g.chance(0.3) {
		ns.Labels["env"] = "prod"
	}
	n := NamespaceFromAPI(&ns)
	if g.chance(0.2) {
		delete(n.Labels, LabelNamespaceName) // as a caller might build it
	}
	return n
}

func (g objectsGen) pod() *Pod {
	i := g.r.IntN(12)
	p := &Pod{
		Namespace: g.pick("x", "y", "z", "w"),
		Name:      fmt.Sprintf("p%d", i),
		Labels:    map[string]string{"app": g.pick("a", "b", "c")},
		Node:      g.pick("n1", "n2"),
		Phase:     corev1.PodRunning,
	}
	if g.chance(0.4) {
		p.Labels["tier"] = g.pick("web", "db")
	}
	// Addresses from a small pool, so that pods swap and share them.
	p.IPs = []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.244.1.%d", 10+g.r.IntN(16)))}
	if g.chance(0.5) {
		p.IPs = append(p.IPs, netip.MustParseAddr(fmt.Sprintf("fd00::%d", 10+g.r.IntN(16))))
	}
	switch g.r.IntN(10) {
	case 0:
		p.HostNetwork = true
	case 1:
		p.Phase = corev1.PodSucceeded
	case 2:
		p.IPs = nil
	}
	for _, cp := range []ContainerPort{{"http", TCP, 80}, {"http", TCP, 8080}, {"dns", UDP, 53}, {"metrics", TCP, 9000}} {
		if g.chance(0.4) && !slices.ContainsFunc(p.Ports, func(x ContainerPort) bool { return x.Name == cp.Name }) {
			p.Ports = append(p.Ports, cp)
		}
	}
	return p
}

func TestIndexRandomIncrementalEqualsRebuild(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	g := objectsGen{gen{r}}
	rounds, steps := 40, 150
	if testing.Short() {
		rounds = 10
	}
	namespaces := map[string]*Namespace{}
	pods := map[string]*Pod{}
	policies := map[string]*Policy{}
	nodes := map[string]*Node{}
	for round := range rounds {
		clear(namespaces)
		clear(pods)
		clear(policies)
		clear(nodes)
		ix := NewIndex()
		for step := range steps {
			before := viewOf(ix)
			var ch Changes
			var op string
			switch k := r.IntN(20); {
			case k < 2:
				ns := g.namespace()
				namespaces[ns.Name] = ns
				op, ch = "set namespace "+ns.Name, ix.SetNamespace(ns)
			case k < 3:
				name := g.pick("x", "y", "z", "w")
				delete(namespaces, name)
				op, ch = "delete namespace "+name, ix.DeleteNamespace(name)
			case k < 10:
				p := g.pod()
				pods[p.Key()] = p
				op, ch = "set pod "+p.Key(), ix.SetPod(p)
			case k < 12:
				key := fmt.Sprintf("%s/p%d", g.pick("x", "y", "z", "w"), r.IntN(12))
				delete(pods, key)
				ns, name, _ := strings.Cut(key, "/")
				op, ch = "delete pod "+key, ix.DeletePod(ns, name)
			case k < 16:
				np := g.policy(r.IntN(8))
				np.Namespace = g.pick("x", "y", "z", "w")
				p := PolicyFromAPI(&np)
				policies[p.Key()] = p
				op, ch = "set policy "+p.Key(), ix.SetPolicy(p)
			case k < 18:
				key := fmt.Sprintf("%s/p%d", g.pick("x", "y", "z", "w"), r.IntN(8))
				delete(policies, key)
				ns, name, _ := strings.Cut(key, "/")
				op, ch = "delete policy "+key, ix.DeletePolicy(ns, name)
			case k < 19:
				node := testNode(1 + r.IntN(2))
				if r.IntN(2) == 0 {
					node.Status.Addresses[0].Address = "192.168.9.9"
				}
				n := NodeFromAPI(&node)
				nodes[n.Name] = n
				op = "set node " + n.Name
				ix.SetNode(n)
			default:
				name := g.pick("n1", "n2")
				delete(nodes, name)
				op = "delete node " + name
				ix.DeleteNode(name)
			}
			after := viewOf(ix)
			where := fmt.Sprintf("round %d step %d (%s)", round, step, op)

			rebuilt := NewIndex()
			for _, k := range slices.Sorted(maps.Keys(namespaces)) {
				rebuilt.SetNamespace(namespaces[k])
			}
			for _, k := range slices.Sorted(maps.Keys(nodes)) {
				rebuilt.SetNode(nodes[k])
			}
			for _, k := range slices.Sorted(maps.Keys(pods)) {
				rebuilt.SetPod(pods[k])
			}
			for _, k := range slices.Sorted(maps.Keys(policies)) {
				rebuilt.SetPolicy(policies[k])
			}
			if rv := viewOf(rebuilt); !reflect.DeepEqual(after, rv) {
				t.Fatalf("%s: the incremental index differs from a rebuild:\n%s", where, diffViews(after, rv))
			}
			if bv := bruteView(after.Snapshot); !reflect.DeepEqual(after, bv) {
				t.Fatalf("%s: the index differs from the model's predicates:\n%s", where, diffViews(after, bv))
			}
			checkChanges(t, where, before, after, ch)
			if len(ix.namespaces) > 4 {
				t.Fatalf("%s: %d namespace states kept", where, len(ix.namespaces))
			}
		}
		// Deleting everything leaves nothing behind.
		for k := range pods {
			ns, name, _ := strings.Cut(k, "/")
			ix.DeletePod(ns, name)
		}
		for k := range policies {
			ns, name, _ := strings.Cut(k, "/")
			ix.DeletePolicy(ns, name)
		}
		for k := range namespaces {
			ix.DeleteNamespace(k)
		}
		for k := range nodes {
			ix.DeleteNode(k)
		}
		if len(ix.namespaces)+len(ix.pods)+len(ix.addrs)+len(ix.policies)+len(ix.selectors)+len(ix.nsSelectors)+len(ix.names)+len(ix.ports)+len(ix.nodes)+len(ix.nodeAddrs) != 0 {
			t.Fatalf("round %d: state left after deleting everything: %+v", round, ix)
		}
	}
}

// checkChanges checks that a change reported everything that changed.
func checkChanges(t *testing.T, where string, before, after indexView, ch Changes) {
	t.Helper()
	for id := range mergeKeys(before.Selectors, after.Selectors) {
		b, inB := before.Selectors[id]
		a, inA := after.Selectors[id]
		if (inA != inB || !slices.Equal(a.Members, b.Members)) && !slices.Contains(ch.Selectors, id) {
			t.Fatalf("%s: selector %s changed (%v -> %v) but Changes.Selectors = %v", where, id, b.Members, a.Members, ch.Selectors)
		}
	}
	for name := range mergeKeys(before.NamedPorts, after.NamedPorts) {
		if !slices.Equal(before.NamedPorts[name], after.NamedPorts[name]) && !slices.Contains(ch.NamedPorts, name) {
			t.Fatalf("%s: named port %s changed but Changes.NamedPorts = %v", where, name, ch.NamedPorts)
		}
	}
	for key := range mergeKeys(before.Subjects, after.Subjects) {
		if !reflect.DeepEqual(before.Subjects[key], after.Subjects[key]) && !slices.Contains(ch.Subjects, key) {
			t.Fatalf("%s: pod %s's policies changed (%v -> %v) but Changes.Subjects = %v", where, key, before.Subjects[key], after.Subjects[key], ch.Subjects)
		}
	}
}

func mergeKeys[K comparable, V any](a, b map[K]V) map[K]bool {
	out := map[K]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func diffViews(a, b indexView) string {
	var out []string
	ra, rb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range ra.NumField() {
		fa, fb := ra.Field(i).Interface(), rb.Field(i).Interface()
		if !reflect.DeepEqual(fa, fb) {
			out = append(out, fmt.Sprintf("%s:\n  got  %+v\n  want %+v", ra.Type().Field(i).Name, fa, fb))
		}
	}
	return strings.Join(out, "\n")
}
