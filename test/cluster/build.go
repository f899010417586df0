package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// TestnodeEnv names a wgmesh-testnode built beforehand, used instead of building one:
// hack/test-kernel.sh sets it for the VM, where go build under emulation takes minutes.
const TestnodeEnv = "WGMESH_TESTNODE"

// buildTestnode builds test/cmd/wgmesh-testnode into the user cache (incremental: seconds
// when nothing changed) and returns its path.
func buildTestnode(ctx context.Context, log io.Writer) (string, error) {
	if p := os.Getenv(TestnodeEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", TestnodeEnv, p, err)
		}
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "wgmesh", "testnode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "wgmesh-testnode")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./test/cmd/wgmesh-testnode")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./test/cmd/wgmesh-testnode: %w: %s", err, b)
	}
	fmt.Fprintf(log, "cluster: node runtime built: %s\n", out)
	return out, nil
}
