package cni

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
