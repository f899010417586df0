package nft_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// Two parts of one table, as the agent's writers share it.
var (
	partA = &nft.Part{Name: "a", BaseChains: []nft.BaseChain{{Name: "a-forward", Hook: nft.HookForward, Priority: nft.PriorityFilter}},
		Maps: map[string]nft.KeyKind{"a-map": nft.KeyAddrProtoPort}, Sets: []string{"a-set"}, ChainPrefixes: []string{"a-"}}
	partB = &nft.Part{Name: "b", BaseChains: []nft.BaseChain{{Name: "b-post", NAT: true, Hook: nft.HookPostrouting, Priority: nft.PrioritySNAT}}}
)

func desiredA() *nft.Ruleset {
	rs := partA.Skeleton()
	rs.Chains["a-forward"] = nft.Chain{{DaddrSet: "a-set", Counter: true, Verdict: nft.Verdict{Kind: nft.VerdictDrop}},
		{VMap: "a-map", VMapKey: nft.KeyAddrProtoPort}}
	rs.Chains["a-svc"] = nft.Chain{{Saddr: netip.MustParsePrefix("198.19.1.0/24"), Verdict: nft.Verdict{Kind: nft.VerdictAccept}}}
	rs.AddSetElement("a-set", netip.MustParseAddr("198.19.9.9"))
	rs.AddElement("a-map", nft.MapKey{Addr: netip.MustParseAddr("198.18.128.10"), Proto: nft.TCP, Port: 80}, nft.Goto("a-svc"))
	return rs
}

func desiredB() *nft.Ruleset {
	rs := partB.Skeleton()
	rs.Chains["b-post"] = nft.Chain{{OIFName: "wgmesh0", Verdict: nft.Verdict{Kind: nft.VerdictReturn}},
		{Saddr: netip.MustParsePrefix("198.19.1.0/24"), Counter: true, Masquerade: true}}
	return rs
}

// TestKernelParts: two parts write one table without touching each other,
// read back what they wrote (no difference, so no write), repair a base
// chain hooked otherwise behind their back, and DeleteTable removes all.
func TestKernelParts(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-nft-parts")
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	a := &nft.Kernel{Part: partA, NetNSFd: fd}
	b := &nft.Kernel{Part: partB, NetNSFd: fd}
	sync := func(k *nft.Kernel, want *nft.Ruleset) bool {
		t.Helper()
		if err := k.EnsureSkeleton(nft.IPv4); err != nil {
			t.Fatal(err)
		}
		wrote, err := nft.Sync(k, nft.IPv4, want)
		if err != nil {
			t.Fatalf("part %s: %v", k.Part.Name, err)
		}
		return wrote
	}
	if !sync(a, desiredA()) || !sync(b, desiredB()) {
		t.Fatal("first sync wrote nothing")
	}
	if sync(a, desiredA()) || sync(b, desiredB()) {
		t.Error("a second sync of the same content wrote again: the read-back differs from the desired digest")
	}
	// Part a's content, read back, is exactly what it wrote; b's chain is
	// not in it.
	got, err := a.Read(nft.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if ch := nft.Diff(got, desiredA()); !ch.Empty() {
		t.Errorf("part a read back differs: %+v", ch)
	}
	if _, ok := got.Chains["b-post"]; ok {
		t.Error("part a reads part b's chain")
	}

	// Someone re-creates b's base chain at another priority.
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: nft.Table, Family: nftables.TableFamilyIPv4}
	ch := &nftables.Chain{Name: "b-post", Table: tbl}
	conn.FlushChain(ch)
	conn.DelChain(ch)
	prio := nftables.ChainPriority(50)
	conn.AddChain(&nftables.Chain{Name: "b-post", Table: tbl, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: &prio})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if !sync(b, desiredB()) {
		t.Fatal("a base chain hooked at another priority was not repaired")
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chains {
		if c.Name == "b-post" && (c.Priority == nil || *c.Priority != nftables.ChainPriority(nft.PrioritySNAT)) {
			t.Errorf("b-post priority %v after repair, want %d", c.Priority, nft.PrioritySNAT)
		}
	}
	if sync(a, desiredA()) {
		t.Error("b's repair touched part a")
	}

	// Delete of one part leaves the other.
	if err := b.Delete(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Read(nft.IPv4); nft.Diff(got, desiredA()).Empty() == false {
		t.Error("deleting part b changed part a")
	}
	if err := nft.DeleteTable(fd); err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == nft.Table {
			t.Errorf("table %s left after DeleteTable", nft.Table)
		}
	}
}

// TestFakeRefusesWhatTheKernelRefuses: a jump to a chain no one created is
// an error in the fake as in the kernel, and leaves the table unchanged.
func TestFakeRefusesWhatTheKernelRefuses(t *testing.T) {
	fake := nft.NewFake()
	p := fake.For(partB)
	want := desiredB()
	want.Chains["b-post"] = append(want.Chains["b-post"], nft.Rule{Verdict: nft.Jump("nowhere")})
	if _, err := nft.Sync(p, nft.IPv4, want); err == nil {
		t.Fatal("a jump to a missing chain was accepted")
	}
	if got := fake.Ruleset(nft.IPv4).Chains["b-post"]; got != nil {
		t.Errorf("a refused write changed the table: %v", got)
	}
}

// TestKernelStaleWantedAgain: a chain one write dropped (stale, deleted
// with the next write) that a full sync wants again, unchanged, is live
// again: the full sync writes its map element back and must not delete it.
func TestKernelStaleWantedAgain(t *testing.T) {
	netns.SkipUnlessRoot(t)
	k := kernelIn(t, netns.NewForTest(t, "wgm-nft-stale"), partA)
	if err := k.EnsureSkeleton(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	full := desiredA()
	if _, err := nft.Sync(k, nft.IPv4, full); err != nil {
		t.Fatal(err)
	}
	// A partial write drops the service: its chain and map element.
	before, after := nft.NewRuleset(), nft.NewRuleset()
	before.Chains["a-svc"] = full.Chains["a-svc"]
	for key, v := range full.Maps["a-map"] {
		before.AddElement("a-map", key, v)
	}
	if _, err := k.Apply(nft.IPv4, nft.Diff(nft.DigestOf(before), after), after); err != nil {
		t.Fatal(err)
	}
	if !k.HasStale() {
		t.Fatal("the dropped chain is not stale")
	}
	// A full sync wants it back before the stale write.
	if _, err := nft.Sync(k, nft.IPv4, full); err != nil {
		t.Fatalf("full sync of a stale chain wanted again: %v", err)
	}
	if err := k.FlushStale(); err != nil {
		t.Fatal(err)
	}
	got, err := k.Read(nft.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if ch := nft.Diff(got, full); !ch.Empty() {
		t.Errorf("read back differs: %+v", ch)
	}
	if err := nft.DeleteTable(k.NetNSFd); err != nil {
		t.Fatal(err)
	}
}

// kernelIn is a Kernel of part p in namespace ns; its kept socket, which
// would hold the namespace until the process ends, is closed with the test.
func kernelIn(t *testing.T, ns *netns.NS, p *nft.Part) *nft.Kernel {
	t.Helper()
	k := &nft.Kernel{Part: p, NetNSFd: netns.FDForTest(t, ns)}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// syncKernel syncs want and reports whether it wrote; it fails the test
// when the kernel, read back, differs from want (but for what waits, stale,
// for the next write).
func syncKernel(t *testing.T, k *nft.Kernel, f nft.Family, want *nft.Ruleset) bool {
	t.Helper()
	if err := k.EnsureSkeleton(f); err != nil {
		t.Fatal(err)
	}
	wrote, err := nft.Sync(k, f, want)
	if err != nil {
		t.Fatalf("%s: %v", f, err)
	}
	if k.HasStale() {
		return wrote
	}
	got, err := k.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if ch := nft.Diff(got, want); !ch.Empty() {
		t.Fatalf("%s: read back differs after a sync: %+v", f, ch)
	}
	return wrote
}

// setNames lists the names of the sets in family f's table wgmesh.
func setNames(t *testing.T, k *nft.Kernel, f nft.Family) map[string]bool {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(k.NetNSFd))
	if err != nil {
		t.Fatal(err)
	}
	fam := nftables.TableFamilyIPv4
	if f == nft.IPv6 {
		fam = nftables.TableFamilyIPv6
	}
	sets, err := conn.GetSets(&nftables.Table{Name: nft.Table, Family: fam})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, s := range sets {
		out[s.Name] = true
	}
	return out
}

// TestKernelTypedSets writes every new kind of object (verdict maps keyed
// by one address, static and dynamic typed sets of each kind, ranges,
// negated and concatenated lookups, ct states, port and ICMPv6 type
// ranges), reads it back equal so that a second sync writes nothing,
// changes it (a range split, a set of another kind, drift in an interval
// set), drops a policy's dynamic sets one write after its rules, and
// deletes the part.
func TestKernelTypedSets(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-nft-typed")
	k := kernelIn(t, ns, policyPart)
	for _, f := range nft.Families {
		if !syncKernel(t, k, f, desiredPolicy(f)) {
			t.Fatalf("%s: the first sync wrote nothing", f)
		}
		if syncKernel(t, k, f, desiredPolicy(f)) {
			t.Errorf("%s: a second sync of the same content wrote again", f)
		}
	}
	if out, err := ns.Exec(context.Background(), "nft", "list", "ruleset"); err == nil {
		t.Logf("nft list ruleset:\n%s", out)
	}

	// Counters: the counting rules of a chain, in order, by fingerprint.
	want := desiredPolicy(nft.IPv6)
	got, err := k.Counters(nft.IPv6, "policy-in-a")
	if err != nil {
		t.Fatal(err)
	}
	in := want.Chains["policy-in-a"]
	if len(got) != 2 || got[0].Index != 0 || got[0].Fingerprint != nft.Fingerprint(in[0].String()) ||
		got[1].Index != 3 || got[1].Fingerprint != nft.Fingerprint(in[3].String()) {
		t.Errorf("counters of policy-in-a: %+v", got)
	}
	if got, err := k.Counters(nft.IPv6, "policy-in-gone"); err != nil || len(got) != 0 {
		t.Errorf("counters of a missing chain: %v, %v; want none", got, err)
	}

	f := nft.IPv4
	p := policyPlan[f]
	// A range split by another except; a set of another kind (its user
	// rewritten in the same write).
	want = desiredPolicy(f)
	want.TypedSets["cidrs-x"] = nft.TypedSet{Kind: nft.SetInterval, Elems: map[nft.SetElem]bool{}}
	want.AddTypedElements("cidrs-x", nft.SetInterval, nft.Ranges([]netip.Prefix{p.block}, prefixes("10.1.0.0/16", "10.128.0.0/9"))...)
	want.TypedSets["peers-b"] = nft.TypedSet{Kind: nft.SetInterval, Elems: map[nft.SetElem]bool{}}
	want.AddTypedElements("peers-b", nft.SetInterval, nft.Ranges(prefixes("198.19.2.0/28"), nil)...)
	if !syncKernel(t, k, f, want) || syncKernel(t, k, f, want) {
		t.Error("changing the sets wrote nothing, or wrote twice")
	}

	// Drift: someone deletes one range's end element; the range then runs
	// into the next start, which the read-back sees as malformed: the set
	// is emptied and refilled.
	conn, err := nftables.New(nftables.WithNetNSFd(k.NetNSFd))
	if err != nil {
		t.Fatal(err)
	}
	cidrs := &nftables.Set{Table: &nftables.Table{Name: nft.Table, Family: nftables.TableFamilyIPv4}, Name: "cidrs-x", KeyType: nftables.TypeIPAddr, Interval: true}
	if err := conn.SetDeleteElements(cidrs, []nftables.SetElement{{Key: netip.MustParseAddr("10.1.0.0").AsSlice(), IntervalEnd: true}}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if !syncKernel(t, k, f, want) {
		t.Error("drift in an interval set was not repaired")
	}

	// Drift: someone recreates the static set policy-self as an address
	// set (emptying the chain that used it first); the next write
	// recreates it with its kind and refills the chain.
	tbl := &nftables.Table{Name: nft.Table, Family: nftables.TableFamilyIPv4}
	conn.FlushChain(&nftables.Chain{Name: "policy-forward", Table: tbl})
	conn.DelSet(&nftables.Set{Table: tbl, Name: "policy-self"})
	if err := conn.AddSet(&nftables.Set{Table: tbl, Name: "policy-self", KeyType: nftables.TypeIPAddr}, nil); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if !syncKernel(t, k, f, want) {
		t.Error("a static set of another kind was not repaired")
	}

	// Policy x goes: its chains and sets leave the ruleset. The sets are
	// emptied now and deleted with the next write, once no rule uses
	// them; the static policy-self stays, empty.
	gone := func(rs *nft.Ruleset) *nft.Ruleset {
		delete(rs.Chains, "netpol-x-allow")
		delete(rs.Chains, "policy-in-a")
		for _, s := range []string{"peers-b", "cidrs-x", "named-port-serve", "policy-self"} {
			delete(rs.TypedSets, s)
		}
		rs.Maps["policy-ingress-pods"] = map[nft.MapKey]nft.Verdict{}
		return rs
	}
	syncKernel(t, k, f, gone(desiredPolicy(f)))
	if !k.HasStale() {
		t.Fatal("nothing stale after dropping a policy")
	}
	if names := setNames(t, k, f); !names["peers-b"] || !names["cidrs-x"] {
		t.Errorf("sets deleted in the write that dropped their rules: %v", names)
	}
	// Wanted again before the stale write: live again.
	syncKernel(t, k, f, desiredPolicy(f))
	if err := k.FlushStale(); err != nil {
		t.Fatal(err)
	}
	syncKernel(t, k, f, desiredPolicy(f))
	syncKernel(t, k, f, gone(desiredPolicy(f)))
	if err := k.FlushStale(); err != nil {
		t.Fatal(err)
	}
	names := setNames(t, k, f)
	for _, s := range []string{"peers-b", "cidrs-x", "named-port-serve"} {
		if names[s] {
			t.Errorf("dynamic set %s left after the stale write", s)
		}
	}
	if !names["policy-self"] {
		t.Error("static set policy-self deleted")
	}
	if syncKernel(t, k, f, gone(desiredPolicy(f))) {
		t.Error("a second sync after the deletion wrote again")
	}

	// Delete takes every object of the part, static sets included.
	for _, f := range nft.Families {
		if err := k.Delete(f); err != nil {
			t.Fatal(err)
		}
		if names := setNames(t, k, f); len(names) != 0 {
			t.Errorf("%s: sets left after Delete: %v", f, names)
		}
	}
	if err := nft.DeleteTable(k.NetNSFd); err != nil {
		t.Fatal(err)
	}
}

// policyLab is the policy ruleset on a router between a client holding
// the remote addresses of policyPlan (peer, other, the ipBlock's) and a
// server holding the local pods (a, b, c); the policy's forward chain
// judges every packet between them.
type policyLab struct {
	router, client, server *netns.NS
	k                      *nft.Kernel
	// hosts are the namespaces holding each address.
	hosts map[netip.Addr]*netns.NS
}

// policyPorts are where the server and the client answer, TCP and UDP.
var policyPorts = []int{80, 443, 8050, 8100, 8101, 8443}

func newPolicyLab(t *testing.T) *policyLab {
	netns.SkipUnlessRoot(t)
	l := &policyLab{router: netns.NewForTest(t, "wgm-nft-router"), client: netns.NewForTest(t, "wgm-nft-client"),
		server: netns.NewForTest(t, "wgm-nft-server"), hosts: map[netip.Addr]*netns.NS{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netns.Veth(l.router, "eth0", l.client, "eth0", 0))
	must(netns.Veth(l.router, "eth1", l.server, "eth0", 0))
	must(l.router.Sysctl("net.ipv4.ip_forward", "1"))
	must(l.router.Sysctl("net.ipv6.conf.all.forwarding", "1"))
	for _, f := range nft.Families {
		p := policyPlan[f]
		bits, def := 24, "default"
		if f == nft.IPv6 {
			bits, def = 64, "default6"
		}
		remote := netip.PrefixFrom(p.peer, bits).Masked()
		gwRemote, gwLocal := remote.Addr().Next(), p.podCIDR.Addr().Next()
		must(netns.AddAddr(l.router, "eth0", netip.PrefixFrom(gwRemote, bits).String()))
		must(netns.AddAddr(l.router, "eth1", netip.PrefixFrom(gwLocal, bits).String()))
		must(netns.AddRoute(l.router, p.block.String(), p.peer.String(), "eth0"))
		for _, a := range []netip.Addr{p.peer, p.other} {
			must(netns.AddAddr(l.client, "eth0", netip.PrefixFrom(a, bits).String()))
			l.hosts[a] = l.client
		}
		for _, a := range []netip.Addr{p.inBlock, p.inExcept} {
			must(netns.AddAddr(l.client, "eth0", nft.Host(a).String()))
			l.hosts[a] = l.client
		}
		for _, a := range []netip.Addr{p.a, p.b, p.c} {
			must(netns.AddAddr(l.server, "eth0", netip.PrefixFrom(a, bits).String()))
			l.hosts[a] = l.server
		}
		must(netns.AddRoute(l.client, def, gwRemote.String(), "eth0"))
		must(netns.AddRoute(l.server, def, gwLocal.String(), "eth0"))
	}
	for _, ns := range []*netns.NS{l.client, l.server} {
		var addrs []netip.Addr
		for a, h := range l.hosts {
			if h == ns {
				addrs = append(addrs, a)
			}
		}
		answer(t, ns, addrs)
	}
	l.k = kernelIn(t, l.router, policyPart)
	for _, f := range nft.Families {
		syncKernel(t, l.k, f, desiredPolicy(f))
	}
	return l
}

// answer accepts TCP connections on policyPorts and echoes UDP datagrams
// to addrs (a socket per address, so that a reply comes from the address
// the datagram went to).
func answer(t *testing.T, ns *netns.NS, addrs []netip.Addr) {
	var closers []io.Closer
	err := ns.Do(func() error {
		for _, port := range policyPorts {
			tl, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			closers = append(closers, tl)
			go func() {
				for {
					c, err := tl.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			for _, a := range addrs {
				ul, err := net.ListenPacket("udp", netip.AddrPortFrom(a, uint16(port)).String())
				if err != nil {
					return err
				}
				closers = append(closers, ul)
				go func() {
					buf := make([]byte, 1500)
					for {
						n, from, err := ul.ReadFrom(buf)
						if err != nil {
							return
						}
						_, _ = ul.WriteTo(buf[:n], from)
					}
				}()
			}
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// drops is the number of packets the policy's counted drops took.
func (l *policyLab) drops(t *testing.T, f nft.Family) uint64 {
	t.Helper()
	var n uint64
	for _, chain := range []string{"policy-forward", "policy-in-a", "policy-out-c"} {
		cs, err := l.k.Counters(f, chain)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			n += c.Packets
		}
	}
	return n
}

// send opens p's connection (or sends its ICMPv6 message) from the
// namespace holding its source, and returns once it is through (accept)
// or a counted drop took it (drop): either proves the router judged it, so
// no outcome rests on a timeout.
func (l *policyLab) send(t *testing.T, f nft.Family, p nft.Packet) string {
	t.Helper()
	before := l.drops(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	through := make(chan error, 1)
	if p.Proto == nft.ICMPv6 {
		go func() { through <- l.icmpv6(ctx, p) }()
	} else {
		go func() { through <- l.dial(ctx, p) }()
	}
	var outcome string
	var failed error
	err := wait.Poll(ctx, 20*time.Second, func() error {
		select {
		case failed = <-through:
			outcome = "accept"
			return nil
		default:
		}
		if l.drops(t, f) > before {
			outcome = "drop"
			return nil
		}
		return errors.New("neither through nor dropped yet")
	})
	if err == nil {
		err = failed
	}
	if err != nil {
		t.Fatalf("%s %s -> %s: %v", p.Proto, p.Src, netip.AddrPortFrom(p.Dst, p.DPort), err)
	}
	return outcome
}

// dial opens a TCP connection, or has a UDP datagram echoed.
func (l *policyLab) dial(ctx context.Context, p nft.Packet) error {
	return l.hosts[p.Src].Do(func() error {
		network := "tcp"
		var local net.Addr = &net.TCPAddr{IP: p.Src.AsSlice()}
		if p.Proto == nft.UDP {
			network, local = "udp", &net.UDPAddr{IP: p.Src.AsSlice()}
		}
		d := net.Dialer{LocalAddr: local}
		c, err := d.DialContext(ctx, network, netip.AddrPortFrom(p.Dst, p.DPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		if p.Proto != nft.UDP {
			return nil
		}
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
		defer stop()
		if _, err := c.Write([]byte("policy")); err != nil {
			return err
		}
		_, err = c.Read(make([]byte, 16))
		return err
	})
}

// icmpv6 sends an ICMPv6 message of p's type and returns once the
// destination's namespace received it.
func (l *policyLab) icmpv6(ctx context.Context, p nft.Packet) error {
	var rx net.PacketConn
	if err := l.hosts[p.Dst].Do(func() (err error) {
		rx, err = net.ListenPacket("ip6:ipv6-icmp", "::")
		return err
	}); err != nil {
		return err
	}
	defer rx.Close()
	stop := context.AfterFunc(ctx, func() { rx.SetDeadline(time.Now()) })
	defer stop()
	// Type, code, checksum (the kernel's), 4 bytes reserved and a target.
	msg := append([]byte{p.ICMPv6Type, 0, 0, 0, 0, 0, 0, 0}, p.Dst.AsSlice()...)
	if err := l.hosts[p.Src].Do(func() error {
		tx, err := net.ListenPacket("ip6:ipv6-icmp", p.Src.String())
		if err != nil {
			return err
		}
		defer tx.Close()
		_, err = tx.WriteTo(msg, &net.IPAddr{IP: p.Dst.AsSlice()})
		return err
	}); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := rx.ReadFrom(buf)
		if err != nil {
			return err
		}
		if a, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP); ok && a == p.Src && n > 0 && buf[0] == p.ICMPv6Type {
			return nil
		}
	}
}

// TestKernelPolicyTraffic sends the packets TestTracePolicy traces through
// a router whose forward hook holds the policy ruleset: the kernel decides
// as the tracer does, by vmaps keyed by one address, address, interval and
// concatenated set lookups (negated too), port and ICMPv6 type ranges and
// ct state; every drop is one the counters read back.
func TestKernelPolicyTraffic(t *testing.T) {
	l := newPolicyLab(t)
	for _, f := range nft.Families {
		for _, tc := range policyCases(f) {
			if !tc.inKernel {
				continue
			}
			if got := l.send(t, f, tc.p); got != tc.want {
				t.Errorf("%s %s (%s -> %s %s %d): %s, want %s", f, tc.name, tc.p.Src, tc.p.Dst, tc.p.Proto, tc.p.DPort, got, tc.want)
			}
		}
	}
	for _, f := range nft.Families {
		if err := l.k.Delete(f); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKernelRefusedWriteLeavesNoTrace: a Kernel keeps its netlink
// connection between operations; a write the kernel refuses (its table was
// deleted underneath it) must not leave messages or answers on it for the
// next operation, and the connections it keeps stay one of each kind.
func TestKernelRefusedWriteLeavesNoTrace(t *testing.T) {
	netns.SkipUnlessRoot(t)
	a := kernelIn(t, netns.NewForTest(t, "wgm-nft-refused"), partA)
	sockets := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ents {
			if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && len(l) > 7 && l[:7] == "socket:" {
				n++
			}
		}
		return n
	}
	before := sockets()
	full := desiredA()
	svc := netip.MustParseAddr("198.18.128.11")
	for i := range 20 {
		if err := a.EnsureSkeleton(nft.IPv4); err != nil {
			t.Fatal(err)
		}
		if _, err := nft.Sync(a, nft.IPv4, full); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		// Someone deletes the table; a partial write adding an element
		// is then refused by the kernel, not by the checks before it.
		if err := nft.DeleteTable(a.NetNSFd); err != nil {
			t.Fatal(err)
		}
		after := nft.NewRuleset()
		after.AddElement("a-map", nft.MapKey{Addr: svc, Proto: nft.TCP, Port: 80}, nft.Goto("a-svc"))
		after.Chains["a-svc"] = full.Chains["a-svc"]
		if _, err := a.Apply(nft.IPv4, nft.Diff(nft.DigestOf(nft.NewRuleset()), after), after); err == nil {
			t.Fatalf("round %d: a write into a deleted table was accepted", i)
		}
		// The next operations on the Kernel work and see what is there.
		if _, err := a.Generation(); err != nil {
			t.Fatal(err)
		}
		if err := a.EnsureSkeleton(nft.IPv4); err != nil {
			t.Fatalf("round %d: the write after a refused one: %v", i, err)
		}
		if _, err := nft.Sync(a, nft.IPv4, full); err != nil {
			t.Fatalf("round %d: the write after a refused one: %v", i, err)
		}
		got, err := a.Read(nft.IPv4)
		if err != nil {
			t.Fatal(err)
		}
		if ch := nft.Diff(got, full); !ch.Empty() {
			t.Fatalf("round %d: read back differs: %+v", i, ch)
		}
	}
	// The refused writes' connections close in the background.
	if err := wait.Poll(context.Background(), 5*time.Second, func() error {
		if n := sockets(); n > before+2 {
			return fmt.Errorf("%d sockets open after 20 rounds, %d before", n, before)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
