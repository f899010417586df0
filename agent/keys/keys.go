// Package keys keeps the node's WireGuard private key on disk. The key never
// leaves the node and is never logged: only the public key is exposed.
package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// FileName is the private key's file name inside the state directory.
const FileName = "private.key"

// fileMode is the only mode the key file may have.
const fileMode fs.FileMode = 0o600

// LoadOrCreate returns the private key stored at <stateDir>/private.key,
// creating it (atomically, mode 0600) when the file does not exist. A file
// that exists but does not hold a key is an error, never silently replaced:
// replacing it would change the node's identity.
func LoadOrCreate(stateDir string) (wgtypes.Key, error) {
	path := filepath.Join(stateDir, FileName)
	key, err := load(path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return wgtypes.Key{}, err
	}
	key, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generating WireGuard private key: %w", err)
	}
	if err := writeAtomic(path, []byte(key.String()+"\n")); err != nil {
		return wgtypes.Key{}, err
	}
	return key, nil
}

func load(path string) (wgtypes.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	// The content is secret: never quoted.
	key, err := ParseKeyFile(path, data)
	if err != nil {
		return wgtypes.Key{}, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != fileMode {
		if err := os.Chmod(path, fileMode); err != nil {
			return wgtypes.Key{}, fmt.Errorf("restricting %s to mode 0600: %w", path, err)
		}
	}
	return key, nil
}

// Store makes key the node's key: it replaces <stateDir>/private.key
// atomically (key rotation promotes the next key with it).
func Store(stateDir string, key wgtypes.Key) error {
	return writeAtomic(filepath.Join(stateDir, FileName), []byte(key.String()+"\n"))
}

// Since is when the stored key was put in place (the file's modification
// time: creation, or the rotation that promoted it).
func Since(stateDir string) (time.Time, error) {
	fi, err := os.Stat(filepath.Join(stateDir, FileName))
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

// WriteFile writes a secret file (mode 0600) the way the key is written:
// a synced temporary file renamed over path, then the directory synced.
func WriteFile(path string, data []byte) error { return writeAtomic(path, data) }

// RemoveTemporaryFiles removes temporary files a crash left in stateDir
// between creating and renaming them (WriteFile, Store).
func RemoveTemporaryFiles(stateDir string) error {
	m, err := filepath.Glob(filepath.Join(stateDir, ".*.tmp-*"))
	if err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(stateDir, ".private.key-*"))
	var errs []error
	for _, f := range append(m, old...) {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ParseKeyFile parses the content of a key file; name says which file, for
// the error (the content is secret and never quoted).
func ParseKeyFile(name string, data []byte) (wgtypes.Key, error) {
	key, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("private key file %s does not hold a base64 WireGuard key (32 bytes); remove it to generate a new identity", name)
	}
	return key, nil
}

// writeAtomic writes data to a temporary file in the same directory, syncs it
// and renames it over path, so a crash never leaves a half-written key.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating temporary key file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		return fmt.Errorf("setting mode of %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
