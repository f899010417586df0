package netns

import (
	"os"
	"testing"
)

// SkipUnlessRoot skips a test that creates network namespaces when it runs
// with -short or without root.
func SkipUnlessRoot(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("network namespaces: skipped with -short")
	}
	if os.Geteuid() != 0 {
		tb.Skip("network namespaces: need root")
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
