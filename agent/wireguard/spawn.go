package wireguard

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// SpawnOptions say how to start the userspace WireGuard process.
type SpawnOptions struct {
	// Binary is the executable; default: this process's own executable.
	Binary string
	// Args are its arguments; default: userspace-wireguard --interface=<name>.
	Args []string
	// Env is added to the environment.
	Env []string
	// LogFile receives its output (appended).
	LogFile string
}

// Spawn starts the userspace WireGuard process detached from the caller: its
// own session (setsid), so that a signal to the agent, even kill -9 of its
// process group, leaves the data plane running. The child is reaped in the
// background while the agent lives; after that init adopts it.
func Spawn(name string, o SpawnOptions) (int, error) {
	bin := o.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return 0, fmt.Errorf("finding own executable to start userspace WireGuard: %w", err)
		}
		bin = exe
	}
	args := o.Args
	if args == nil {
		args = []string{"userspace-wireguard", "--interface=" + name}
	}
	// Not CommandContext: the process must outlive the caller's context.
	cmd := exec.Command(bin, args...) //nolint:gosec // our own binary
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if o.LogFile != "" {
		if err := os.MkdirAll(filepath.Dir(o.LogFile), 0o700); err != nil {
			return 0, fmt.Errorf("creating directory for %s: %w", o.LogFile, err)
		}
		f, err := os.OpenFile(o.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return 0, fmt.Errorf("opening userspace WireGuard log %s: %w", o.LogFile, err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting userspace WireGuard %s %v: %w", bin, args, err)
	}
	go func() { _ = cmd.Wait() }()
	return cmd.Process.Pid, nil
}

// StartFunc starts a userspace WireGuard process for interface name.
type StartFunc func(ctx context.Context, name string) error
