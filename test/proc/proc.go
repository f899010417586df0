// Package proc reads a process's CPU time, memory, name and children from
// /proc, for tests and benchmarks.
package proc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat.
const clockTicks = 100

// Stat is a process's CPU time and resident memory at one moment.
type Stat struct {
	CPU time.Duration // user + system
	// ChildrenCPU is the user + system time of the children it has waited
	// for (and of theirs).
	ChildrenCPU time.Duration
	// In KiB: VmRSS = RssAnon (heap, stacks) + RssFile (the binary's pages)
	// + RssShmem; VmHWM is the peak of VmRSS. Zero when the process has no
	// memory of its own (a kernel thread).
	RSS, HWM, RSSAnon, RSSFile int64
}

// Read reads pid's Stat from /proc/<pid>/stat and /proc/<pid>/status.
func Read(pid int) (Stat, error) {
	if pid <= 0 {
		return Stat{}, errors.New("no process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	// The command name, in parentheses, may hold spaces and parentheses.
	rp := strings.LastIndexByte(string(b), ')')
	if rp < 0 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b)[rp+1:])
	if len(f) < 15 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	var ticks [4]int64 // utime stime cutime cstime: fields 14-17, f[0] is field 3
	for i := range ticks {
		if ticks[i], err = strconv.ParseInt(f[11+i], 10, 64); err != nil {
			return Stat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	s := Stat{
		CPU:         time.Duration(ticks[0]+ticks[1]) * time.Second / clockTicks,
		ChildrenCPU: time.Duration(ticks[2]+ticks[3]) * time.Second / clockTicks,
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Stat{}, err
	}
	for _, kv := range []struct {
		field string
		v     *int64
	}{{"VmRSS", &s.RSS}, {"VmHWM", &s.HWM}, {"RssAnon", &s.RSSAnon}, {"RssFile", &s.RSSFile}} {
		*kv.v, _ = statusKiB(string(status), kv.field)
	}
	return s, nil
}

// StatusKiB reads a "kB" field (VmRSS, VmHWM, RssAnon, ...) of
// /proc/<pid>/status.
func StatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	v, err := statusKiB(string(b), field)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return v, nil
}

// statusKiB reads a "kB" field of a /proc/<pid>/status text.
func statusKiB(status, field string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s", field)
}

// Name is pid's command name (/proc/<pid>/comm: the executable's base name,
// cut to 15 bytes), or "?" when it cannot be read (the process is gone).
func Name(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// Children lists the processes whose parent is pid, none when it is gone. A
// child is listed under the thread that started it, so every thread is read.
func Children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}
