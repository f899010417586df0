// Package repo locates the repository from a test, whatever package directory
// the test runs in.
package repo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Root is the repository's top directory: the nearest directory above the
// test's working directory (its package) that holds the module's go.mod.
func Root(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && isWgmesh(b) {
			return d
		}
		if filepath.Dir(d) == d {
			tb.Fatalf("no wgmesh go.mod above %s", dir)
		}
	}
}

func isWgmesh(gomod []byte) bool {
	const want = "module github.com/wgmesh/wgmesh\n"
	return strings.HasPrefix(string(gomod), want) || strings.Contains(string(gomod), "\n"+want)
}
