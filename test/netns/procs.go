package netns

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/test/wait"
)

// nsKey identifies a namespace by the device and inode of its nsfs file.
type nsKey struct{ dev, ino uint64 }

func nsID(path string) (nsKey, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsKey{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return nsKey{uint64(st.Dev), st.Ino}, nil
}

// pidsIn lists the processes (other than this one) whose namespace of the given kind ("net",
// "mnt") is in set.
func pidsIn(set map[nsKey]bool, kinds ...string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		for _, k := range kinds {
			id, err := nsID(fmt.Sprintf("/proc/%d/ns/%s", pid, k))
			if err == nil && set[id] {
				out = append(out, pid)
				break
			}
		}
	}
	return out, nil
}

// processAlive tells whether pid runs and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// processStart returns a process's start time in clock ticks since boot (field 22 of
// /proc/<pid>/stat), which tells a process from a later one that reuses its PID.
func processStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	return f[19], nil
}

// killAll sends SIGKILL to every pid and waits up to 10s until none runs any more.
func killAll(pids []int) {
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	_ = wait.Poll(context.Background(), 10*time.Second, func() error {
		for _, p := range pids {
			if processAlive(p) {
				return fmt.Errorf("process %d runs", p)
			}
		}
		return nil
	})
}

// ProcessStart returns an identity of pid's start (clock ticks since boot) that, together
// with the PID, tells a process from a later one reusing its PID.
func ProcessStart(pid int) (string, error) { return processStart(pid) }

// ProcessAlive tells whether pid runs (and is not a zombie).
func ProcessAlive(pid int) bool { return processAlive(pid) }

// KillAndWait sends SIGKILL to every pid and waits (up to 10s) until none runs.
func KillAndWait(pids ...int) { killAll(pids) }
