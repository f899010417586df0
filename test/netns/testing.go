package netns

import (
	"os"
	"testing"

	"github.com/wgmesh/wgmesh/test/skip"
)

// SkipUnlessRoot skips a test that creates network namespaces when it runs
// with -short or without root.
func SkipUnlessRoot(tb testing.TB) {
	tb.Helper()
	skip.Short(tb, "network namespaces")
	if os.Geteuid() != 0 {
		skip.Unless(tb, "network namespaces: need root")
	}
}

// NewForTest creates a network namespace that is removed when the test ends,
// also when it fails.
func NewForTest(tb testing.TB, name string) *NS {
	tb.Helper()
	ns, err := New(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ns.Close() })
	return ns
}

// SkipUnlessControlPlane skips a test that runs the local cluster: it needs
// root and the control-plane binaries (KUBEBUILDER_ASSETS, which make test
// sets), and does not run with -short.
func SkipUnlessControlPlane(tb testing.TB) {
	tb.Helper()
	SkipUnlessRoot(tb)
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		skip.Unless(tb, "local cluster: KUBEBUILDER_ASSETS is unset (make test sets it; see hack/control-plane.sh)")
	}
}

// FDForTest opens ns for the file descriptor that selects it (as nftables
// and netlink options take it), closed when the test ends.
func FDForTest(tb testing.TB, ns *NS) int {
	tb.Helper()
	f, err := os.Open(ns.Path())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return int(f.Fd())
}
