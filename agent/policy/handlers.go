package policy

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/podnet"
)

// Event handlers: each brings the index up to date and wakes the sync when
// the change matters to this node.

func (c *Controller) onPod(obj any) {
	p, ok := unwrap[*corev1.Pod](obj)
	if !ok {
		return
	}
	m := netpol.PodFromAPI(p)
	c.mu.Lock()
	key := m.Key()
	if m.Node == c.o.NodeName {
		if r, ok := c.cni[key]; ok && r.byUID && r.uid != m.UID && time.Since(r.at) < cniRecordTTL {
			// The pod a CNI ADD just put in replaced this one (an older
			// pod of the name, whose deletion the watch has not brought).
			c.mu.Unlock()
			return
		}
		c.local[key] = true
		m.IPs = c.podIPs(m)
	}
	ch := c.ix.SetPod(m)
	relevant := c.relevant(ch)
	c.mu.Unlock()
	if relevant {
		c.changed()
	}
}

func (c *Controller) onPodDelete(obj any) {
	p, ok := unwrap[*corev1.Pod](obj)
	if !ok {
		return
	}
	key := p.Namespace + "/" + p.Name
	c.mu.Lock()
	if p.Spec.NodeName == c.o.NodeName { // only this node's pods are judged at ADD
		c.tombstone(p.UID, time.Now())
	}
	if r, ok := c.cni[key]; ok && r.byUID && r.uid != p.UID {
		// An older pod of the name: a CNI ADD already put the new one in.
		c.mu.Unlock()
		return
	}
	c.forget(key)
	ch := c.ix.DeletePod(p.Namespace, p.Name)
	relevant := c.relevant(ch)
	delete(c.local, key)
	c.mu.Unlock()
	if relevant {
		c.changed()
	}
}

func (c *Controller) onNamespace(obj any) {
	if ns, ok := unwrap[*corev1.Namespace](obj); ok {
		c.mu.Lock()
		relevant := c.relevant(c.ix.SetNamespace(netpol.NamespaceFromAPI(ns)))
		c.mu.Unlock()
		if relevant {
			c.changed()
		}
	}
}

func (c *Controller) onNamespaceDelete(obj any) {
	if ns, ok := unwrap[*corev1.Namespace](obj); ok {
		c.mu.Lock()
		relevant := c.relevant(c.ix.DeleteNamespace(ns.Name))
		c.mu.Unlock()
		if relevant {
			c.changed()
		}
	}
}

func (c *Controller) onPolicy(obj any) {
	np, ok := unwrap[*networkingv1.NetworkPolicy](obj)
	if !ok {
		return
	}
	p := netpol.PolicyFromAPI(np)
	c.mu.Lock()
	c.ix.SetPolicy(p)
	key := p.Key()
	if uid := c.policies[key]; uid != np.UID {
		delete(c.reported, key) // a new policy under the old name
	}
	c.policies[key] = np.UID
	if len(p.Errors) > 0 {
		ip := invalidPolicy{namespace: np.Namespace, name: np.Name, uid: np.UID}
		for _, err := range p.Errors {
			ip.problems = append(ip.problems, err.Error())
		}
		c.invalid = append(c.invalid, ip)
	}
	c.mu.Unlock()
	c.changed()
}

// onPolicyUpdate ignores updates that leave the spec as it was (the
// generation moves with every spec change).
func (c *Controller) onPolicyUpdate(old, obj any) {
	o, ok1 := old.(*networkingv1.NetworkPolicy)
	n, ok2 := obj.(*networkingv1.NetworkPolicy)
	if ok1 && ok2 && o.UID == n.UID && o.Generation != 0 && o.Generation == n.Generation {
		return
	}
	c.onPolicy(obj)
}

func (c *Controller) onPolicyDelete(obj any) {
	np, ok := unwrap[*networkingv1.NetworkPolicy](obj)
	if !ok {
		return
	}
	c.mu.Lock()
	c.ix.DeletePolicy(np.Namespace, np.Name)
	key := np.Namespace + "/" + np.Name
	delete(c.policies, key)
	delete(c.reported, key)
	c.mu.Unlock()
	c.changed()
}

// Nodes are in the index for Snapshot (the own-node exception of
// Evaluate); no rule depends on them but this node's pod CIDRs, whose
// addresses not judged yet are dropped.
func (c *Controller) onNode(obj any) {
	n, ok := unwrap[*corev1.Node](obj)
	if !ok {
		return
	}
	c.mu.Lock()
	c.ix.SetNode(netpol.NodeFromAPI(n))
	changed := false
	if n.Name == c.o.NodeName {
		cidrs := podnet.NodeCIDRs(n)
		changed = !slices.Equal(cidrs, c.podCIDRs)
		c.podCIDRs = cidrs
	}
	c.mu.Unlock()
	if changed {
		c.changed()
	}
}

func (c *Controller) onNodeDelete(obj any) {
	if n, ok := unwrap[*corev1.Node](obj); ok {
		c.mu.Lock()
		c.ix.DeleteNode(n.Name)
		c.mu.Unlock()
	}
}

// relevant says whether an index change can change this node's rendering:
// a selector's members or a named port's tuples (sets), a policy, or the
// policies of one of this node's pods. Called with mu held, before a
// deleted pod leaves local.
func (c *Controller) relevant(ch netpol.Changes) bool {
	if len(ch.Selectors)+len(ch.NamedPorts)+len(ch.Policies) > 0 {
		return true
	}
	return slices.ContainsFunc(ch.Subjects, func(k string) bool { return c.local[k] })
}

// changed records that the index changed and wakes the sync.
func (c *Controller) changed() {
	c.mu.Lock()
	c.dirty = true
	if c.since.IsZero() {
		c.since = time.Now()
	}
	c.mu.Unlock()
	c.run.Wake("change")
}

func unwrap[T any](obj any) (T, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	v, ok := obj.(T)
	return v, ok
}
