package netns

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/test/proc"
)

// Leftover is an object with the prefix that no live process owns.
type Leftover struct {
	Kind string // "netns", "mntns", "link", "mount", "process"
	Name string
	PID  int // for processes
	// Owner is the live process that owns the object (or, for a process, its namespace);
	// 0 when none does.
	Owner int
}

func (l Leftover) String() string {
	if l.Kind == "process" {
		return fmt.Sprintf("process %d (%s) in %s", l.PID, proc.Name(l.PID), l.Name)
	}
	return l.Kind + " " + l.Name
}

// Leftovers lists the namespaces, machine mount namespaces, host links, mounts and processes
// carrying the prefix whose owner is not running. With all=true it lists every object with
// the prefix, owned or not.
func Leftovers(all bool) ([]Leftover, error) {
	var out []Leftover
	orphan := func(key string) bool { return all || ownerOf(key) == 0 }
	nsSet := map[nsKey]string{}
	nsOwner := map[nsKey]int{}
	netnsNames, _ := filepath.Glob(filepath.Join(NetnsDir, Prefix+"*"))
	for _, p := range netnsNames {
		name := filepath.Base(p)
		if !orphan("netns." + name) {
			continue
		}
		owner := ownerOf("netns." + name)
		out = append(out, Leftover{Kind: "netns", Name: name, Owner: owner})
		if id, err := nsID(p); err == nil && isNSFile(p) {
			nsSet[id] = "netns " + name
			nsOwner[id] = owner
		}
	}
	mnts, _ := filepath.Glob(filepath.Join(MountNSDir, "*"))
	for _, p := range mnts {
		name := filepath.Base(p)
		if !orphan("mntns." + name) {
			continue
		}
		owner := ownerOf("mntns." + name)
		out = append(out, Leftover{Kind: "mntns", Name: name, Owner: owner})
		if id, err := nsID(p); err == nil && isNSFile(p) {
			nsSet[id] = "mntns " + name
			nsOwner[id] = owner
		}
	}
	if len(nsSet) > 0 {
		set := map[nsKey]bool{}
		for k := range nsSet {
			set[k] = true
		}
		pids, err := pidsIn(set, "net", "mnt")
		if err != nil {
			return nil, err
		}
		for _, pid := range pids {
			where, owner := "?", 0
			for _, k := range []string{"net", "mnt"} {
				if id, err := nsID(fmt.Sprintf("/proc/%d/ns/%s", pid, k)); err == nil && nsSet[id] != "" {
					where, owner = nsSet[id], nsOwner[id]
				}
			}
			out = append(out, Leftover{Kind: "process", Name: where, PID: pid, Owner: owner})
		}
	}
	links, err := LinkNames(Host())
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if strings.HasPrefix(l, Prefix) && orphan("link."+l) {
			out = append(out, Leftover{Kind: "link", Name: l, Owner: ownerOf("link." + l)})
		}
	}
	mounts, err := hostMounts()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		// Namespace files under NetnsDir and MountNSDir are covered by their namespaces.
		if filepath.Dir(m) == NetnsDir || filepath.Dir(m) == MountNSDir || m == NetnsDir || m == MountNSDir {
			continue
		}
		// Other mounts whose path has the prefix cannot be attributed to an owner; they are
		// listed only with all.
		if !all || !strings.Contains(m, "/"+Prefix+"-") {
			continue
		}
		out = append(out, Leftover{Kind: "mount", Name: m})
	}
	return out, nil
}

func hostMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 {
			out = append(out, fs[4])
		}
	}
	return out, sc.Err()
}

// CleanupLeftovers removes what Leftovers(false) lists: it kills the processes first, then
// drops mount namespaces, network namespaces and host links.
func CleanupLeftovers() error {
	lo, err := Leftovers(false)
	if err != nil {
		return err
	}
	var pids []int
	for _, l := range lo {
		if l.Kind == "process" {
			pids = append(pids, l.PID)
		}
	}
	killAll(pids)
	var errs []error
	sort.SliceStable(lo, func(i, j int) bool { return kindOrder(lo[i].Kind) < kindOrder(lo[j].Kind) })
	for _, l := range lo {
		switch l.Kind {
		case "mntns":
			if err := dropMountNS(filepath.Join(MountNSDir, l.Name)); err != nil {
				errs = append(errs, err)
			}
			removeOwner("mntns." + l.Name)
		case "netns":
			if err := (&NS{name: l.Name, path: filepath.Join(NetnsDir, l.Name)}).Close(); err != nil {
				errs = append(errs, err)
			}
		case "link":
			if err := DeleteLink(Host(), l.Name); err != nil {
				errs = append(errs, err)
			}
			removeOwner("link." + l.Name)
		case "mount":
			if err := unix.Unmount(l.Name, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", l.Name, err))
			}
		}
	}
	removeStaleOwners()
	return errors.Join(errs...)
}

// removeStaleOwners drops owner records of objects that no longer exist.
func removeStaleOwners() {
	ents, _ := os.ReadDir(OwnersDir)
	links, _ := LinkNames(Host())
	for _, e := range ents {
		kind, name, _ := strings.Cut(e.Name(), ".")
		var exists bool
		switch kind {
		case "netns":
			_, err := os.Stat(filepath.Join(NetnsDir, name))
			exists = err == nil
		case "mntns":
			_, err := os.Stat(filepath.Join(MountNSDir, name))
			exists = err == nil
		case "link":
			exists = slices.Contains(links, name)
		}
		if !exists {
			removeOwner(e.Name())
		}
	}
}

// ReleaseDirs removes the helper directories (the private mount of MountNSDir and
// OwnersDir) when nothing is left in them; call it after the last machine is closed.
func ReleaseDirs() error {
	removeStaleOwners()
	if ents, err := os.ReadDir(MountNSDir); err == nil && len(ents) == 0 {
		// Unmount every stacked bind mount of the directory (older runs could stack two).
		for range 10 {
			if unix.Unmount(MountNSDir, unix.MNT_DETACH) != nil {
				break
			}
		}
		if err := os.Remove(MountNSDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if ents, err := os.ReadDir(OwnersDir); err == nil && len(ents) == 0 {
		os.Remove(OwnersDir)
	}
	return nil
}

func kindOrder(k string) int {
	switch k {
	case "process":
		return 0
	case "mntns":
		return 1
	case "mount":
		return 2
	case "netns":
		return 3
	}
	return 4
}
