package servicenat

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
)

// kernelIn opens ns for nftables.
func kernelIn(t *testing.T, ns *netns.NS) *nft.Kernel {
	t.Helper()
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &nft.Kernel{Part: Part, NetNSFd: int(f.Fd())}
}

// sync applies the whole desired ruleset of both families the way the
// proxy's full check does: read, diff, apply.
func fullSync(t *testing.T, k *nft.Kernel, in Input) (writes int) {
	t.Helper()
	for _, f := range nft.Families {
		if err := k.EnsureSkeleton(f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cur, err := k.Read(f)
		if err != nil {
			t.Fatalf("%s read: %v", f, err)
		}
		want := Render(in, f)
		ch := nft.Diff(cur, want)
		writes += ch.Size(want)
		if _, err := k.Apply(f, ch, want); err != nil {
			t.Fatalf("%s apply: %v", f, err)
		}
	}
	return writes
}

func TestKernelProgramsAndReadsBack(t *testing.T) {
	netns.SkipUnlessRoot(t)
	ns := netns.NewForTest(t, "wgmsn-prog")
	k := kernelIn(t, ns)
	in := sampleInput()
	if n := fullSync(t, k, in); n == 0 {
		t.Fatal("first sync wrote nothing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, "nft", "list", "table", "ip", "wgmesh")
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	if n := fullSync(t, k, in); n != 0 {
		t.Fatalf("second sync over the same state wrote %d objects, want 0", n)
	}
	_ = netip.Addr{}
}

// TestKernelLargeTable writes 10,000 Services of 10 endpoints and reads
// them back whole at once: element lists beyond one netlink attribute's 64
// KiB and batches beyond the socket buffers must neither fail nor lose
// anything, and a dump while the kernel still grows a map's hash table
// must not miss elements (one read in three did, before nft read large
// sets until two dumps agree).
func TestKernelLargeTable(t *testing.T) {
	netns.SkipUnlessRoot(t)
	skip.Short(t, "large table")
	ns := netns.NewForTest(t, "wgmsn-large")
	k := kernelIn(t, ns)
	in := sampleInput()
	in.Services = benchServices(10000, 10)
	want := Render(in, nft.IPv4)
	if err := k.EnsureSkeleton(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Apply(nft.IPv4, nft.Diff(nft.NewDigest(), want), want); err != nil {
		t.Fatal(err)
	}
	got, err := k.Read(nft.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if ch := nft.Diff(got, want); !ch.Empty() {
		t.Fatalf("read back differs in %d objects (cluster-ips %d of %d, service-ips %d of %d, chains %d of %d)", ch.Size(want),
			len(got.Sets[SetClusterIPs]), len(want.Sets[SetClusterIPs]), len(got.Maps[MapServiceIPs]), len(want.Maps[MapServiceIPs]),
			len(got.Chains), len(want.Chains))
	}
}
