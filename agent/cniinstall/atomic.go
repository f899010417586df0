package cniinstall

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// tempPrefix marks our temporary files. It starts with a dot and the names
// end in random digits, so neither libcni (.conf, .conflist, .json) nor a
// runtime looking up a plugin by name ever picks one up.
const tempPrefix = ".wgmesh-tmp-"

// writeFileAtomic writes data to dir/name through a temporary file in the same
// directory: write, fsync, chmod, rename, fsync the directory. Readers see the
// old content or the new content, never a part.
func writeFileAtomic(dir, name string, data []byte, mode os.FileMode) (err error) {
	tmp, err := os.CreateTemp(dir, tempPrefix+name+"-*")
	if err != nil {
		return fmt.Errorf("creating temporary file for %s in %s: %w", name, dir, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	target := filepath.Join(dir, name)
	if err = os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp.Name(), target, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// removeStaleTemps removes temporary files for name left by a crash between
// create and rename. Only our own prefix is touched.
func removeStaleTemps(dir, name string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix+name+"-") && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("removing stale %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}
