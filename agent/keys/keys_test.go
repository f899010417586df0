package keys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateCreatesOnceAndReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 {
		t.Fatal("second start generated a new key instead of reusing the stored one")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("state dir holds %d entries, want only the key (temporary file left behind?)", len(entries))
	}
}

func TestLoadOrCreateFixesMode(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreate(dir)
	if err != nil || k1 != k2 {
		t.Fatalf("reload: %v, same key %v", err, k1 == k2)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestLoadOrCreateRefusesGarbageWithoutQuotingIt(t *testing.T) {
	dir := t.TempDir()
	secret := "not-a-key-but-secret"
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOrCreate(dir)
	if err == nil {
		t.Fatal("garbage key file accepted")
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("error quotes the key file content: %v", err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, FileName))
	if string(data) != secret {
		t.Fatal("garbage key file was overwritten")
	}
}
