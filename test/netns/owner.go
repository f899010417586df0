package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// OwnersDir holds one file per created object ("netns.<name>", "mntns.<name>",
// "link.<name>") naming the process that owns it, so that cleanup can tell leftovers of a
// crashed run from objects of a run that is still going.
const OwnersDir = "/run/wgm-owners"

func recordOwner(key string) error {
	if err := os.MkdirAll(OwnersDir, 0o755); err != nil {
		return err
	}
	pid := os.Getpid()
	start, err := processStart(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(OwnersDir, key), fmt.Appendf(nil, "%d %s\n", pid, start), 0o644)
}

func removeOwner(key string) { os.Remove(filepath.Join(OwnersDir, key)) }

// ownerOf returns the live process that owns key, or 0 when there is none.
func ownerOf(key string) int {
	b, err := os.ReadFile(filepath.Join(OwnersDir, key))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	if start, err := processStart(pid); err != nil || start != f[1] || !processAlive(pid) {
		return 0
	}
	return pid
}

// Owned lists the objects ("netns.<name>", ...) that the process pid owns and that still
// have an owner record.
func Owned(pid int) []string {
	ents, _ := os.ReadDir(OwnersDir)
	var out []string
	for _, e := range ents {
		if ownerOf(e.Name()) == pid {
			out = append(out, e.Name())
		}
	}
	return out
}

// LiveOwners lists the live processes other than self that own objects
// with an owner record (another test run, a benchmark, the demo).
func LiveOwners(self int) []int {
	ents, _ := os.ReadDir(OwnersDir)
	seen := map[int]bool{}
	var out []int
	for _, e := range ents {
		if pid := ownerOf(e.Name()); pid != 0 && pid != self && !seen[pid] {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	return out
}
