package vm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BootModules mount the shares in the initramfs, before the 9p root exists.
var BootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"}

// TestModules are loaded once the root is up: kernel WireGuard and its crypto (the
// architecture-specific ones are soft dependencies that modules.dep does not list), the
// links the tests make, nftables, XFRM and netfilter netlink (netlink.NewHandleAt opens
// those sockets and fails with "protocol not supported" without them), and tun for the
// userspace tests (without udev /dev/net/tun appears only once it is loaded). Anything
// else (nft expressions, conntrack helpers) the kernel loads on demand through the host's
// modprobe.
var TestModules = []string{
	"udp_tunnel", "ip6_udp_tunnel", "libchacha", "libcurve25519_generic", "curve25519_x86_64",
	"poly1305_x86_64", "chacha_x86_64", "libchacha20poly1305", "wireguard",
	"veth", "tun", "dummy", "bridge", "br_netfilter",
	"nfnetlink", "nf_tables", "xfrm_algo", "xfrm_user", "af_packet", "virtio_net",
}

// Modules is the module tree of one kernel version (<dir>/modules.dep as depmod writes it).
type Modules struct {
	Dir     string              // /lib/modules/<version>
	path    map[string]string   // module name -> path relative to Dir
	deps    map[string][]string // module path -> dependency paths, as listed
	builtin map[string]bool
}

// ModName is a module's name as the kernel spells it ("9pnet-virtio" and
// ".../9pnet_virtio.ko" are both "9pnet_virtio").
func ModName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz", ".ko"} {
		s = strings.TrimSuffix(s, ext)
	}
	return strings.ReplaceAll(s, "-", "_")
}

// ReadModules reads dir/modules.dep and dir/modules.builtin.
func ReadModules(dir string) (*Modules, error) {
	m := &Modules{Dir: dir, path: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("reading module dependencies (run depmod): %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		m.path[ModName(mod)] = mod
		m.deps[mod] = strings.Fields(deps)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			m.builtin[ModName(l)] = true
		}
	}
	return m, nil
}

// Builtin reports whether name is built into the kernel.
func (m *Modules) Builtin(name string) bool { return m.builtin[ModName(name)] }

// Order returns the paths (relative to Dir) to load, dependencies first, each once, for
// the given modules; built-in ones are left out, unknown ones are an error.
func (m *Modules) Order(names ...string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var visit func(p string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		deps := m.deps[p]
		// modprobe loads the listed dependencies last to first.
		for i := len(deps) - 1; i >= 0; i-- {
			visit(deps[i])
		}
		out = append(out, p)
	}
	var errs []error
	for _, n := range names {
		if m.Builtin(n) {
			continue
		}
		p, ok := m.path[ModName(n)]
		if !ok {
			errs = append(errs, fmt.Errorf("module %s: not in %s/modules.dep", n, m.Dir))
			continue
		}
		visit(p)
	}
	return out, errors.Join(errs...)
}
