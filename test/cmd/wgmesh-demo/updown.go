package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/proc"
	"github.com/wgmesh/wgmesh/test/wait"
)

const readyMarker = "=== wgmesh demo ready ==="
const failedMarker = "=== wgmesh demo failed ==="

func pidFile() string { return filepath.Join(StateDir, "pid") }
func logFile() string { return filepath.Join(StateDir, "demo.log") }

// up starts `wgmesh-demo serve` detached (own session, output to the log) and relays the
// log until the demo is shown.
func up() error {
	if pid := runningPID(); pid != 0 {
		return fmt.Errorf("a demo already runs (pid %d); `make demo-down` stops it", pid)
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(logFile())
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "serve")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	logf.Close()
	if err := os.WriteFile(pidFile(), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	go cmd.Wait()
	return relay(cmd.Process.Pid)
}

// relay copies the log to stdout until the ready marker, or fails when serve exits.
func relay(pid int) error {
	f, err := os.Open(logFile())
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if len(line) > 0 && strings.HasSuffix(line, "\n") {
			switch strings.TrimSpace(line) {
			case readyMarker:
				return nil
			case failedMarker:
				return errors.New("the demo failed (see above); `make demo-down` cleans up")
			}
			fmt.Print(line)
			continue
		}
		if err != nil && err != io.EOF {
			return err
		}
		if !netns.ProcessAlive(pid) {
			rest, _ := io.ReadAll(r)
			fmt.Print(line, string(rest))
			return fmt.Errorf("the demo process exited; log: %s", logFile())
		}
		// Keep a partial line for the next read.
		if len(line) > 0 {
			f.Seek(-int64(len(line)), io.SeekCurrent)
			r.Reset(f)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func runningPID() int {
	b, err := os.ReadFile(pidFile())
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !netns.ProcessAlive(pid) {
		return 0
	}
	if comm := proc.Name(pid); !strings.HasPrefix(comm, "wgmesh-demo") {
		return 0
	}
	return pid
}

// down stops the serve process (which tears the cluster down), then removes whatever a
// crashed demo may have left.
func down() error {
	if pid := runningPID(); pid != 0 {
		fmt.Printf("stopping the demo (pid %d)\n", pid)
		syscall.Kill(pid, syscall.SIGTERM)
		if err := wait.Poll(context.Background(), 90*time.Second, wait.True(func() bool { return !netns.ProcessAlive(pid) })); err != nil {
			fmt.Println("the demo did not stop in 90s; killing it")
			netns.KillAndWait(pid)
		}
	}
	// A crashed demo leaves processes recorded by the cluster and orphaned namespaces.
	err := cleanupCluster()
	if rerr := os.RemoveAll(StateDir); err == nil {
		err = rerr
	}
	if errors.Is(err, cluster.ErrClusterRunning) {
		fmt.Println("demo removed; another local cluster (not the demo, for example a test run) is running and was left alone:", err)
		return nil
	}
	if err != nil {
		return err
	}
	lo, _ := netns.Leftovers(true)
	if len(lo) > 0 {
		return fmt.Errorf("still present after cleanup (another test run?): %v", lo)
	}
	fmt.Println("demo removed: no wgm namespace, link, mount or process is left")
	return nil
}
