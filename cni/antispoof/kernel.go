package antispoof

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The kernel side. Every function works in the calling thread's network
// namespace (the CNI plugin runs in the node's). Each change is one netlink
// batch, so concurrent pods' plugins see the chain and sets whole; a batch
// that lost a race with another plugin (an element it meant to delete is
// already gone: ENOENT) is recomputed and retried.

const attempts = 3

func table() *nftables.Table { return &nftables.Table{Name: Table, Family: nftables.TableFamilyBridge} }

func chain(t *nftables.Table) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: Chain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(Priority), Policy: &policy}
}

func sets(t *nftables.Table) []*nftables.Set {
	return []*nftables.Set{
		// Host byte order is how nft reads (and prints) a plain ifname.
		{Table: t, Name: SetPorts, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian},
		{Table: t, Name: SetMACs, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)},
		{Table: t, Name: SetIPv4, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr)},
		{Table: t, Name: SetIPv6, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIP6Addr)},
	}
}

// state is what the kernel holds now.
type state struct {
	rules    []string // comments of the chain's rules, in order
	elements []Element
}

func (s state) rulesOK() bool {
	want := Rules()
	if len(s.rules) != len(want) {
		return false
	}
	for i, r := range want {
		if s.rules[i] != r.Comment {
			return false
		}
	}
	return true
}

func (s state) elementsOf(hostIf string) []Element {
	var out []Element
	for _, e := range s.elements {
		if PortOf(e.Key) == hostIf {
			out = append(out, e)
		}
	}
	return out
}

func read(c *nftables.Conn) (state, bool, error) {
	var st state
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return st, false, fmt.Errorf("listing nftables tables of family bridge: %w", err)
	}
	found := false
	for _, t := range tables {
		found = found || t.Name == Table
	}
	if !found {
		return st, false, nil
	}
	t := table()
	if rules, err := c.GetRules(t, chain(t)); err == nil {
		for _, r := range rules {
			s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			st.rules = append(st.rules, s)
		}
	}
	for _, s := range sets(t) {
		els, err := c.GetSetElements(s)
		if err != nil {
			continue // missing: the next batch creates it
		}
		for _, e := range els {
			st.elements = append(st.elements, Element{Set: s.Name, Key: e.Key})
		}
	}
	sortElements(st.elements)
	return st, true, nil
}

// Register makes the table, chain and sets what Rules and the set types say
// (creating or repairing them) and registers p: its elements are added and
// any other element of its host interface (left by an earlier pod with the
// same interface name) removed, in one batch. Then, best effort, elements of
// interfaces that no longer exist are dropped.
func Register(p Port) error {
	want, err := p.Elements()
	if err != nil {
		return err
	}
	for i := 1; ; i++ {
		err = register(p.HostIf, want)
		if err == nil || i == attempts || !errors.Is(err, unix.ENOENT) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("registering %s in nftables table bridge %s: %w", p, Table, err)
	}
	_ = collectGarbage()
	return nil
}

func register(hostIf string, want []Element) error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	defer c.CloseLasting()
	st, _, err := read(c)
	if err != nil {
		return err
	}
	t := c.AddTable(table())
	ch := c.AddChain(chain(t))
	byName := map[string]*nftables.Set{}
	for _, s := range sets(t) {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		byName[s.Name] = s
	}
	if !st.rulesOK() {
		c.FlushChain(ch)
		for _, r := range Rules() {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: withSetIDs(r.Exprs, byName),
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
		}
	}
	var stale []Element
	for _, e := range st.elementsOf(hostIf) {
		if !contains(want, e) {
			stale = append(stale, e)
		}
	}
	if err := apply(c, byName, stale, c.SetDeleteElements); err != nil {
		return err
	}
	if err := apply(c, byName, want, c.SetAddElements); err != nil {
		return err
	}
	return c.Flush()
}

// Unregister removes every element of hostIf. A missing table is not an
// error: there is nothing to remove.
func Unregister(hostIf string) error {
	var err error
	for i := 1; ; i++ {
		err = unregister(hostIf)
		if err == nil || i == attempts || !errors.Is(err, unix.ENOENT) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("unregistering port %s from nftables table bridge %s: %w", hostIf, Table, err)
	}
	return nil
}

func unregister(hostIf string) error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	defer c.CloseLasting()
	st, ok, err := read(c)
	if err != nil || !ok {
		return err
	}
	els := st.elementsOf(hostIf)
	if len(els) == 0 {
		return nil
	}
	if err := apply(c, setsByName(), els, c.SetDeleteElements); err != nil {
		return err
	}
	return c.Flush()
}

// collectGarbage removes the elements of host interfaces that no longer
// exist: a pod whose DEL never ran, or ran without its prevResult. The
// elements are read before the interfaces, so an interface made (and
// registered) in between is never taken for gone.
func collectGarbage() error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	st, ok, err := read(c)
	if err != nil || !ok {
		return err
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	exists := map[string]bool{}
	for _, i := range ifaces {
		exists[i.Name] = true
	}
	var gone []Element
	for _, e := range st.elements {
		if !exists[PortOf(e.Key)] {
			gone = append(gone, e)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := apply(c, setsByName(), gone, c.SetDeleteElements); err != nil {
		return err
	}
	return c.Flush()
}

// Check reports what is missing or different for p: the chain's rules, one
// of p's elements, or an element of p's host interface that p does not have.
func Check(p Port) error {
	want, err := p.Elements()
	if err != nil {
		return err
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	defer c.CloseLasting()
	st, ok, err := read(c)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is not protected: nftables table bridge %s does not exist", p, Table)
	}
	var problems []string
	if !st.rulesOK() {
		problems = append(problems, fmt.Sprintf("chain %s has rules %q, want %d rules as antispoof.Rules renders them", Chain, st.rules, len(Rules())))
	}
	have := st.elementsOf(p.HostIf)
	for _, e := range want {
		if !contains(have, e) {
			problems = append(problems, "missing element "+e.String())
		}
	}
	for _, e := range have {
		if !contains(want, e) {
			problems = append(problems, "unexpected element "+e.String())
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s in nftables table bridge %s: %s", p, Table, strings.Join(problems, "; "))
	}
	return nil
}

func setsByName() map[string]*nftables.Set {
	out := map[string]*nftables.Set{}
	for _, s := range sets(table()) {
		out[s.Name] = s
	}
	return out
}

func apply(c *nftables.Conn, byName map[string]*nftables.Set, els []Element, op func(*nftables.Set, []nftables.SetElement) error) error {
	bySet := map[string][]nftables.SetElement{}
	var order []string
	for _, e := range els {
		if _, ok := bySet[e.Set]; !ok {
			order = append(order, e.Set)
		}
		bySet[e.Set] = append(bySet[e.Set], nftables.SetElement{Key: e.Key})
	}
	for _, name := range order {
		if err := op(byName[name], bySet[name]); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

func withSetIDs(exprs []expr.Any, sets map[string]*nftables.Set) []expr.Any {
	out := make([]expr.Any, len(exprs))
	for i, e := range exprs {
		if l, ok := e.(*expr.Lookup); ok {
			cp := *l
			cp.SetID = sets[l.SetName].ID
			e = &cp
		}
		out[i] = e
	}
	return out
}

func contains(es []Element, e Element) bool {
	for _, x := range es {
		if x.Set == e.Set && bytes.Equal(x.Key, e.Key) {
			return true
		}
	}
	return false
}
