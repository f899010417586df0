package servicenat

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
)

// benchServices makes n Services with eps endpoints each, all in the
// addresses tests may use (services in 198.18.128.0/17 would run out past
// 32k; n stays below that).
func benchServices(n, eps int) []Service {
	out := make([]Service, n)
	for i := range out {
		s := Service{ServiceKey: ServiceKey{"bench", fmt.Sprintf("svc-%05d", i)},
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, byte(128 + i/256), byte(i % 256)})}}
		p := Port{Name: "http", Protocol: nft.TCP, Port: 80}
		for e := 0; e < eps; e++ {
			k := i*eps + e
			p.Endpoints = append(p.Endpoints, Endpoint{Addr: netip.AddrFrom4([4]byte{198, 19, byte(k / 65536 % 256), byte(k / 256 % 256)}).Next(),
				Port: uint16(8000 + k%256), Ready: true, Serving: true})
		}
		s.Ports = []Port{p}
		out[i] = s
	}
	return out
}

// BenchmarkOneServiceChange measures what a partial sync costs at 1,000
// and 10,000 Services of 10 endpoints in a real kernel: rendering the one
// changed Service, diffing it against its old fragment, and writing the
// difference (one endpoint replaced). Also reports the full write of the
// whole table and a no-op full comparison (read back and diff).
func BenchmarkOneServiceChange(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (network namespaces)")
	}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns, err := netns.New(fmt.Sprintf("wgmsn-bench%d", n))
			if err != nil {
				b.Fatal(err)
			}
			defer ns.Close()
			f, err := os.Open(ns.Path())
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			k := &nft.Kernel{Part: Part, NetNSFd: int(f.Fd())}
			in := sampleInput()
			in.Services = nil
			table := NewTable(in)
			svcs := benchServices(n, 10)
			start := time.Now()
			for _, s := range svcs {
				table.Update(s)
			}
			if err := k.EnsureSkeleton(nft.IPv4); err != nil {
				b.Fatal(err)
			}
			want := table.Full(nft.IPv4)
			batches, err := k.Apply(nft.IPv4, nft.Diff(nft.NewDigest(), want), want)
			if err != nil {
				b.Fatal(err)
			}
			table.Commit()
			// Reported after the loop: ResetTimer drops what was reported before it.
			fullWrite := time.Since(start)

			start = time.Now()
			cur, err := k.Read(nft.IPv4)
			if err != nil {
				b.Fatal(err)
			}
			if ch := nft.Diff(cur, table.Full(nft.IPv4)); !ch.Empty() {
				b.Fatalf("no-op full check found %d differences", ch.Size(want))
			}
			noop := time.Since(start)

			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s := svcs[i%n]
				s.Ports = []Port{s.Ports[0]}
				s.Ports[0].Endpoints = append([]Endpoint{}, s.Ports[0].Endpoints...)
				s.Ports[0].Endpoints[0].Port = uint16(9000 + i%1000)
				table.Update(s)
				before, after := table.Changes(nft.IPv4)
				if _, err := k.Apply(nft.IPv4, nft.Diff(nft.DigestOf(before), after), after); err != nil {
					b.Fatal(err)
				}
				table.Commit()
				svcs[i%n] = s
			}
			b.ReportMetric(fullWrite.Seconds(), "full-write-s")
			b.ReportMetric(float64(batches), "full-write-batches")
			b.ReportMetric(noop.Seconds()*1000, "noop-full-check-ms")
		})
	}
}
