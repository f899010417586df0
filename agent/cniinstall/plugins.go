package cniinstall

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// StandardPlugins are the binaries the agent installs: wgmesh's own gate
// (wgmesh-guard, the conflist's first plugin) and the standard plugins.
// loopback is in the list although the conflist does not name it: containerd
// runs it for every pod.
var StandardPlugins = []string{"wgmesh-guard", "bridge", "host-local", "portmap", "loopback"}

const binMode = 0o755

// PluginInstaller copies plugin binaries from SourceDir into BinDir.
type PluginInstaller struct {
	SourceDir string   // --cni-bin-source
	BinDir    string   // --cni-bin-dir
	Names     []string // defaults to StandardPlugins
	// Record is a file (in the agent's state directory) naming the plugins
	// this installer created: absent from BinDir before it wrote them.
	// Remove deletes only those, so a plugin the node had before wgmesh
	// (from a distribution package, another network) survives an
	// uninstall. Empty: nothing is recorded and Remove deletes only
	// wgmesh's own plugins (named wgmesh-*).
	Record string

	// verified remembers, per plugin, the source and target file identity
	// (inode, size, mtime, mode) last found equal, so that the periodic
	// resync stats the files instead of hashing megabytes every time. Any
	// change to either file makes it compare contents again.
	verified map[string][2]fileID
}

type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
	mode     os.FileMode
}

func statID(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: st.Size(), mtime: st.ModTime().UnixNano(), mode: st.Mode()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	}
	return id, nil
}

// Ensure installs every plugin that is missing in BinDir, differs from the
// source by content, or is not executable. It returns the names it installed.
func (p *PluginInstaller) Ensure() ([]string, error) {
	names := p.Names
	if names == nil {
		names = StandardPlugins
	}
	if err := os.MkdirAll(p.BinDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating CNI bin dir %s (flag --cni-bin-dir): %w", p.BinDir, err)
	}
	if p.verified == nil {
		p.verified = map[string][2]fileID{}
	}
	var installed []string
	for _, name := range names {
		src, dst := filepath.Join(p.SourceDir, name), filepath.Join(p.BinDir, name)
		srcID, serr := statID(src)
		dstID, derr := statID(dst)
		if serr == nil && derr == nil && p.verified[name] == [2]fileID{srcID, dstID} {
			continue
		}
		delete(p.verified, name)
		data, err := os.ReadFile(src)
		if err != nil {
			return installed, fmt.Errorf("reading CNI plugin %q from %s (flag --cni-bin-source must be a directory holding %v): %w", name, src, names, err)
		}
		if err := removeStaleTemps(p.BinDir, name); err != nil {
			return installed, err
		}
		same, err := sameContent(dst, data)
		if err != nil {
			return installed, err
		}
		if !same {
			// Recorded before it is written: a crash in between leaves a
			// name whose file is absent, which Remove skips.
			if _, lerr := os.Lstat(dst); errors.Is(lerr, fs.ErrNotExist) {
				if err := p.record(name); err != nil {
					return installed, err
				}
			}
			if err := writeFileAtomic(p.BinDir, name, data, binMode); err != nil {
				return installed, fmt.Errorf("installing CNI plugin %q: %w", name, err)
			}
			installed = append(installed, name)
		}
		// Remember only identities taken before the content check, so a
		// change racing with it is noticed next time.
		if serr == nil {
			if dstID, derr = statID(dst); derr == nil {
				if srcNow, err := statID(src); err == nil && srcNow == srcID {
					p.verified[name] = [2]fileID{srcID, dstID}
				}
			}
		}
	}
	return installed, nil
}

// sameContent reports whether path is an executable regular file whose
// SHA-256 equals that of want.
func sameContent(path string, want []byte) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm() != binMode || st.Size() != int64(len(want)) {
		return false, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("hashing %s: %w", path, err)
	}
	w := sha256.Sum256(want)
	return bytes.Equal(h.Sum(nil), w[:]), nil
}

// ownPrefix names plugins only wgmesh ships (wgmesh-guard): always its own.
const ownPrefix = "wgmesh-"

// Remove deletes the plugins this installer created (see Record) and
// wgmesh's own, each only while it still holds what SourceDir holds (a
// binary someone replaced since is theirs now), then the record. It returns
// the names it removed; anything else in BinDir is left alone.
func (p *PluginInstaller) Remove() ([]string, error) {
	names := p.Names
	if names == nil {
		names = StandardPlugins
	}
	ours, err := p.recorded()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		if err := removeStaleTemps(p.BinDir, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		if !ours[name] && !strings.HasPrefix(name, ownPrefix) {
			continue
		}
		dst := filepath.Join(p.BinDir, name)
		if data, err := os.ReadFile(filepath.Join(p.SourceDir, name)); err == nil {
			if same, err := sameContent(dst, data); err != nil || !same {
				continue // absent, or not what wgmesh installed
			}
		} else if !strings.HasPrefix(name, ownPrefix) {
			continue // cannot tell whether it is still ours
		}
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing CNI plugin %s: %w", dst, err))
			continue
		}
		removed = append(removed, name)
		delete(p.verified, name)
	}
	if len(errs) == 0 && p.Record != "" {
		if err := os.Remove(p.Record); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing %s: %w", p.Record, err))
		}
	}
	return removed, errors.Join(errs...)
}

// recorded reads Record: one plugin name per line.
func (p *PluginInstaller) recorded() (map[string]bool, error) {
	out := map[string]bool{}
	if p.Record == "" {
		return out, nil
	}
	b, err := os.ReadFile(p.Record)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the record of installed CNI plugins %s: %w", p.Record, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out[line] = true
		}
	}
	return out, nil
}

// record adds name to Record (atomically; the file stays sorted).
func (p *PluginInstaller) record(name string) error {
	if p.Record == "" {
		return nil
	}
	ours, err := p.recorded()
	if err != nil {
		return err
	}
	if ours[name] {
		return nil
	}
	ours[name] = true
	list := make([]string, 0, len(ours))
	for n := range ours {
		list = append(list, n)
	}
	sort.Strings(list)
	dir := filepath.Dir(p.Record)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := writeFileAtomic(dir, filepath.Base(p.Record), []byte(strings.Join(list, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("recording installed CNI plugin %s: %w", name, err)
	}
	return nil
}
