package meshsim

import (
	"net/netip"
	"sort"
	"testing"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func TestSimulatedNamesSortAfterTheRealNodes(t *testing.T) {
	names := []string{simName(10), simName(2), "wgm-node-3", simName(0), "wgm-node-1"}
	sort.Strings(names)
	want := []string{"wgm-node-1", "wgm-node-3", "wgm-sim-00000", "wgm-sim-00002", "wgm-sim-00010"}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("sorted %v, want %v", names, want)
		}
	}
}

func TestSimulatedAddressesLeadNowhere(t *testing.T) {
	nowhere := netip.MustParsePrefix("198.18.32.0/19")
	seen := map[netip.Addr]int{}
	for i := range simAddrs {
		a := simAddr(i)
		if !nowhere.Contains(a) {
			t.Fatalf("node %d: %s is outside %s", i, a, nowhere)
		}
		if j, dup := seen[a]; dup {
			t.Fatalf("nodes %d and %d share %s", j, i, a)
		}
		seen[a] = i
	}
	if simAddr(0) != netip.MustParseAddr("198.18.32.1") || simAddr(simAddrs) != simAddr(0) {
		t.Errorf("first %s, after %d: %s", simAddr(0), simAddrs, simAddr(simAddrs))
	}
}

func TestPublishes(t *testing.T) {
	mp := &wgv1.MeshPeer{Spec: wgv1.MeshPeerSpec{PublicKey: "k1", AllowedIPs: []wgv1.CIDR{"198.19.0.16/28"}}}
	for _, tc := range []struct {
		name  string
		mp    *wgv1.MeshPeer
		key   string
		cidrs []string
		want  bool
	}{
		{"current", mp, "k1", []string{"198.19.0.16/28"}, true},
		{"no MeshPeer", nil, "k1", []string{"198.19.0.16/28"}, false},
		{"an old key", mp, "k2", []string{"198.19.0.16/28"}, false},
		{"another CIDR", mp, "k1", []string{"198.19.0.32/28"}, false},
		{"a CIDR more", mp, "k1", []string{"198.19.0.16/28", "fd00::/64"}, false},
	} {
		if got := publishes(tc.mp, tc.key, tc.cidrs); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
