package cniinstall

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const confMode = 0o644

// ConfigFile is the one conflist the agent owns in the CNI configuration directory.
type ConfigFile struct {
	Dir  string // e.g. /etc/cni/net.d
	Name string // e.g. 10-wgmesh.conflist
}

// Path is the file's full path.
func (c ConfigFile) Path() string { return filepath.Join(c.Dir, c.Name) }

// Ensure makes the file hold exactly content with mode 0644. It writes only
// when the content or mode differs and reports whether it wrote.
func (c ConfigFile) Ensure(content []byte) (bool, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return false, fmt.Errorf("creating CNI config dir %s (flag --cni-conf-dir): %w", c.Dir, err)
	}
	if err := removeStaleTemps(c.Dir, c.Name); err != nil {
		return false, err
	}
	cur, err := os.ReadFile(c.Path())
	switch {
	case err == nil:
		if bytes.Equal(cur, content) {
			st, err := os.Stat(c.Path())
			if err == nil && st.Mode().Perm() == confMode && st.Mode().IsRegular() {
				return false, nil
			}
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return false, fmt.Errorf("reading %s: %w", c.Path(), err)
	}
	if err := writeFileAtomic(c.Dir, c.Name, content, confMode); err != nil {
		return false, err
	}
	return true, nil
}

// Remove deletes the file (only this one) and reports whether it existed.
func (c ConfigFile) Remove() (bool, error) {
	err := os.Remove(c.Path())
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("removing %s: %w", c.Path(), err)
	}
	if err := syncDir(c.Dir); err != nil {
		return true, err
	}
	return true, nil
}
