package antispoof

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/google/nftables"

	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
)

// kernelState reads the table in ns.
func kernelState(t *testing.T, ns *netns.NS) (state, bool) {
	t.Helper()
	var st state
	var ok bool
	err := ns.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		st, ok, err = read(c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return st, ok
}

func in(t *testing.T, ns *netns.NS, fn func() error) error {
	t.Helper()
	return ns.Do(fn)
}

func must(t *testing.T, ns *netns.NS, what string, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func elementStrings(es []Element) string {
	var out []string
	for _, e := range es {
		out = append(out, e.String())
	}
	return strings.Join(out, "\n")
}

// TestKernelRegisterCheckUnregister: the kernel takes the table, chain and
// sets as rendered; registering is idempotent, replaces a port's old
// elements, repairs a tampered chain, drops elements of vanished
// interfaces; Check sees every difference; Unregister and DeleteTable
// never fail on what is already gone.
func TestKernelRegisterCheckUnregister(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-as-kernel")
	for _, pair := range [][2]string{{"wgmasa", "wgmasa-p"}, {"wgmasb", "wgmasb-p"}} {
		if err := netns.Veth(ns, pair[0], ns, pair[1], 0); err != nil {
			t.Fatal(err)
		}
	}
	a := portA
	a.HostIf = "wgmasa"
	b := portB
	b.HostIf = "wgmasb"

	must(t, ns, "Unregister without a table", func() error { return Unregister(a.HostIf) })
	if err := in(t, ns, func() error { return Check(a) }); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Check without a table: %v", err)
	}
	must(t, ns, "Register A", func() error { return Register(a) })
	must(t, ns, "Register A again", func() error { return Register(a) })
	must(t, ns, "Register B", func() error { return Register(b) })
	must(t, ns, "Check A", func() error { return Check(a) })
	must(t, ns, "Check B", func() error { return Check(b) })
	st, _ := kernelState(t, ns)
	if !st.rulesOK() {
		t.Fatalf("chain rules after two registrations: %q", st.rules)
	}
	wantA, _ := a.Elements()
	if got := elementStrings(st.elementsOf(a.HostIf)); got != elementStrings(wantA) {
		t.Errorf("A's elements in the kernel:\n%s\nwant:\n%s", got, elementStrings(wantA))
	}

	// A new pod on the same interface name (a new address): the old
	// address is no longer A's.
	moved := a
	moved.IPs = []netip.Addr{netip.MustParseAddr("198.19.1.20")}
	must(t, ns, "Register moved A", func() error { return Register(moved) })
	if err := in(t, ns, func() error { return Check(a) }); err == nil || !strings.Contains(err.Error(), "missing element pod-ipv4 wgmasa . 02:00:00:00:00:0a . 198.19.1.10") {
		t.Errorf("Check of the old registration: %v, want the missing old address named", err)
	}
	must(t, ns, "Check moved A", func() error { return Check(moved) })

	// Tampering: the chain's rules flushed, an element deleted.
	must(t, ns, "flush chain", func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tb := table()
		c.FlushChain(chain(tb))
		s := setsByName()[SetIPv4]
		wantB, _ := b.Elements()
		for _, e := range wantB {
			if e.Set == SetIPv4 {
				if err := c.SetDeleteElements(s, []nftables.SetElement{{Key: e.Key}}); err != nil {
					return err
				}
			}
		}
		return c.Flush()
	})
	err := in(t, ns, func() error { return Check(b) })
	for _, want := range []string{"chain antispoof-prerouting has rules []", "missing element pod-ipv4 wgmasb . 02:00:00:00:00:0b . 198.19.1.11", "port wgmasb"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check after tampering: %v, want %q", err, want)
		}
	}
	must(t, ns, "Register repairs", func() error { return Register(b) })
	must(t, ns, "Check after repair", func() error { return Check(b) })

	// B's interface vanishes without a DEL: the next registration drops
	// its elements.
	if err := netns.DeleteLink(ns, "wgmasb"); err != nil {
		t.Fatal(err)
	}
	must(t, ns, "Register A after B vanished", func() error { return Register(moved) })
	if st, _ := kernelState(t, ns); len(st.elementsOf("wgmasb")) != 0 {
		t.Errorf("elements of the vanished interface stay:\n%s", elementStrings(st.elementsOf("wgmasb")))
	}

	must(t, ns, "Unregister A", func() error { return Unregister(a.HostIf) })
	must(t, ns, "Unregister A again", func() error { return Unregister(a.HostIf) })
	if st, _ := kernelState(t, ns); len(st.elements) != 0 {
		t.Errorf("elements after every port left:\n%s", elementStrings(st.elements))
	}
	must(t, ns, "DeleteTable", func() error { return nft.DeleteTable(0) })
	must(t, ns, "DeleteTable again", func() error { return nft.DeleteTable(0) })
	if _, ok := kernelState(t, ns); ok {
		t.Error("table bridge wgmesh still exists after DeleteTable")
	}
}

// TestKernelConcurrentRegistrations: pods networked at once (the first
// ones create the table together) all end up registered, with the chain's
// rules once.
func TestKernelConcurrentRegistrations(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgm-as-conc")
	const n = 8
	var ports []Port
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("wgmas%d", i)
		if err := netns.Veth(ns, name, ns, name+"-p", 0); err != nil {
			t.Fatal(err)
		}
		p := portA
		p.HostIf = name
		p.IPs = []netip.Addr{netip.MustParseAddr(fmt.Sprintf("198.19.1.%d", 100+i))}
		ports = append(ports, p)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ns.Do(func() error { return Register(p) })
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Register(%s): %v", ports[i], err)
		}
	}
	for _, p := range ports {
		if err := ns.Do(func() error { return Check(p) }); err != nil {
			t.Error(err)
		}
	}
	if st, _ := kernelState(t, ns); !st.rulesOK() {
		t.Errorf("chain rules after concurrent registrations: %d rules %q", len(st.rules), st.rules)
	}
}
