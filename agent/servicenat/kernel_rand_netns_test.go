package servicenat

import (
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
)

// randomService builds a Service with random ports, policies and endpoints
// from a small pool of addresses, so that changes collide often.
func randomService(r *rand.Rand, i int) Service {
	s := Service{ServiceKey: ServiceKey{"ns", fmt.Sprintf("s%d", i)},
		ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 128, byte(10 + i)})}}
	if r.Intn(3) == 0 {
		s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr(fmt.Sprintf("2001:db8:18::%x", 10+i)))
	}
	if r.Intn(4) == 0 {
		s.ExternalIPs = []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 0, byte(200 + r.Intn(3))})}
	}
	if r.Intn(5) == 0 {
		s.LoadBalancerIPs = []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 0, byte(210 + i)})}
		if r.Intn(2) == 0 {
			s.SourceRanges = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
		}
	}
	if r.Intn(4) == 0 {
		s.AffinityTimeout = time.Duration(1+r.Intn(3)) * time.Hour
	}
	s.ExternalLocal = r.Intn(4) == 0
	s.InternalLocal = r.Intn(6) == 0
	for p := 0; p < 1+r.Intn(3); p++ {
		proto := []nft.Protocol{nft.TCP, nft.UDP, nft.SCTP}[r.Intn(3)]
		port := Port{Name: fmt.Sprintf("p%d", p), Protocol: proto, Port: uint16(80 + p)}
		if r.Intn(2) == 0 {
			port.NodePort = uint16(30000 + i*10 + p)
		}
		for e := 0; e < r.Intn(5); e++ {
			ep := Endpoint{Addr: netip.AddrFrom4([4]byte{198, 19, byte(1 + r.Intn(2)), byte(1 + r.Intn(8))}), Port: 8080,
				Local: r.Intn(2) == 0, Ready: r.Intn(4) != 0}
			ep.Serving, ep.Terminating = ep.Ready || r.Intn(2) == 0, !ep.Ready
			if r.Intn(4) == 0 {
				ep.Addr = netip.MustParseAddr(fmt.Sprintf("2001:db8:19:1::%x", 1+r.Intn(8)))
			}
			port.Endpoints = append(port.Endpoints, ep)
		}
		s.Ports = append(s.Ports, port)
	}
	return s
}

// TestIncrementalMatchesFullRender applies a long random sequence of
// Service changes the way the proxy's partial sync does (old fragment ->
// new fragment of the changed Services only) to a real kernel, and after
// every step reads the kernel back and compares it with a fresh full
// render of the same input.
func TestIncrementalMatchesFullRender(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgmsn-rand")
	k := kernelIn(t, ns)
	seed := time.Now().UnixNano()
	if v, err := strconv.ParseInt(os.Getenv("WGMESH_SEED"), 10, 64); err == nil {
		seed = v
	}
	r := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)

	in := sampleInput()
	in.Services = nil
	table := NewTable(in)
	const n = 12
	live := map[int]Service{}
	for _, f := range nft.Families {
		if err := k.EnsureSkeleton(f); err != nil {
			t.Fatal(err)
		}
		want := table.Full(f)
		if _, err := k.Apply(f, nft.Diff(nft.NewDigest(), want), want); err != nil {
			t.Fatal(err)
		}
	}
	steps := 150
	if testing.Short() {
		steps = 30
	}
	elementOnly := 0
	for step := 0; step < steps; step++ {
		// One to three Services change at once: added, changed or deleted.
		// Now and then a full write, as the proxy's full sync does.
		bulk := r.Intn(8) == 0
		if bulk {
			table.Bulk()
		}
		prev := map[ServiceKey]Service{}
		for _, s := range live {
			prev[s.ServiceKey] = s
		}
		for c := 0; c < 1+r.Intn(3); c++ {
			i := r.Intn(n)
			if _, ok := live[i]; ok && r.Intn(4) == 0 {
				delete(live, i)
				table.Delete(ServiceKey{"ns", fmt.Sprintf("s%d", i)})
				continue
			}
			live[i] = randomService(r, i)
			table.Update(live[i])
		}
		// Every Service whose fragment changes (a contest's other side
		// too) was and is fast.
		fast := true
		for _, k := range table.Changed() {
			if s, ok := prev[k]; ok && !Fast(s) {
				fast = false
			}
			for _, s := range live {
				if s.ServiceKey == k && !Fast(s) {
					fast = false
				}
			}
		}
		in.Services = in.Services[:0]
		for i := 0; i < n; i++ {
			if s, ok := live[i]; ok {
				in.Services = append(in.Services, s)
			}
		}
		for _, f := range nft.Families {
			if bulk {
				cur, err := k.Read(f)
				if err != nil {
					t.Fatal(err)
				}
				want := table.Full(f)
				if _, err := k.Apply(f, nft.Diff(cur, want), want); err != nil {
					t.Fatalf("step %d (seed %d) %s: full write: %v", step, seed, f, err)
				}
			} else {
				before, after := table.Changes(f)
				// Fast Services only: elements, and chain endpoints-dnat
				// alone when an endpoint count first occurs or last goes.
				if _, ok := after.Chains[ChainEndpointsDNAT]; fast && len(after.Chains) == 0 {
					elementOnly++
				} else if fast && (!ok || len(after.Chains) > 1) {
					t.Errorf("step %d (seed %d) %s: fast Services changed, yet chains are written: %v", step, seed, f, sortedChains(after))
				}
				if _, err := k.Apply(f, nft.Diff(nft.DigestOf(before), after), after); err != nil {
					t.Logf("changes: %+v", nft.Diff(nft.DigestOf(before), after))
					t.Fatalf("step %d (seed %d) %s: %v", step, seed, f, err)
				}
			}
			// Chains and sets this write left unreferenced are deleted
			// with the next one.
			if err := k.FlushStale(); err != nil {
				t.Fatalf("step %d (seed %d) %s: deleting stale chains: %v", step, seed, f, err)
			}
			got, err := k.Read(f)
			if err != nil {
				t.Fatal(err)
			}
			full := Render(in, f)
			if !reflect.DeepEqual(normalize(got), normalize(nft.DigestOf(full))) {
				t.Fatalf("step %d (seed %d) %s: kernel differs from a full render: %+v", step, seed, f, nft.Diff(got, full))
			}
		}
		table.Commit()
	}
	t.Logf("%d of %d family writes were element-only", elementOnly, 2*steps)
	if elementOnly == 0 {
		t.Error("no write was element-only")
	}
}

func sortedChains(rs *nft.Ruleset) []string {
	var out []string
	for n := range rs.Chains {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// normalize drops empty maps and sets so that "absent" and "empty" compare equal.
func normalize(d *nft.Digest) *nft.Digest {
	out := nft.NewDigest()
	for k, v := range d.Chains {
		out.Chains[k] = v
	}
	for k, v := range d.Maps {
		if len(v) > 0 {
			out.Maps[k] = v
		}
	}
	for k, v := range d.Sets {
		if len(v) > 0 {
			out.Sets[k] = v
		}
	}
	for k, v := range d.Affinity {
		out.Affinity[k] = v
	}
	for k, v := range d.TypedSets {
		if len(v.Elems) > 0 {
			out.TypedSets[k] = v
		}
	}
	return out
}
