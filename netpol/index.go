package netpol

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
)

// Index is the cluster kept up to date object by object, answering what
// the renderer needs: the pod holding an address, the members of each peer
// selector the policies use, the policies selecting a pod per direction,
// and the addresses declaring each named port. Every change says what it
// changed, so that the renderer writes only that. Set* adds or updates
// (level-based: setting an equal pod or namespace again reports no change;
// a policy set again is only listed in Changes.Policies); Delete* removes.
// Nodes feed NodeByAddr and Snapshot only: no v1 policy selects them.
// Objects passed in must not be modified afterwards. An Index is not safe
// for concurrent use.
//
// Cost: a pod change tests the pod against the selectors of its namespace
// and the namespaceSelector selectors matching its namespace, and the
// policies of its namespace; a namespace label change tests the
// namespaceSelector selectors; a policy change touches its selectors and
// the pods of its namespace.
type Index struct {
	namespaces map[string]*nsState
	pods       map[string]*podState
	nodes      map[string]*Node
	nodeAddrs  map[netip.Addr][]string
	// addrs are the selectable pods claiming each address, by key.
	addrs    map[netip.Addr][]*podState
	policies map[string]*polState
	// selectors are the peer selectors in use, by SelectorKey.ID;
	// nsSelectors those with a namespaceSelector.
	selectors   map[string]*selState
	nsSelectors map[string]*selState
	names       map[string]string // SelectorKey.Name -> ID
	// ports are the selectable pods declaring each named port.
	ports map[string]map[*podState]struct{}
}

type nsState struct {
	name   string
	ns     *Namespace // nil until seen
	labels map[string]string
	pods   map[string]*podState
	// scoped are the selectors of this namespace's podSelector-only peers,
	// nsSels the namespaceSelector selectors matching it.
	scoped, nsSels map[string]*selState
	policies       map[string]*polState
}

type podState struct {
	pod        *Pod
	selectable bool
	sels       map[*selState]struct{}
	policies   [2]map[*polState]struct{} // by Direction
}

type selState struct {
	key     SelectorKey
	ps      *PeerSelector
	refs    int
	members map[*podState]struct{}
}

type polState struct {
	pol      *Policy
	sels     []*selState // one per peer using it
	subjects map[*podState]struct{}
}

// NewIndex is an empty index.
func NewIndex() *Index {
	return &Index{
		namespaces:  map[string]*nsState{},
		pods:        map[string]*podState{},
		nodes:       map[string]*Node{},
		nodeAddrs:   map[netip.Addr][]string{},
		addrs:       map[netip.Addr][]*podState{},
		policies:    map[string]*polState{},
		selectors:   map[string]*selState{},
		nsSelectors: map[string]*selState{},
		names:       map[string]string{},
		ports:       map[string]map[*podState]struct{}{},
	}
}

// Changes says what an Index change changed.
type Changes struct {
	// Selectors are the IDs of selectors created, deleted or whose member
	// addresses changed.
	Selectors []string
	// NamedPorts are the port names whose (address, protocol, port) tuples
	// changed.
	NamedPorts []string
	// Subjects are the keys of pods whose selecting policies changed (in
	// either direction, or because the pod came, went or changed address).
	Subjects []string
	// Policies are the keys of policies set or deleted.
	Policies []string
}

// Empty says whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Selectors)+len(c.NamedPorts)+len(c.Subjects)+len(c.Policies) == 0
}

type changes struct {
	selectors, ports, subjects, policies map[string]struct{}
}

func newChanges() *changes {
	return &changes{selectors: map[string]struct{}{}, ports: map[string]struct{}{}, subjects: map[string]struct{}{}, policies: map[string]struct{}{}}
}

func (c *changes) done() Changes {
	sorted := func(m map[string]struct{}) []string {
		if len(m) == 0 {
			return nil
		}
		return slices.Sorted(maps.Keys(m))
	}
	return Changes{Selectors: sorted(c.selectors), NamedPorts: sorted(c.ports), Subjects: sorted(c.subjects), Policies: sorted(c.policies)}
}

// ns returns namespace name's state, creating it (with the labels the
// namespace would have, and the namespaceSelector selectors matching them).
func (ix *Index) ns(name string) *nsState {
	if st := ix.namespaces[name]; st != nil {
		return st
	}
	st := &nsState{
		name:     name,
		labels:   namespaceLabels(name, nil),
		pods:     map[string]*podState{},
		scoped:   map[string]*selState{},
		nsSels:   map[string]*selState{},
		policies: map[string]*polState{},
	}
	for id, s := range ix.nsSelectors {
		if s.ps.Namespaces.Matches(st.labels) {
			st.nsSels[id] = s
		}
	}
	ix.namespaces[name] = st
	return st
}

// gcNamespace forgets a namespace's state once nothing refers to it.
func (ix *Index) gcNamespace(st *nsState) {
	if st.ns == nil && len(st.pods)+len(st.scoped)+len(st.policies) == 0 {
		delete(ix.namespaces, st.name)
	}
}

// SetNamespace adds or updates a namespace.
func (ix *Index) SetNamespace(ns *Namespace) Changes {
	ch := newChanges()
	st := ix.ns(ns.Name)
	st.ns = ns
	ix.relabelNamespace(st, namespaceLabels(ns.Name, ns), ch)
	return ch.done()
}

// DeleteNamespace removes a namespace. Its pods, if any are left, keep the
// labels every namespace has (kubernetes.io/metadata.name).
func (ix *Index) DeleteNamespace(name string) Changes {
	ch := newChanges()
	st := ix.namespaces[name]
	if st == nil {
		return ch.done()
	}
	st.ns = nil
	ix.relabelNamespace(st, namespaceLabels(name, nil), ch)
	ix.gcNamespace(st)
	return ch.done()
}

func (ix *Index) relabelNamespace(st *nsState, l map[string]string, ch *changes) {
	if maps.Equal(st.labels, l) {
		return
	}
	st.labels = l
	for id, s := range ix.nsSelectors {
		now := s.ps.Namespaces.Matches(l)
		if _, was := st.nsSels[id]; was == now {
			continue
		}
		if now {
			st.nsSels[id] = s
		} else {
			delete(st.nsSels, id)
		}
		for _, ps := range st.pods {
			if ps.selectable && s.ps.Pods.Matches(ps.pod.Labels) {
				if now {
					s.members[ps], ps.sels[s] = struct{}{}, struct{}{}
				} else {
					delete(s.members, ps)
					delete(ps.sels, s)
				}
				ch.selectors[id] = struct{}{}
			}
		}
	}
}

// SetNode adds or updates a node.
func (ix *Index) SetNode(n *Node) {
	ix.DeleteNode(n.Name)
	ix.nodes[n.Name] = n
	for _, a := range n.Addrs {
		ix.nodeAddrs[a] = insertSorted(ix.nodeAddrs[a], n.Name)
	}
}

// DeleteNode removes a node.
func (ix *Index) DeleteNode(name string) {
	n := ix.nodes[name]
	if n == nil {
		return
	}
	delete(ix.nodes, name)
	for _, a := range n.Addrs {
		l := slices.DeleteFunc(ix.nodeAddrs[a], func(s string) bool { return s == name })
		if len(l) == 0 {
			delete(ix.nodeAddrs, a)
		} else {
			ix.nodeAddrs[a] = l
		}
	}
}

func insertSorted(l []string, s string) []string {
	i, found := slices.BinarySearch(l, s)
	if found {
		return l
	}
	return slices.Insert(l, i, s)
}

// SetPod adds or updates a pod.
func (ix *Index) SetPod(p *Pod) Changes {
	ch := newChanges()
	key := p.Key()
	nst := ix.ns(p.Namespace)
	st := ix.pods[key]
	if st == nil {
		st = &podState{sels: map[*selState]struct{}{}, policies: [2]map[*polState]struct{}{{}, {}}}
		ix.pods[key] = st
		nst.pods[key] = st
	}
	old, oldSelectable := st.pod, st.selectable
	selectable := p.Selectable()
	moved := old == nil || oldSelectable != selectable || !slices.Equal(old.IPs, p.IPs)
	st.pod, st.selectable = p, selectable

	// Addresses and named ports.
	if moved {
		if old != nil && oldSelectable {
			ix.unclaim(st, old.IPs)
		}
		if selectable {
			ix.claim(st, p.IPs)
		}
	}
	if moved || !slices.Equal(old.Ports, p.Ports) {
		if old != nil && oldSelectable {
			for _, cp := range old.Ports {
				ix.unport(st, cp.Name)
				ch.ports[cp.Name] = struct{}{}
			}
		}
		if selectable {
			for _, cp := range p.Ports {
				ix.port(st, cp.Name)
				ch.ports[cp.Name] = struct{}{}
			}
		}
	}

	// Peer selectors.
	want := map[*selState]struct{}{}
	if selectable {
		for _, s := range nst.scoped {
			if s.ps.Pods.Matches(p.Labels) {
				want[s] = struct{}{}
			}
		}
		for _, s := range nst.nsSels {
			if s.ps.Pods.Matches(p.Labels) {
				want[s] = struct{}{}
			}
		}
	}
	for s := range st.sels {
		if _, ok := want[s]; !ok {
			delete(st.sels, s)
			delete(s.members, st)
			ch.selectors[s.key.ID] = struct{}{}
		} else if moved {
			ch.selectors[s.key.ID] = struct{}{}
		}
	}
	for s := range want {
		if _, ok := st.sels[s]; !ok {
			st.sels[s] = struct{}{}
			s.members[st] = struct{}{}
			ch.selectors[s.key.ID] = struct{}{}
		}
	}

	// Selecting policies.
	changed := moved
	for _, pol := range nst.policies {
		if ix.subject(pol, st) {
			changed = true
		}
	}
	if changed {
		ch.subjects[key] = struct{}{}
	}
	return ch.done()
}

// subject brings pod st's membership in pol's subjects up to date and says
// whether its policies changed.
func (ix *Index) subject(pol *polState, st *podState) bool {
	sel := st.selectable && pol.pol.PodSelector.Matches(st.pod.Labels)
	changed := false
	for _, d := range []Direction{Ingress, Egress} {
		want := sel && pol.pol.Has(d)
		if _, has := st.policies[d][pol]; has != want {
			changed = true
			if want {
				st.policies[d][pol] = struct{}{}
			} else {
				delete(st.policies[d], pol)
			}
		}
	}
	if sel {
		pol.subjects[st] = struct{}{}
	} else {
		delete(pol.subjects, st)
	}
	return changed
}

func (ix *Index) claim(st *podState, ips []netip.Addr) {
	for _, a := range ips {
		l := ix.addrs[a]
		i, _ := slices.BinarySearchFunc(l, st.pod.Key(), func(x *podState, k string) int { return cmp.Compare(x.pod.Key(), k) })
		ix.addrs[a] = slices.Insert(l, i, st)
	}
}

func (ix *Index) unclaim(st *podState, ips []netip.Addr) {
	for _, a := range ips {
		l := slices.DeleteFunc(ix.addrs[a], func(x *podState) bool { return x == st })
		if len(l) == 0 {
			delete(ix.addrs, a)
		} else {
			ix.addrs[a] = l
		}
	}
}

func (ix *Index) port(st *podState, name string) {
	m := ix.ports[name]
	if m == nil {
		m = map[*podState]struct{}{}
		ix.ports[name] = m
	}
	m[st] = struct{}{}
}

func (ix *Index) unport(st *podState, name string) {
	if m := ix.ports[name]; m != nil {
		delete(m, st)
		if len(m) == 0 {
			delete(ix.ports, name)
		}
	}
}

// DeletePod removes a pod.
func (ix *Index) DeletePod(namespace, name string) Changes {
	ch := newChanges()
	key := namespace + "/" + name
	st := ix.pods[key]
	if st == nil {
		return ch.done()
	}
	if st.selectable {
		ix.unclaim(st, st.pod.IPs)
		for _, cp := range st.pod.Ports {
			ix.unport(st, cp.Name)
			ch.ports[cp.Name] = struct{}{}
		}
	}
	for s := range st.sels {
		delete(s.members, st)
		ch.selectors[s.key.ID] = struct{}{}
	}
	nst := ix.namespaces[namespace]
	for _, pol := range nst.policies {
		delete(pol.subjects, st)
	}
	ch.subjects[key] = struct{}{}
	delete(ix.pods, key)
	delete(nst.pods, key)
	ix.gcNamespace(nst)
	return ch.done()
}

// SetPolicy adds or updates a policy.
func (ix *Index) SetPolicy(p *Policy) Changes {
	ch := newChanges()
	key := p.Key()
	ch.policies[key] = struct{}{}
	nst := ix.ns(p.Namespace)
	pol := ix.policies[key]
	if pol == nil {
		pol = &polState{subjects: map[*podState]struct{}{}}
		ix.policies[key] = pol
		nst.policies[key] = pol
	}
	// Take the new selectors before releasing the old ones, so that a
	// selector both use is not rebuilt.
	oldSels := pol.sels
	pol.sels = nil
	for _, d := range []Direction{Ingress, Egress} {
		for _, r := range p.Rules(d) {
			for _, peer := range r.Peers {
				if peer.Pods != nil && peer.Err == nil {
					pol.sels = append(pol.sels, ix.acquire(peer.Pods, ch))
				}
			}
		}
	}
	for _, s := range oldSels {
		ix.release(s, ch)
	}
	pol.pol = p
	for _, st := range nst.pods {
		if ix.subject(pol, st) {
			ch.subjects[st.pod.Key()] = struct{}{}
		}
	}
	return ch.done()
}

// DeletePolicy removes a policy.
func (ix *Index) DeletePolicy(namespace, name string) Changes {
	ch := newChanges()
	key := namespace + "/" + name
	pol := ix.policies[key]
	if pol == nil {
		return ch.done()
	}
	ch.policies[key] = struct{}{}
	for _, s := range pol.sels {
		ix.release(s, ch)
	}
	for st := range pol.subjects {
		for d := range st.policies {
			if _, ok := st.policies[d][pol]; ok {
				delete(st.policies[d], pol)
				ch.subjects[st.pod.Key()] = struct{}{}
			}
		}
	}
	nst := ix.namespaces[namespace]
	delete(ix.policies, key)
	delete(nst.policies, key)
	ix.gcNamespace(nst)
	return ch.done()
}

// acquire takes a reference on the selector, building it on first use.
func (ix *Index) acquire(ps *PeerSelector, ch *changes) *selState {
	if s := ix.selectors[ps.Key.ID]; s != nil {
		s.refs++
		return s
	}
	key := ps.Key
	if other, taken := ix.names[key.Name]; taken && other != key.ID {
		// Two selectors with one 40-bit hash: give this one a name that is
		// all hash.
		key.Name = (PeersPrefix + idHash(key.ID))[:MaxNameLen]
	}
	s := &selState{key: key, ps: ps, refs: 1, members: map[*podState]struct{}{}}
	ix.selectors[key.ID] = s
	ix.names[key.Name] = key.ID
	ch.selectors[key.ID] = struct{}{}
	add := func(nst *nsState) {
		for _, st := range nst.pods {
			if st.selectable && ps.Pods.Matches(st.pod.Labels) {
				s.members[st], st.sels[s] = struct{}{}, struct{}{}
			}
		}
	}
	if ps.Namespace != "" {
		nst := ix.ns(ps.Namespace)
		nst.scoped[key.ID] = s
		add(nst)
		return s
	}
	ix.nsSelectors[key.ID] = s
	for _, nst := range ix.namespaces {
		if ps.Namespaces.Matches(nst.labels) {
			nst.nsSels[key.ID] = s
			add(nst)
		}
	}
	return s
}

// release drops a reference on the selector, forgetting it with the last.
func (ix *Index) release(s *selState, ch *changes) {
	s.refs--
	if s.refs > 0 {
		return
	}
	id := s.key.ID
	delete(ix.selectors, id)
	delete(ix.names, s.key.Name)
	for st := range s.members {
		delete(st.sels, s)
	}
	if s.ps.Namespace != "" {
		nst := ix.namespaces[s.ps.Namespace]
		delete(nst.scoped, id)
		ix.gcNamespace(nst)
	} else {
		delete(ix.nsSelectors, id)
		for _, nst := range ix.namespaces {
			delete(nst.nsSels, id)
		}
	}
	ch.selectors[id] = struct{}{}
}

// PodByAddr is the selectable pod holding address a (the first by key if
// several claim it, as Evaluate decides).
func (ix *Index) PodByAddr(a netip.Addr) (*Pod, bool) {
	if l := ix.addrs[a.Unmap()]; len(l) > 0 {
		return l[0].pod, true
	}
	return nil, false
}

// NodeByAddr is the node with host address a (the first by name).
func (ix *Index) NodeByAddr(a netip.Addr) (string, bool) {
	if l := ix.nodeAddrs[a.Unmap()]; len(l) > 0 {
		return l[0], true
	}
	return "", false
}

// Pod is the pod with key "<namespace>/<name>".
func (ix *Index) Pod(key string) (*Pod, bool) {
	if st := ix.pods[key]; st != nil {
		return st.pod, true
	}
	return nil, false
}

// Policy is the policy with key "<namespace>/<name>".
func (ix *Index) Policy(key string) (*Policy, bool) {
	if pol := ix.policies[key]; pol != nil {
		return pol.pol, true
	}
	return nil, false
}

// Selectors are the keys of the peer selectors the policies use, by ID.
// Names are unique (SelectorKey.Name, or all hash on a hash collision).
func (ix *Index) Selectors() []SelectorKey {
	out := make([]SelectorKey, 0, len(ix.selectors))
	for _, s := range ix.selectors {
		out = append(out, s.key)
	}
	slices.SortFunc(out, func(a, b SelectorKey) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Selector is the key of the selector with this ID, if policies use it.
func (ix *Index) Selector(id string) (SelectorKey, bool) {
	if s := ix.selectors[id]; s != nil {
		return s.key, true
	}
	return SelectorKey{}, false
}

// Members are the addresses of the pods the selector selects, sorted
// (IPv4 first); nil for an unknown selector.
func (ix *Index) Members(id string) []netip.Addr {
	s := ix.selectors[id]
	if s == nil {
		return nil
	}
	var out []netip.Addr
	for st := range s.members {
		out = append(out, st.pod.IPs...)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// MemberPods are the keys of the pods the selector selects, sorted.
func (ix *Index) MemberPods(id string) []string {
	s := ix.selectors[id]
	if s == nil {
		return nil
	}
	return podKeys(s.members)
}

func podKeys(m map[*podState]struct{}) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for st := range m {
		out = append(out, st.pod.Key())
	}
	slices.Sort(out)
	return out
}

// PoliciesFor are the keys of the policies selecting the pod in direction
// d, sorted: none means the pod is not isolated in d.
func (ix *Index) PoliciesFor(podKey string, d Direction) []string {
	st := ix.pods[podKey]
	if st == nil || len(st.policies[d]) == 0 {
		return nil
	}
	out := make([]string, 0, len(st.policies[d]))
	for pol := range st.policies[d] {
		out = append(out, pol.pol.Key())
	}
	slices.Sort(out)
	return out
}

// SelectedPods are the keys of the pods the policy selects in direction d,
// sorted.
func (ix *Index) SelectedPods(policyKey string, d Direction) []string {
	pol := ix.policies[policyKey]
	if pol == nil || !pol.pol.Has(d) {
		return nil
	}
	return podKeys(pol.subjects)
}

// PortTuple is an address declaring a named port: the element of a named
// port's set (addr . l4proto . port).
type PortTuple struct {
	Addr     netip.Addr
	Protocol Protocol
	Port     uint16
}

// NamedPort are the tuples of the selectable pods declaring the port name,
// sorted.
func (ix *Index) NamedPort(name string) []PortTuple {
	var out []PortTuple
	for st := range ix.ports[name] {
		for _, cp := range st.pod.Ports {
			if cp.Name != name {
				continue
			}
			for _, a := range st.pod.IPs {
				out = append(out, PortTuple{Addr: a, Protocol: cp.Protocol, Port: cp.Port})
			}
		}
	}
	slices.SortFunc(out, func(a, b PortTuple) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	})
	return slices.Compact(out)
}

// NamedPorts are the port names some selectable pod declares, sorted.
func (ix *Index) NamedPorts() []string { return slices.Sorted(maps.Keys(ix.ports)) }

// Snapshot is the index's content as a Cluster (each list sorted by key),
// for Evaluate.
func (ix *Index) Snapshot() *Cluster {
	c := &Cluster{}
	for _, st := range ix.namespaces {
		if st.ns != nil {
			c.Namespaces = append(c.Namespaces, st.ns)
		}
	}
	for _, st := range ix.pods {
		c.Pods = append(c.Pods, st.pod)
	}
	for _, n := range ix.nodes {
		c.Nodes = append(c.Nodes, n)
	}
	for _, pol := range ix.policies {
		c.Policies = append(c.Policies, pol.pol)
	}
	slices.SortFunc(c.Namespaces, func(a, b *Namespace) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(c.Pods, func(a, b *Pod) int { return cmp.Compare(a.Key(), b.Key()) })
	slices.SortFunc(c.Nodes, func(a, b *Node) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(c.Policies, func(a, b *Policy) int { return cmp.Compare(a.Key(), b.Key()) })
	return c
}
