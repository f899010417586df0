package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// DefaultBatchSize bounds one netlink batch (one nf_tables transaction), in
// rough units of 150 bytes (a rule counts 2, 2 map elements or 4 set
// elements count 1): about 2 MiB, within the socket
// buffers below. Every commit makes the kernel validate the whole table
// (about 3 µs per chain), so a full sync wants few, large batches; one
// change is one small batch.
const DefaultBatchSize = 16384

// socketBuffer is the send and receive buffer of the nftables socket: a
// batch is one sendmsg, and the kernel queues an acknowledgement per
// message before we read any.
const socketBuffer = 16 << 20

// setSocketBuffers raises both buffers past net.core.[rw]mem_max where the
// agent may (CAP_NET_ADMIN), else as far as the limits allow.
func setSocketBuffers(c *netlink.Conn, size int) {
	raw, err := c.SyscallConn()
	if err == nil {
		_ = raw.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, size)
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
			}
		})
	}
}

// Kernel programs one Part of table wgmesh in one network namespace over
// netlink (github.com/google/nftables; no nft binary).
type Kernel struct {
	// Part is what this Kernel reads and writes; the rest of the table is
	// never touched.
	Part *Part
	// NetNSFd selects the network namespace; 0 = the current one.
	NetNSFd int
	// BatchSize bounds the messages per netlink batch (DefaultBatchSize).
	BatchSize int

	// Chains and sets (affinity sets, dynamic typed sets) that an earlier
	// write left unreferenced.
	// They are deleted with the next write, never in the transaction that
	// drops their last reference (as kube-proxy does): one change is one
	// commit, and the kernel never sees a chain deleted while a rule being
	// removed in the same transaction still points at it.
	staleChains, staleSets map[Family]map[string]bool
	// written is when this Kernel last added or deleted elements of each
	// set and map: the kernel may still be resizing its hash table (see
	// setElements).
	written map[Family]map[string]time.Time

	// The idle connections kept between operations (see conn).
	idle    kept[nftables.Conn]
	idleRaw kept[netlink.Conn]
}

// kept holds one idle connection between operations.
type kept[T any] struct {
	mu sync.Mutex
	c  *T
}

func (p *kept[T]) take() *T {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.c
	p.c = nil
	return c
}

// put ends an operation on c: kept for the next one when the operation
// succeeded (it flushed all it queued and read all answers) and none is
// kept yet, else closed in the background (a failed operation may have
// left messages queued or answers unread).
func (p *kept[T]) put(c *T, err error, closeConn func(*T) error) {
	p.mu.Lock()
	if err == nil && p.c == nil {
		p.c, c = c, nil
	}
	p.mu.Unlock()
	if c != nil {
		go func() { _ = closeConn(c) }()
	}
}

// close closes the kept connection, if any.
func (p *kept[T]) close(closeConn func(*T) error) error {
	if c := p.take(); c != nil {
		return closeConn(c)
	}
	return nil
}

// settleWindow is how long after a write a set's hash table may still be
// resized (a rehash of 100,000 elements takes milliseconds).
const settleWindow = 10 * time.Second

// noteWritten records the sets and maps whose elements ch changes.
func (k *Kernel) noteWritten(f Family, ch *Changes) {
	if k.written == nil {
		k.written = map[Family]map[string]time.Time{}
	}
	if k.written[f] == nil {
		k.written[f] = map[string]time.Time{}
	}
	now := time.Now()
	for _, names := range [][]string{sortedKeys(ch.addElems), sortedKeys(ch.replaceElems), sortedKeys(ch.delElems),
		sortedKeys(ch.addSet), sortedKeys(ch.delSet), sortedKeys(ch.addTypedElems), sortedKeys(ch.delTypedElems)} {
		for _, n := range names {
			k.written[f][n] = now
		}
	}
	for n, t := range k.written[f] {
		if now.Sub(t) > settleWindow {
			delete(k.written[f], n)
		}
	}
}

// settling reports a set this Kernel changed within settleWindow.
func (k *Kernel) settling(f Family, name string) bool {
	t, ok := k.written[f][name]
	return ok && time.Since(t) <= settleWindow
}

// HasStale reports chains or sets waiting for deletion.
func (k *Kernel) HasStale() bool {
	for _, m := range []map[Family]map[string]bool{k.staleChains, k.staleSets} {
		for _, names := range m {
			if len(names) > 0 {
				return true
			}
		}
	}
	return false
}

// FlushStale deletes the chains and sets earlier writes left unreferenced.
func (k *Kernel) FlushStale() error {
	for _, f := range Families {
		if _, err := k.Apply(f, &Changes{newChains: map[string]bool{}}, NewRuleset()); err != nil {
			return err
		}
	}
	return nil
}

func (k *Kernel) stale(f Family) (chains, sets map[string]bool) {
	if k.staleChains == nil {
		k.staleChains, k.staleSets = map[Family]map[string]bool{}, map[Family]map[string]bool{}
	}
	if k.staleChains[f] == nil {
		k.staleChains[f], k.staleSets[f] = map[string]bool{}, map[string]bool{}
	}
	return k.staleChains[f], k.staleSets[f]
}

// The connection is lasting, and kept for the next operation (release):
// the kernel's release of an nfnetlink socket takes the commit mutex and
// waits for the deferred freeing of what the last commit deleted (an RCU
// grace period, 12 ms on the test machine), so a socket per operation made
// every one-element change cost 14 ms instead of 1.5, and stalled every
// other writer of nf_tables meanwhile. One idle connection is kept; an
// operation that finds none (two at once) dials its own.
func (k *Kernel) conn() (*nftables.Conn, error) {
	if c := k.idle.take(); c != nil {
		return c, nil
	}
	// Acknowledgements without the echoed request (NETLINK_CAP_ACK) and a
	// roomy receive buffer: every message of a batch is acknowledged, and
	// full echoes of a few hundred rule messages overflow the default
	// buffer (ENOBUFS).
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		if err := c.SetOption(netlink.CapAcknowledge, true); err != nil {
			return err
		}
		setSocketBuffers(c, socketBuffer)
		return nil
	})}
	if k.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(k.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink connection: %w", err)
	}
	return c, nil
}

// release ends an operation on c (kept.put).
func (k *Kernel) release(c *nftables.Conn, err error) {
	k.idle.put(c, err, (*nftables.Conn).CloseLasting)
}

// rawConn is a plain netfilter netlink socket for the requests
// github.com/google/nftables has no call for, kept like conn's.
func (k *Kernel) rawConn() (*netlink.Conn, error) {
	if c := k.idleRaw.take(); c != nil {
		return c, nil
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: k.NetNSFd})
	if err != nil {
		return nil, fmt.Errorf("dialing netfilter netlink: %w", err)
	}
	setSocketBuffers(c, socketBuffer)
	return c, nil
}

func (k *Kernel) releaseRaw(c *netlink.Conn, err error) {
	k.idleRaw.put(c, err, (*netlink.Conn).Close)
}

// Close closes the connections kept between operations. The Kernel stays
// usable (the next operation dials again).
func (k *Kernel) Close() error {
	return errors.Join(k.idle.close((*nftables.Conn).CloseLasting), k.idleRaw.close((*netlink.Conn).Close))
}

func table(f Family) *nftables.Table {
	return &nftables.Table{Name: Table, Family: tableFamily(f)}
}

func (k *Kernel) mapObj(f Family, name string) *nftables.Set {
	kind := k.Part.Maps[name]
	return &nftables.Set{Table: table(f), Name: name, IsMap: true, Concatenation: kind.concatenated(),
		KeyType: keyType(f, kind), DataType: nftables.TypeVerdict}
}

func setObj(f Family, name string) *nftables.Set {
	return &nftables.Set{Table: table(f), Name: name, KeyType: addrType(f)}
}

func affinityObj(f Family, name string, timeout time.Duration) *nftables.Set {
	return &nftables.Set{Table: table(f), Name: name, KeyType: addrType(f), HasTimeout: true, Timeout: timeout, Dynamic: true}
}

func baseChainObj(f Family, b BaseChain) *nftables.Chain {
	typ := nftables.ChainTypeFilter
	if b.NAT {
		typ = nftables.ChainTypeNAT
	}
	prio := nftables.ChainPriority(b.Priority)
	return &nftables.Chain{Name: b.Name, Table: table(f), Type: typ, Hooknum: hooks[b.Hook], Priority: &prio}
}

var hooks = map[Hook]*nftables.ChainHook{
	HookPrerouting: nftables.ChainHookPrerouting, HookInput: nftables.ChainHookInput, HookForward: nftables.ChainHookForward,
	HookOutput: nftables.ChainHookOutput, HookPostrouting: nftables.ChainHookPostrouting,
}

// hookMatches reports whether the kernel's chain is hooked as b declares.
func hookMatches(ch *nftables.Chain, b BaseChain) bool {
	typ := nftables.ChainTypeFilter
	if b.NAT {
		typ = nftables.ChainTypeNAT
	}
	return ch.Type == typ && ch.Hooknum != nil && *ch.Hooknum == *hooks[b.Hook] &&
		ch.Priority != nil && int(*ch.Priority) == b.Priority &&
		(ch.Policy == nil || *ch.Policy == nftables.ChainPolicyAccept)
}

// batch sends queued messages once enough have accumulated.
type batch struct {
	c     *nftables.Conn
	n     int
	limit int
	sent  int
}

func (b *batch) add(n int) error {
	b.n += n
	if b.n >= b.limit {
		return b.flush()
	}
	return nil
}

func (b *batch) flush() error {
	if b.n == 0 {
		return nil
	}
	b.sent++
	b.n = 0
	return b.c.Flush()
}

// EnsureSkeleton creates the table and the part's maps and sets when
// missing (static typed sets too, of their declared kind; one there with
// another kind is left for the next write to recreate). It is idempotent.
func (k *Kernel) EnsureSkeleton(f Family) (err error) {
	c, err := k.conn()
	if err != nil {
		return err
	}
	var dirty error // a swallowed failure: the connection is not kept
	defer func() { k.release(c, errors.Join(err, dirty)) }()
	have := map[string]bool{}
	if len(k.Part.TypedSets) > 0 {
		existing, gerr := c.GetSets(table(f)) // none when there is no table
		dirty = gerr                          // a failed dump may leave answers unread: not kept
		for _, s := range existing {
			have[s.Name] = true
		}
	}
	c.AddTable(table(f))
	for _, m := range sortedKeys(k.Part.Maps) {
		if err := c.AddSet(k.mapObj(f, m), nil); err != nil {
			return err
		}
	}
	for _, s := range k.Part.Sets {
		if err := c.AddSet(setObj(f, s), nil); err != nil {
			return err
		}
	}
	for _, n := range sortedKeys(k.Part.TypedSets) {
		if !have[n] {
			if err := c.AddSet(typedSetObj(f, n, k.Part.TypedSets[n]), nil); err != nil {
				return err
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("table %s %s: creating maps and sets: %w", f, Table, err)
	}
	return nil
}

// Apply writes ch, taking rules and verdicts from want, in small batches
// ordered so that nothing is referenced before it exists or deleted while
// referenced: affinity sets, then typed sets and their elements, then
// chains and their rules, then map and set elements, then what an earlier
// write left unreferenced. It returns the number of batches sent.
func (k *Kernel) Apply(f Family, ch *Changes, want *Ruleset) (sent int, err error) {
	staleChains, staleSets := k.stale(f)
	if ch.Empty() && len(staleChains)+len(staleSets) == 0 {
		return 0, nil
	}
	defer func() {
		if err != nil {
			// What is in the kernel is unknown now: the full sync that
			// follows a failure reads it back and deletes what is left.
			k.staleChains, k.staleSets = nil, nil
		}
	}()
	if err := checkChanges(k.Part, f, ch, want); err != nil {
		return 0, fmt.Errorf("table %s %s: %w", f, Table, err)
	}
	// A stale chain or set written again, or wanted again, is live again.
	for _, n := range ch.writeChains {
		if staleChains[n] {
			delete(staleChains, n)
			ch.newChains[n] = false
		}
	}
	for n := range staleChains {
		if _, ok := want.Chains[n]; ok {
			delete(staleChains, n)
		}
	}
	for _, n := range ch.addAffinity {
		delete(staleSets, n)
	}
	for n := range staleSets {
		_, aff := want.Affinity[n]
		_, typed := want.TypedSets[n]
		if aff || typed || slices.Contains(ch.addTyped, n) {
			delete(staleSets, n)
		}
	}
	c, err := k.conn()
	if err != nil {
		return 0, err
	}
	defer func() { k.release(c, err) }()
	limit := k.BatchSize
	if limit <= 0 {
		limit = DefaultBatchSize
	}
	// The table message counts: a write that only deletes still sends
	// it, and leaves nothing queued on the kept connection.
	w := &write{k: k, c: c, b: &batch{c: c, limit: limit, n: 1}, f: f, t: table(f), ch: ch, want: want}
	c.AddTable(w.t)
	for _, phase := range []func() error{w.affinitySets, w.typedSets, w.chains, w.elements, func() error { return w.deleteStale(staleChains, staleSets) }} {
		if err := phase(); err != nil {
			return w.b.sent, fmt.Errorf("table %s %s: %w", f, Table, err)
		}
	}
	// What this write leaves unreferenced goes with the next one.
	for _, n := range ch.delChains {
		staleChains[n] = true
	}
	for _, n := range ch.delAffinity {
		if !slices.Contains(ch.addAffinity, n) {
			staleSets[n] = true
		}
	}
	for _, n := range ch.delTyped {
		if w.dropped(n) {
			staleSets[n] = true
		}
	}
	if err := w.b.flush(); err != nil {
		return w.b.sent, fmt.Errorf("table %s %s: writing: %w", f, Table, err)
	}
	k.noteWritten(f, ch)
	return w.b.sent, nil
}

// write is one Apply in progress.
type write struct {
	k    *Kernel
	c    *nftables.Conn
	b    *batch
	f    Family
	t    *nftables.Table
	ch   *Changes
	want *Ruleset
}

func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// affinitySets creates the affinity sets the new rules use (one recreated
// with another timeout has its users flushed first, so that it is
// unreferenced; they are rewritten by chains).
func (w *write) affinitySets() error {
	for _, n := range w.ch.delAffinity {
		if slices.Contains(w.ch.addAffinity, n) {
			for _, user := range usersOf(w.want, n) {
				if !w.ch.newChains[user] {
					w.c.FlushChain(&nftables.Chain{Name: user, Table: w.t})
				}
			}
			w.c.DelSet(&nftables.Set{Table: w.t, Name: n})
		}
	}
	for _, n := range w.ch.addAffinity {
		if err := w.c.AddSet(affinityObj(w.f, n, w.want.Affinity[n].Timeout), nil); err != nil {
			return wrap("affinity set "+n, err)
		}
		if err := w.b.add(1); err != nil {
			return wrap("writing affinity sets", err)
		}
	}
	return nil
}

// chains recreates base chains hooked otherwise than declared, creates
// new chains empty (so that rules may jump to any of them whatever the
// order), then writes each chain's rules in one batch (a chain is never
// seen half written).
func (w *write) chains() error {
	for _, n := range w.ch.rehook {
		chain := &nftables.Chain{Name: n, Table: w.t}
		w.c.FlushChain(chain)
		w.c.DelChain(chain)
		if err := w.b.add(2); err != nil {
			return wrap("recreating base chains", err)
		}
	}
	for _, n := range w.ch.writeChains {
		if w.ch.newChains[n] {
			if bc, ok := w.k.Part.Base(n); ok {
				w.c.AddChain(baseChainObj(w.f, bc))
			} else {
				w.c.AddChain(&nftables.Chain{Name: n, Table: w.t})
			}
			if err := w.b.add(1); err != nil {
				return wrap("creating chains", err)
			}
		}
	}
	for _, n := range w.ch.writeChains {
		chain := &nftables.Chain{Name: n, Table: w.t}
		if !w.ch.newChains[n] {
			w.c.FlushChain(chain)
		}
		for _, r := range w.want.Chains[n] {
			w.c.AddRule(&nftables.Rule{Table: w.t, Chain: chain, Exprs: Exprs(w.f, r), UserData: ruleUserData(r)})
		}
		if err := w.b.add(1 + 2*len(w.want.Chains[n])); err != nil {
			return wrap("writing chain "+n, err)
		}
	}
	return nil
}

// elements replaces, adds and deletes map and set elements.
func (w *write) elements() error {
	for _, m := range sortedKeys(w.ch.replaceElems) {
		if err := w.k.elements(w.c, w.b, w.f, m, w.ch.replaceElems[m], nil, true); err != nil {
			return wrap("replacing elements of map "+m, err)
		}
		if err := w.k.elements(w.c, w.b, w.f, m, w.ch.replaceElems[m], w.want.Maps[m], false); err != nil {
			return wrap("replacing elements of map "+m, err)
		}
	}
	for _, m := range sortedKeys(w.ch.addElems) {
		if err := w.k.elements(w.c, w.b, w.f, m, w.ch.addElems[m], w.want.Maps[m], false); err != nil {
			return wrap("adding elements to map "+m, err)
		}
	}
	for _, s := range sortedKeys(w.ch.addSet) {
		if err := w.k.setElements(w.c, w.b, w.f, s, w.ch.addSet[s], false); err != nil {
			return wrap("adding elements to set "+s, err)
		}
	}
	for _, m := range sortedKeys(w.ch.delElems) {
		if err := w.k.elements(w.c, w.b, w.f, m, w.ch.delElems[m], nil, true); err != nil {
			return wrap("deleting elements of map "+m, err)
		}
	}
	for _, s := range sortedKeys(w.ch.delSet) {
		if err := w.k.setElements(w.c, w.b, w.f, s, w.ch.delSet[s], true); err != nil {
			return wrap("deleting elements of set "+s, err)
		}
	}
	return nil
}

// deleteStale deletes the chains and sets an earlier, committed write left
// unreferenced: flush all, then delete all (they may jump to each other).
func (w *write) deleteStale(chains, sets map[string]bool) error {
	for _, n := range sortedKeys(chains) {
		w.c.FlushChain(&nftables.Chain{Name: n, Table: w.t})
		if err := w.b.add(1); err != nil {
			return wrap("flushing stale chains", err)
		}
	}
	for _, n := range sortedKeys(chains) {
		w.c.DelChain(&nftables.Chain{Name: n, Table: w.t})
		if err := w.b.add(1); err != nil {
			return wrap("deleting stale chains", err)
		}
	}
	for _, n := range sortedKeys(sets) {
		w.c.DelSet(&nftables.Set{Table: w.t, Name: n})
		if err := w.b.add(1); err != nil {
			return wrap("deleting stale sets", err)
		}
	}
	clear(chains)
	clear(sets)
	return nil
}

// elemsPerMessage bounds one NEWSETELEM message.
const elemsPerMessage = 128

func (k *Kernel) elements(c *nftables.Conn, b *batch, f Family, m string, keys []MapKey, verdicts map[MapKey]Verdict, del bool) error {
	els := make([]nftables.SetElement, len(keys))
	for i, key := range keys {
		els[i] = nftables.SetElement{Key: encodeKey(key)}
		if !del {
			els[i].VerdictData = verdictExpr(verdicts[key])
		}
	}
	return sendElements(c, b, k.mapObj(f, m), els, del, 2)
}

func (k *Kernel) setElements(c *nftables.Conn, b *batch, f Family, name string, addrs []netip.Addr, del bool) error {
	els := make([]nftables.SetElement, len(addrs))
	for i, a := range addrs {
		els[i] = nftables.SetElement{Key: a.AsSlice()}
	}
	return sendElements(c, b, setObj(f, name), els, del, 4)
}

// sendElements adds or deletes elements in messages of at most
// elemsPerMessage: the element list is one netlink attribute, whose 16-bit
// length silently wraps beyond 64 KiB. perUnit elements count one batch unit.
func sendElements(c *nftables.Conn, b *batch, s *nftables.Set, els []nftables.SetElement, del bool, perUnit int) error {
	for len(els) > 0 {
		n := min(len(els), elemsPerMessage)
		var err error
		if del {
			err = c.SetDeleteElements(s, els[:n])
		} else {
			err = c.SetAddElements(s, els[:n])
		}
		if err != nil {
			return err
		}
		if err := b.add(1 + n/perUnit); err != nil {
			return err
		}
		els = els[n:]
	}
	return nil
}

func usersOf(rs *Ruleset, set string) []string {
	var out []string
	for n, ch := range rs.Chains {
		for _, r := range ch {
			if r.usesSet(set) {
				out = append(out, n)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// Read returns the part's share of family f's table as the kernel has
// it: one dump each of chains, rules and sets, plus the elements of the
// part's maps, address sets and typed sets. A missing table reads as empty.
func (k *Kernel) Read(f Family) (_ *Digest, err error) {
	d := NewDigest()
	c, err := k.conn()
	if err != nil {
		return nil, err
	}
	var dirty error // a swallowed failure: the connection is not kept
	defer func() { k.release(c, errors.Join(err, dirty)) }()
	t := table(f)
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != Table || !k.Part.OwnsChain(ch.Name) {
			continue
		}
		d.Chains[ch.Name] = nil
		if b, ok := k.Part.Base(ch.Name); ok && !hookMatches(ch, b) {
			d.rehook[ch.Name] = true
		}
	}
	if len(d.Chains) == 0 {
		if _, terr := c.ListTableOfFamily(Table, t.Family); terr != nil {
			dirty = terr  // a failed dump may leave answers unread: not kept
			return d, nil // no table yet
		}
	}
	rules, err := k.dumpRules(f, sortedKeys(d.Chains))
	if err != nil {
		return nil, err
	}
	for ch, fps := range rules {
		if _, ok := d.Chains[ch]; ok {
			d.Chains[ch] = fps
		}
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("listing sets: %w", err)
	}
	for _, s := range sets {
		switch {
		case s.Anonymous:
		case k.Part.ownsAffinity(s.Name):
			d.Affinity[s.Name] = s.Timeout
		case k.Part.ownsMap(s.Name):
			els, err := setElements(c, s, k.settling(f, s.Name))
			if err != nil {
				return nil, fmt.Errorf("listing map %s: %w", s.Name, err)
			}
			d.Maps[s.Name] = map[MapKey]Verdict{}
			for _, e := range els {
				key, ok := decodeKey(f, k.Part.Maps[s.Name], e.Key)
				v := e.VerdictData
				if v == nil {
					v = decodeVerdict(e.Val)
				}
				if !ok || v == nil {
					continue
				}
				d.Maps[s.Name][key] = verdictOf(v)
			}
		case k.Part.ownsSet(s.Name):
			els, err := setElements(c, s, k.settling(f, s.Name))
			if err != nil {
				return nil, fmt.Errorf("listing set %s: %w", s.Name, err)
			}
			d.Sets[s.Name] = map[netip.Addr]bool{}
			for _, e := range els {
				if a, ok := netip.AddrFromSlice(e.Key); ok {
					d.Sets[s.Name][a] = true
				}
			}
		case k.Part.ownsTypedSet(s.Name):
			if err := readTypedSet(c, k.Part, f, s, d, k.settling(f, s.Name)); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// stableDumpMin is the element count from which a dump may span several
// netlink messages.
const stableDumpMin = 128

// setElements dumps a set's elements. A large dump is resumed message by
// message by skipping the elements already sent, in the order of the set's
// hash table; while the kernel resizes that table (shortly after many
// elements were added or deleted) the order moves and a dump can miss
// elements. So a large set written lately (settling) is dumped until two
// dumps in a row agree (at most five); others once (a dump of 100,000
// elements takes about a second: the skipping is quadratic).
func setElements(c *nftables.Conn, s *nftables.Set, settling bool) ([]nftables.SetElement, error) {
	els, err := c.GetSetElements(s)
	if err != nil || !settling || len(els) < stableDumpMin {
		return els, err
	}
	for range 4 {
		again, err := c.GetSetElements(s)
		if err != nil {
			return nil, err
		}
		if sameElements(els, again) {
			return again, nil
		}
		els = again
	}
	return els, nil
}

func sameElements(a, b []nftables.SetElement) bool {
	if len(a) != len(b) {
		return false
	}
	keys := make(map[string]bool, len(a))
	for _, e := range a {
		keys[string(e.Key)+"\x00"+string(e.Val)] = true
	}
	for _, e := range b {
		if !keys[string(e.Key)+"\x00"+string(e.Val)] {
			return false
		}
	}
	return true
}

// decodeVerdict reads a map element's verdict data (NFTA_DATA_VERDICT
// attributes), which the library leaves undecoded.
func decodeVerdict(b []byte) *expr.Verdict {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	ad.ByteOrder = binary.BigEndian
	v := &expr.Verdict{}
	found := false
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind = expr.VerdictKind(int32(ad.Uint32()))
			found = true
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if ad.Err() != nil || !found {
		return nil
	}
	return v
}

func verdictOf(v *expr.Verdict) Verdict {
	switch v.Kind {
	case expr.VerdictJump:
		return Jump(v.Chain)
	case expr.VerdictGoto:
		return Goto(v.Chain)
	case expr.VerdictReturn:
		return Verdict{Kind: VerdictReturn}
	case expr.VerdictDrop:
		return Verdict{Kind: VerdictDrop}
	default:
		return Verdict{Kind: VerdictAccept}
	}
}

// dumpRules lists the fingerprints of the rules of the given chains, one
// dump per chain over one socket. A single dump of the whole table would be
// one request, but the kernel resumes each 32 KiB part of a rule dump by
// walking the table again from its first rule: quadratic, 6 s for 30,000
// chains, against well under a second this way.
func (k *Kernel) dumpRules(f Family, chains []string) (_ map[string][]string, err error) {
	conn, err := k.rawConn()
	if err != nil {
		return nil, err
	}
	defer func() { k.releaseRaw(conn, err) }()
	out := map[string][]string{}
	for _, chain := range chains {
		attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
			{Type: unix.NFTA_RULE_TABLE, Data: []byte(Table + "\x00")},
			{Type: unix.NFTA_RULE_CHAIN, Data: []byte(chain + "\x00")},
		})
		if err != nil {
			return nil, err
		}
		msgs, err := conn.Execute(netlink.Message{
			Header: netlink.Header{
				Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
				Flags: netlink.Request | netlink.Dump,
			},
			Data: append([]byte{byte(tableFamily(f)), unix.NFNETLINK_V0, 0, 0}, attrs...),
		})
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("dumping rules of chain %s: %w", chain, err)
		}
		fps := make([]string, 0, len(msgs))
		for _, m := range msgs {
			if len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				return nil, err
			}
			var fp []byte
			for ad.Next() {
				if ad.Type() == unix.NFTA_RULE_USERDATA {
					fp = userdata.Get(ad.Bytes(), udataFingerprint)
				}
			}
			if err := ad.Err(); err != nil {
				return nil, err
			}
			fps = append(fps, string(fp))
		}
		out[chain] = fps
	}
	return out, nil
}

// Generation is the kernel's ruleset generation: it moves with every
// change to any table, so an unchanged generation since our last write
// means nothing drifted.
func (k *Kernel) Generation() (_ uint32, err error) {
	conn, err := k.rawConn()
	if err != nil {
		return 0, err
	}
	defer func() { k.releaseRaw(conn, err) }()
	msgs, err := conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("reading ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return binary.BigEndian.Uint32(ad.Bytes()), nil
			}
		}
	}
	return 0, errors.New("reading ruleset generation: no NFTA_GEN_ID in the answer")
}

// Delete removes the part's chains, maps and sets of family f from table
// wgmesh; the table itself stays (DeleteTable is the uninstall's).
func (k *Kernel) Delete(f Family) (err error) {
	cur, err := k.Read(f)
	if err != nil {
		return err
	}
	empty := NewRuleset()
	if _, err := k.Apply(f, Diff(cur, empty), empty); err != nil {
		return err
	}
	if _, err := k.Apply(f, &Changes{newChains: map[string]bool{}}, empty); err != nil {
		return err
	}
	c, err := k.conn()
	if err != nil {
		return err
	}
	var dirty error // a swallowed failure: the connection is not kept
	defer func() { k.release(c, errors.Join(err, dirty)) }()
	t := table(f)
	sets, gerr := c.GetSets(t)
	if gerr != nil {
		dirty = gerr // a failed dump may leave answers unread: not kept
		return nil   // no table
	}
	found := false
	for _, s := range sets {
		if k.Part.ownsMap(s.Name) || k.Part.ownsSet(s.Name) || k.Part.ownsTypedSet(s.Name) {
			c.DelSet(&nftables.Set{Table: t, Name: s.Name})
			found = true
		}
	}
	if !found {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("table %s %s: deleting the %s maps and sets: %w", f, Table, k.Part.Name, err)
	}
	return nil
}

// DeleteTable deletes table wgmesh in every family it exists in (ip, ip6
// and bridge, where the CNI plugin keeps its anti-spoofing sets), with all
// parts in it. It is the uninstall's, the table's one owner.
func DeleteTable(netnsFd int) error {
	var opts []nftables.ConnOption
	if netnsFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("opening nftables netlink connection: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("listing nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == Table {
			c.DelTable(t)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting table %s: %w", Table, err)
	}
	return nil
}
