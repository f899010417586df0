package netns

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Command returns a command that runs argv inside the namespace (via nsenter --net, so the
// started process's PID is argv[0]'s own).
func (n *NS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	if n.host {
		return exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	args := append([]string{"--net=" + n.path, "--"}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// Exec runs argv inside the namespace and returns its combined output. A failure's error
// carries the output.
func (n *NS) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	return run(n.Command(ctx, argv...), n.String())
}

func run(cmd *exec.Cmd, where string) ([]byte, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", strings.Join(cmd.Args, " "), where, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}
