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
	"github.com/wgmesh/wgmesh/test/wait"
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

// acquireRun takes the lock, waiting up to lockWait (test/wait) while another run holds
// it, or explains who holds it. With the lock held, it removes what a crashed run left
// behind.
func acquireRun(ctx context.Context, lockWait time.Duration, log func(string, ...any)) (*runLock, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		f      *os.File
		prev   runState
		fatal  error
		logged bool
	)
	lock := func() error {
		if err := os.MkdirAll(RunDir, 0o755); err != nil {
			fatal = err
			cancel()
			return err
		}
		lf, err := os.OpenFile(filepath.Join(RunDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			fatal = err
			cancel()
			return err
		}
		if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			lf.Close()
			prev, _ = readState()
			if !logged && lockWait > 0 {
				log("another local cluster runs (owner pid %d); waiting up to %s for it to stop", prev.OwnerPID, lockWait)
				logged = true
			}
			return err
		}
		if !sameFile(lf, filepath.Join(RunDir, "lock")) {
			lf.Close()
			return errLockReplaced
		}
		f = lf
		return nil
	}
	err := wait.Every(ctx, lockWait, 500*time.Millisecond, func() error {
		err := lock()
		// The previous owner removed the file after we opened it: try the new one at once.
		for i := 0; i < 3 && errors.Is(err, errLockReplaced); i++ {
			err = lock()
		}
		return err
	})
	if fatal != nil {
		return nil, fatal
	}
	if err != nil {
		return nil, fmt.Errorf("%w (owner pid %d, work dir %s): stop it first (make demo-down for the demo): %v", ErrClusterRunning, prev.OwnerPID, prev.WorkDir, err)
	}
	l := &runLock{f: f}
	if err := cleanupPreviousRun(); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

// errLockReplaced: the lock file was removed (by its releasing owner) after it was opened.
var errLockReplaced = errors.New("the lock file was replaced meanwhile")

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
