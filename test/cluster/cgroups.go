package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/test/wait"
)

// A real node's kubelet gets a cgroup root of its own (REAL-NODES.md: nodes that share
// /kubepods kill each other's pods): <the caller's memory cgroup>/<node name>, created in
// every cgroup v1 hierarchy. Every process of the node's pods lives below it, which is how
// a stop or a crashed run's cleanup finds pod processes that are in neither the node's
// network nor its mount namespace.

// cgroupMount is one cgroup hierarchy of the host.
type cgroupMount struct {
	Path, FSType, Options string
}

// hostCgroupMounts lists the host's cgroup hierarchies (v1 controllers, named ones and
// the unified v2 one) from /proc/self/mountinfo.
func hostCgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) || len(fields) < 5 {
			continue
		}
		fstype := fields[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		if !strings.HasPrefix(fields[4], "/sys/fs/cgroup") {
			continue
		}
		opts := []string{}
		for _, o := range strings.Split(fields[sep+3], ",") {
			if o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		out = append(out, cgroupMount{Path: fields[4], FSType: fstype, Options: strings.Join(opts, ",")})
	}
	return out, sc.Err()
}

// cgroupMountScript remounts the host's cgroup hierarchies inside a machine's mount
// namespace (its fresh /sys hides /sys/fs/cgroup).
func cgroupMountScript(mounts []cgroupMount) string {
	var b strings.Builder
	b.WriteString("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup\n")
	for _, m := range mounts {
		fmt.Fprintf(&b, "mkdir -p %q\n", m.Path)
		if m.FSType == "cgroup2" {
			fmt.Fprintf(&b, "mount -t cgroup2 cgroup2 %q\n", m.Path)
			continue
		}
		fmt.Fprintf(&b, "mount -t cgroup -o %s cgroup %q\n", m.Options, m.Path)
	}
	return b.String()
}

// cgroupBase is the caller's cgroup in the memory hierarchy (the one that bounds it), under
// which node roots are made.
func cgroupBase() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && parts[1] == "memory" {
			return parts[2]
		}
	}
	return "/"
}

// v1Hierarchies are the host's cgroup v1 mounts (kubelet's cgroupfs driver uses these).
func v1Hierarchies() ([]string, error) {
	mounts, err := hostCgroupMounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if m.FSType == "cgroup" {
			out = append(out, m.Path)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup v1 hierarchy mounted under /sys/fs/cgroup")
	}
	return out, nil
}

// makeCgroupRoot creates root (for example /process_api/x/wgm-node-1) in every v1
// hierarchy, copying cpuset.cpus and cpuset.mems down each new level (a cpuset cgroup
// without them takes no tasks).
func makeCgroupRoot(root string) error {
	hs, err := v1Hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		parts := strings.Split(strings.Trim(root, "/"), "/")
		cur := h
		for _, p := range parts {
			parent := cur
			cur = filepath.Join(cur, p)
			if err := os.Mkdir(cur, 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("cgroup %s: %w", cur, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if _, err := os.Stat(filepath.Join(cur, f)); err != nil {
					continue
				}
				if cur, _ := os.ReadFile(filepath.Join(cur, f)); strings.TrimSpace(string(cur)) != "" {
					continue
				}
				v, err := os.ReadFile(filepath.Join(parent, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(cur, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", filepath.Join(cur, f), err)
				}
			}
		}
	}
	return nil
}

// removeCgroupRoot kills every process in root's tree (pods' processes are in neither the
// node's network nor its mount namespace; this is how they are found) and removes the
// cgroups, deepest first.
func removeCgroupRoot(root string) error {
	hs, err := v1Hierarchies()
	if err != nil {
		return err
	}
	if err := wait.Poll(context.Background(), 15*time.Second, func() error {
		left := 0
		for _, h := range hs {
			for _, pid := range cgroupPIDs(filepath.Join(h, root)) {
				left++
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if left > 0 {
			return fmt.Errorf("%d processes survive SIGKILL", left)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("cgroup %s: %w", root, err)
	}
	var errs []error
	for _, h := range hs {
		var dirs []string
		filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			// A cgroup whose last task just died can be busy briefly.
			if err := wait.Poll(context.Background(), time.Second, func() error {
				if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
					return err
				}
				return nil
			}); err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// cgroupPIDs lists the processes in dir and below.
func cgroupPIDs(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscanf(f, "%d", &pid); err == nil && pid > 0 {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// leftoverCgroupRoots lists node cgroup roots (<base>/wgm-*) that exist in the cpu
// hierarchy, for the crash cleanup.
func leftoverCgroupRoots() []string {
	hs, err := v1Hierarchies()
	if err != nil {
		return nil
	}
	base := cgroupBase()
	seen := map[string]bool{}
	var out []string
	for _, h := range hs {
		matches, _ := filepath.Glob(filepath.Join(h, base, "wgm-*"))
		for _, m := range matches {
			r := filepath.Join(base, filepath.Base(m))
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	sort.Strings(out)
	return out
}
