package tunnel

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/go-logr/logr"

	"github.com/wgmesh/wgmesh/agent/wireguard"
)

// envUserspace makes the test binary act as `wgmesh-agent
// userspace-wireguard --interface=<value>`, so that the integration tests run
// the real userspace WireGuard process without building the agent binary.
const envUserspace = "WGMESH_TEST_USERSPACE_INTERFACE"

func TestMain(m *testing.M) {
	if name := os.Getenv(envUserspace); name != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		signal.Ignore(syscall.SIGHUP)
		if err := wireguard.RunUserspace(ctx, name, logr.Discard()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
