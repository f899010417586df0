package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/test/netns"
)

// RunDir holds the lock and state of the one local cluster a machine runs at a time.
const RunDir = "/run/wgm-cluster"

// ErrClusterRunning says that another local cluster runs on this machine.
var ErrClusterRunning = errors.New("a wgmesh local cluster is already running on this machine")

// runState is what a later Start needs to clean up after a crashed run.
type runState struct {
	OwnerPID int          `json:"ownerPID"`
	WorkDir  string       `json:"workDir"`
	Procs    []procRecord `json:"procs"`
}

type procRecord struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start string `json:"start"`
}

// runLock is the flock that marks a running cluster; the kernel drops it when the owner
// dies, so a crashed run never blocks the next one.
type runLock struct {
	mu    sync.Mutex
	f     *os.File
	state runState
}

func statePath() string { return filepath.Join(RunDir, "state.json") }

// acquireRun takes the lock, or explains who holds it. With the lock held, it removes what a
// crashed run left behind.
func acquireRun(ctx context.Context, wait time.Duration, log func(string, ...any)) (*runLock, error) {
	deadline := time.Now().Add(wait)
	logged := false
	var f *os.File
	for {
		if err := os.MkdirAll(RunDir, 0o755); err != nil {
			return nil, err
		}
		var err error
		f, err = os.OpenFile(filepath.Join(RunDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if sameFile(f, filepath.Join(RunDir, "lock")) {
				break
			}
			// The previous owner removed the file after we opened it: try the new one.
			f.Close()
			continue
		}
		f.Close()
		prev, _ := readState()
		if time.Now().Before(deadline) && ctx.Err() == nil {
			if !logged {
				log("another local cluster runs (owner pid %d); waiting up to %s for it to stop", prev.OwnerPID, wait)
				logged = true
			}
			time.Sleep(500 * time.Millisecond)
			continue
		}
		return nil, fmt.Errorf("%w (owner pid %d, work dir %s): stop it first (make demo-down for the demo): %v", ErrClusterRunning, prev.OwnerPID, prev.WorkDir, err)
	}
	l := &runLock{f: f}
	if err := cleanupPreviousRun(); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

func readState() (runState, error) {
	var s runState
	b, err := os.ReadFile(statePath())
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// cleanupPreviousRun kills the processes a crashed run recorded, removes every orphaned wgm
// namespace, link and mount, and its work directory.
func cleanupPreviousRun() error {
	prev, err := readState()
	if err == nil {
		var pids []int
		for _, p := range prev.Procs {
			if st, err := netns.ProcessStart(p.PID); err == nil && st == p.Start {
				pids = append(pids, p.PID)
			}
		}
		netns.KillAndWait(pids...)
		if strings.Contains(prev.WorkDir, "wgm-") {
			os.RemoveAll(prev.WorkDir)
		}
	}
	os.Remove(statePath())
	// Real nodes' pod processes are in neither a node's network nor its mount namespace:
	// their cgroups find them.
	var errs []error
	for _, root := range leftoverCgroupRoots() {
		errs = append(errs, removeCgroupRoot(root))
	}
	return errors.Join(append(errs, netns.CleanupLeftovers())...)
}

func (l *runLock) save() error {
	b, err := json.MarshalIndent(l.state, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, statePath())
}

func (l *runLock) recordProc(name string, pid int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, err := netns.ProcessStart(pid)
	if err != nil {
		return fmt.Errorf("process %s (%d): %w", name, pid, err)
	}
	l.state.Procs = append(l.state.Procs, procRecord{Name: name, PID: pid, Start: st})
	return l.save()
}

func (l *runLock) forgetProc(pid int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.state.Procs[:0]
	for _, p := range l.state.Procs {
		if p.PID != pid {
			out = append(out, p)
		}
	}
	l.state.Procs = out
	_ = l.save()
}

func (l *runLock) release() error {
	if l.f == nil {
		return nil
	}
	err := os.Remove(statePath())
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	// Remove the lock file while still holding it, so a waiting Start never locks a file
	// that is gone.
	os.Remove(filepath.Join(RunDir, "lock"))
	l.f.Close()
	l.f = nil
	os.Remove(RunDir)
	return err
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// Cleanup removes what a crashed local cluster left behind: the processes it recorded, its
// work directory, and every orphaned wgm namespace, link and mount. It fails when a cluster
// is running (stop that one instead).
func Cleanup(ctx context.Context) error {
	l, err := acquireRun(ctx, 0, func(string, ...any) {})
	if err != nil {
		return err
	}
	err = l.release()
	if rerr := netns.ReleaseDirs(); err == nil {
		err = rerr
	}
	return err
}
