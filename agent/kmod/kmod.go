// Package kmod loads a kernel module and its dependencies the way modprobe does,
// without a modprobe binary: the agent's image has none (no shell, no package
// manager), and the chart mounts the host's /lib/modules. Dependencies come from
// modules.dep; each module goes to the kernel with finit_module, compressed
// ones (.ko.xz, .ko.zst, .ko.gz) with MODULE_INIT_COMPRESSED_FILE so that the
// kernel decompresses them (Linux 6.4 and later with CONFIG_MODULE_DECOMPRESS,
// as Debian and Ubuntu ship it).
package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// moduleInitCompressedFile is MODULE_INIT_COMPRESSED_FILE of <linux/module.h>.
const moduleInitCompressedFile = 4

// Loader loads modules from a modules tree.
type Loader struct {
	// Dir is /lib/modules/<release>; empty: that of the running kernel.
	Dir string
	// SysModule is where loaded modules appear, /sys/module by default.
	SysModule string
	// Init loads one module file; empty: finit_module.
	Init func(f *os.File, compressed bool) error
}

// Load loads name (dashes and underscores are the same) after its
// dependencies, skipping those already loaded or built in.
func (l Loader) Load(name string) error {
	dir, err := l.dir()
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return fmt.Errorf("module %s: %w", name, err)
	}
	defer f.Close()
	deps, err := ParseDeps(f)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "modules.dep"), err)
	}
	order, err := deps.Order(name)
	if err != nil {
		return err
	}
	for _, path := range order {
		mod := ModuleName(path)
		if l.loaded(mod) {
			continue
		}
		if err := l.init(filepath.Join(dir, path)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading module %s (%s): %w", mod, path, err)
		}
	}
	return nil
}

func (l Loader) dir() (string, error) {
	if l.Dir != "" {
		return l.Dir, nil
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:])), nil
}

func (l Loader) loaded(mod string) bool {
	root := l.SysModule
	if root == "" {
		root = "/sys/module"
	}
	_, err := os.Stat(filepath.Join(root, mod))
	return err == nil
}

func (l Loader) init(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	compressed := !strings.HasSuffix(path, ".ko")
	if l.Init != nil {
		return l.Init(f, compressed)
	}
	flags := 0
	if compressed {
		flags = moduleInitCompressedFile
	}
	return unix.FinitModule(int(f.Fd()), "", flags)
}

// Deps maps a module's path (relative to the modules tree, as modules.dep
// writes it) to the paths of the modules it needs.
type Deps struct {
	byName map[string]string // module name -> path
	needs  map[string][]string
}

// ParseDeps reads modules.dep ("kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz ...").
func ParseDeps(r io.Reader) (Deps, error) {
	d := Deps{byName: map[string]string{}, needs: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		path, rest, ok := strings.Cut(line, ":")
		if !ok || path == "" {
			return d, fmt.Errorf("line %d: %q: want \"module: dependencies\"", n, line)
		}
		d.byName[ModuleName(path)] = path
		d.needs[path] = strings.Fields(rest)
	}
	return d, sc.Err()
}

// Order returns the paths to load for name, dependencies first, each once.
func (d Deps) Order(name string) ([]string, error) {
	path, ok := d.byName[normalize(name)]
	if !ok {
		return nil, fmt.Errorf("module %s: not in modules.dep (built into the kernel, or not installed)", name)
	}
	var out []string
	seen := map[string]bool{}
	var visit func(p string, depth int) error
	visit = func(p string, depth int) error {
		if seen[p] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("module %s: dependency cycle through %s", name, p)
		}
		seen[p] = true
		// modules.dep lists the full closure; visiting each keeps a valid order
		// even for a hand-edited file that lists only direct dependencies.
		for _, dep := range d.needs[p] {
			if err := visit(dep, depth+1); err != nil {
				return err
			}
		}
		out = append(out, p)
		return nil
	}
	return out, visit(path, 0)
}

// ModuleName is the module name of a path: kernel/net/bridge/br_netfilter.ko.xz -> br_netfilter.
func ModuleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return normalize(base)
}

func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }
