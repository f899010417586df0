package e2e

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestMain gives controller-runtime's clients a logger: without one, the
// first client built after 30 s prints a stack trace into the test output
// ("log.SetLogger(...) was never called"), which reads like a crash.
func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
