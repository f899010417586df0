// Package skip is the one way tests skip for a missing requirement (root, the
// control plane, a built binary). With WGMESH_NO_SKIP=1 (make test and CI
// set it) such a skip is a failure instead, so that a run cannot go green
// without running every test. Skips that -short asks for stay skips.
package skip

import (
	"os"
	"testing"
)

// EnvNoSkip is the switch: when "1", a missing requirement fails the test.
const EnvNoSkip = "WGMESH_NO_SKIP"

// Required reports whether missing requirements fail tests.
func Required() bool { return os.Getenv(EnvNoSkip) == "1" && !testing.Short() }

// Unless skips tb because of reason, or fails it when requirements are
// required (WGMESH_NO_SKIP=1).
func Unless(tb testing.TB, reason string) {
	tb.Helper()
	if Required() {
		tb.Fatalf("required test cannot run (%s=1): %s", EnvNoSkip, reason)
	}
	tb.Skip(reason)
}

// Short skips tb when tests run with -short (make unit).
func Short(tb testing.TB, what string) {
	tb.Helper()
	if testing.Short() {
		tb.Skip(what + ": skipped with -short")
	}
}
