package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/nft"
)

// What the controller tells: gauges, the drop counters, br_netfilter's
// state, invalid policies and failures (Events).

// setGauges counts the policies and this node's isolated pods (mu held).
func (c *Controller) setGauges() {
	c.metrics.Policies.Set(float64(len(c.policies)))
	for _, d := range []netpol.Direction{netpol.Ingress, netpol.Egress} {
		n := 0
		for key := range c.local {
			if p, ok := c.ix.Pod(key); ok && p.Selectable() && len(c.ix.PoliciesFor(key, d)) > 0 {
				n++
			}
		}
		c.metrics.IsolatedPods.WithLabelValues(d.String()).Set(float64(n))
	}
}

// readCounters adds what the combination chains' final drops counted since
// the last read to wgmesh_policy_denied_packets_total, and what the base
// chains' fail-closed drops counted to wgmesh_policy_unjudged_packets_total.
// A chain written again starts at zero: a count below the last one is all
// new.
func (c *Controller) readCounters() {
	seen := map[counterKey]bool{}
	for _, f := range nft.Families {
		rs := c.last[f]
		if rs == nil {
			continue
		}
		for name, chain := range rs.Chains {
			dir := ""
			counted := func(i int) bool { return i == len(chain)-1 }
			metric := c.metrics.DeniedPackets
			switch {
			case strings.HasPrefix(name, prefixCombinationIn):
				dir = netpol.Ingress.String()
			case strings.HasPrefix(name, prefixCombinationOut):
				dir = netpol.Egress.String()
			case name == ChainIngress || name == ChainEgress:
				dir = netpol.Ingress.String()
				if name == ChainEgress {
					dir = netpol.Egress.String()
				}
				counted = func(i int) bool {
					return i < len(chain) && (chain[i].NotSaddrSet == SetProgrammed || chain[i].NotDaddrSet == SetProgrammed)
				}
				metric = c.metrics.UnjudgedPackets
			default:
				continue
			}
			cs, err := c.k.Counters(f, name)
			if err != nil {
				c.metrics.SyncErrors.WithLabelValues("counters").Inc()
				c.o.Log.V(1).Info("reading the drop counters", "chain", name, "family", f.String(), "error", err.Error())
				continue
			}
			var packets uint64
			for _, rc := range cs {
				if counted(rc.Index) {
					packets += rc.Packets
				}
			}
			key := counterKey{f, name}
			seen[key] = true
			prev := c.counts[key]
			if packets >= prev {
				metric.WithLabelValues(dir).Add(float64(packets - prev))
			} else {
				metric.WithLabelValues(dir).Add(float64(packets))
			}
			c.counts[key] = packets
		}
	}
	for key := range c.counts {
		if !seen[key] {
			delete(c.counts, key)
		}
	}
}

// checkBridgeNetfilter asks whether br_netfilter is on: without it, pods of
// this node reach each other over the bridge without passing the forward
// hook, and the policy is not enforced between them. That is reported
// (Event on the Node, once per cause; not ready), never hidden.
func (c *Controller) checkBridgeNetfilter() {
	var err error
	if c.o.BridgeNetfilter != nil {
		st := c.o.BridgeNetfilter()
		switch {
		case st == nil:
			err = errors.New("network policy: br_netfilter not checked yet (the agent's first reconcile of the node's data plane)")
			if !c.recheck {
				c.recheck = true
				time.AfterFunc(time.Second, func() { c.run.Wake("br_netfilter") })
			}
		case !st.Enabled:
			err = fmt.Errorf("network policy: br_netfilter is unavailable, so traffic between pods of node %s bypasses NetworkPolicy (traffic across nodes is enforced): %s", c.o.NodeName, st.Reason)
			if c.brnfShown != st.Reason {
				c.brnfShown = st.Reason
				c.o.Log.Info("NetworkPolicy not enforced between pods of this node: br_netfilter unavailable", "reason", st.Reason)
				c.nodeEvent(corev1.EventTypeWarning, ReasonBridgeNetfilterMissing, "%v", err)
			}
		default:
			c.brnfShown = ""
		}
		if st != nil {
			c.recheck = false
		}
	}
	c.stateMu.Lock()
	c.brnfErr = err
	c.stateMu.Unlock()
}

func (c *Controller) setReady() {
	v := 0.0
	if c.Synced() == nil {
		v = 1
	}
	c.metrics.Ready.Set(v)
}

// reportInvalid tells each invalid field of a policy once per agent
// process (Warning Event on the NetworkPolicy, and a log line).
func (c *Controller) reportInvalid(invalid []invalidPolicy) {
	for _, ip := range invalid {
		key := ip.namespace + "/" + ip.name
		for _, problem := range ip.problems {
			c.mu.Lock()
			if c.policies[key] != ip.uid || c.reported[key][problem] {
				c.mu.Unlock()
				continue // deleted or replaced since, or told already
			}
			if c.reported[key] == nil {
				c.reported[key] = map[string]bool{}
			}
			c.reported[key][problem] = true
			c.mu.Unlock()
			c.o.Log.Info("NetworkPolicy field invalid; it fails closed", "policy", key, "problem", problem)
			if c.events != nil {
				np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ip.namespace, Name: ip.name, UID: ip.uid}}
				c.events.Eventf(np, nil, corev1.EventTypeWarning, ReasonInvalid, ActionProgram, "%s", problem)
			}
		}
	}
}

// nodeEvent writes an Event about this node's Node.
func (c *Controller) nodeEvent(eventType, reason, note string, args ...any) {
	if c.events == nil {
		return
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.o.NodeName}}
	if c.nodes != nil {
		if n, err := c.nodes.Get(c.o.NodeName); err == nil {
			node = n
		}
	}
	c.events.Eventf(node, nil, eventType, reason, ActionProgram, note, args...)
}
