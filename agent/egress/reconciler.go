package egress

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/google/nftables"

	"github.com/wgmesh/wgmesh/cni/antispoof"
)

// ReconcilerOptions configure a Reconciler.
type ReconcilerOptions struct {
	// NetNSFd selects the network namespace to program; 0 = the current one.
	NetNSFd int
	Log     logr.Logger
	Metrics *Metrics // optional
}

// Reconciler keeps the egress chain of table wgmesh equal to the desired programs.
type Reconciler struct{ opts ReconcilerOptions }

// NewReconciler returns a Reconciler.
func NewReconciler(opts ReconcilerOptions) *Reconciler {
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	return &Reconciler{opts: opts}
}

func (r *Reconciler) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if r.opts.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(r.opts.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink connection: %w", err)
	}
	return c, nil
}

// chainSpec is one of our base chains and its desired rules.
type chainSpec struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
	rules    []Rule
}

func chainSpecs(p Program) []chainSpec {
	return []chainSpec{
		{ChainName, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, p.Rules},
		{GuardForwardChain, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, p.Guard},
		// The node's own traffic is guarded at postrouting, not output: a
		// service DNAT in nat-output re-routes the packet, but chains later
		// in the output hook still see the first route's interface (the
		// underlay, for a ClusterIP), and would drop traffic that in fact
		// leaves through the tunnel. At postrouting the interface is final.
		{GuardOutputChain, nftables.ChainTypeFilter, nftables.ChainHookPostrouting, nftables.ChainPriorityFilter, p.Guard},
	}
}

// ourChains are the chains this package owns in table wgmesh.
var ourChains = []string{ChainName, GuardForwardChain, GuardOutputChain}

// Apply makes the kernel match progs. It reads first and writes (one batch
// per family) only when a chain is missing or differs. It returns the
// families it rewrote.
func (r *Reconciler) Apply(progs []Program) ([]Family, error) {
	c, err := r.conn()
	if err != nil {
		r.opts.Metrics.Errors.WithLabelValues("apply").Inc()
		return nil, err
	}
	var changed []Family
	for _, p := range progs {
		rewrote, err := r.applyOne(c, p)
		if err != nil {
			r.opts.Metrics.Errors.WithLabelValues("apply").Inc()
			return changed, fmt.Errorf("table %s %s: %w", p.Family, TableName, err)
		}
		if rewrote {
			changed = append(changed, p.Family)
			r.opts.Metrics.Syncs.WithLabelValues(p.Family.String()).Inc()
			r.opts.Log.Info("programmed egress masquerade and leak guard", "family", p.Family.String(), "table", TableName,
				"masqueradeRules", len(p.Rules), "guardRules", len(p.Guard))
		}
	}
	return changed, nil
}

func (r *Reconciler) applyOne(c *nftables.Conn, p Program) (bool, error) {
	table := &nftables.Table{Name: TableName, Family: tableFamily(p.Family)}
	specs := chainSpecs(p)
	current := make([]*nftables.Chain, len(specs))
	dirty := false
	for i, spec := range specs {
		cur, err := findChain(c, table, spec.name)
		if err != nil {
			return false, err
		}
		current[i] = cur
		if cur == nil || !chainMatches(cur, spec) {
			dirty = true
			continue
		}
		rules, err := c.GetRules(table, cur)
		if err != nil {
			return false, fmt.Errorf("listing rules of chain %s: %w", spec.name, err)
		}
		if !rulesMatch(p.Family, spec.rules, rules) {
			dirty = true
		}
	}
	if !dirty {
		return false, nil
	}
	c.AddTable(table)
	for i, spec := range specs {
		cur := current[i]
		if cur != nil && !chainMatches(cur, spec) {
			c.FlushChain(cur)
			c.DelChain(cur)
			cur = nil
		}
		chain := c.AddChain(&nftables.Chain{Name: spec.name, Table: table, Type: spec.typ, Hooknum: spec.hook, Priority: spec.priority})
		if cur != nil {
			c.FlushChain(chain)
		}
		for _, rule := range spec.rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs(p.Family, rule), UserData: comment(rule)})
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("writing rules: %w", err)
	}
	return true, nil
}

// Cleanup removes the egress chain of both families, and the table itself
// only when nothing else (service NAT) is left in it.
func (r *Reconciler) Cleanup() error {
	c, err := r.conn()
	if err != nil {
		return err
	}
	for _, fam := range []Family{IPv4, IPv6} {
		table := &nftables.Table{Name: TableName, Family: tableFamily(fam)}
		found := false
		for _, name := range ourChains {
			cur, err := findChain(c, table, name)
			if err != nil {
				return err
			}
			if cur != nil {
				found = true
				c.FlushChain(cur)
				c.DelChain(cur)
			}
		}
		if !found {
			continue
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("deleting chains %v in table %s %s: %w", ourChains, fam, TableName, err)
		}
		chains, err := c.ListChainsOfTableFamily(table.Family)
		if err != nil {
			return fmt.Errorf("listing chains: %w", err)
		}
		others := 0
		for _, ch := range chains {
			if ch.Table.Name == TableName {
				others++
			}
		}
		sets, err := c.GetSets(table)
		if err != nil {
			return fmt.Errorf("listing sets of table %s %s: %w", fam, TableName, err)
		}
		if others == 0 && len(sets) == 0 {
			c.DelTable(table)
			if err := c.Flush(); err != nil {
				return fmt.Errorf("deleting empty table %s %s: %w", fam, TableName, err)
			}
		}
		r.opts.Log.Info("removed egress masquerade", "family", fam.String())
	}
	// The pods' anti-spoofing table (bridge family), which the CNI plugin
	// wgmesh-guard fills as pods come: gone with the pod network.
	if err := antispoof.DeleteTable(c); err != nil {
		return err
	}
	return nil
}

// findChain returns the named chain in table, or nil when it (or the table) is absent.
func findChain(c *nftables.Conn, table *nftables.Table, name string) (*nftables.Chain, error) {
	chains, err := c.ListChainsOfTableFamily(table.Family)
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == table.Name && ch.Name == name {
			return ch, nil
		}
	}
	return nil, nil
}

func chainMatches(ch *nftables.Chain, spec chainSpec) bool {
	return ch.Type == spec.typ &&
		ch.Hooknum != nil && *ch.Hooknum == *spec.hook &&
		ch.Priority != nil && *ch.Priority == *spec.priority &&
		(ch.Policy == nil || *ch.Policy == nftables.ChainPolicyAccept)
}

// rulesMatch compares the kernel's rules with the desired ones by comment
// and by the number of expressions, which catches rules added, removed,
// reordered or replaced by hand.
func rulesMatch(fam Family, want []Rule, rules []*nftables.Rule) bool {
	if len(rules) != len(want) {
		return false
	}
	for i, w := range want {
		if commentOf(rules[i]) != w.String() || len(rules[i].Exprs) != len(exprs(fam, w)) {
			return false
		}
	}
	return true
}
