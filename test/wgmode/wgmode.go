// Package wgmode chooses the WireGuard mode the data-plane tests run in, so that one test
// proves a behaviour for both: userspace WireGuard by default (the host has no kernel
// module), kernel WireGuard when WGMESH_TEST_WIREGUARD_MODE=kernel (make test-kernel sets
// it inside the VM of hack/vm.sh).
package wgmode

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/test/skip"
)

// Env selects the mode: "userspace" (or unset) or "kernel".
const Env = "WGMESH_TEST_WIREGUARD_MODE"

// The modes, spelled as --wireguard-mode takes them (agent/wireguard.Mode; not imported
// here, so that the wireguard package's own tests can use this one).
const (
	Userspace = "userspace"
	Kernel    = "kernel"
)

// Mode is the mode this run tests. Kernel mode on a kernel without WireGuard is a
// missing requirement (test/skip: a failure with WGMESH_NO_SKIP=1).
func Mode(tb testing.TB) string {
	tb.Helper()
	switch m := os.Getenv(Env); m {
	case "", Userspace:
		return Userspace
	case Kernel:
		if !KernelAvailable() {
			skip.Unless(tb, "kernel WireGuard: this kernel has no wireguard module (make test-kernel runs these tests in a VM)")
		}
		return Kernel
	default:
		tb.Fatalf("%s=%q: want %s or %s", Env, m, Userspace, Kernel)
		return ""
	}
}

// KernelAvailable reports whether the running kernel has WireGuard: loaded, built in, or a
// module the kernel can load on demand (the first wireguard link loads it).
func KernelAvailable() bool {
	if _, err := os.Stat("/sys/module/wireguard"); err == nil {
		return true
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	for _, index := range []string{"modules.dep", "modules.builtin"} {
		f, err := os.Open(filepath.Join(dir, index))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			mod, _, _ := strings.Cut(sc.Text(), ":")
			if filepath.Base(mod) == "wireguard.ko" || strings.HasPrefix(filepath.Base(mod), "wireguard.ko.") {
				f.Close()
				return true
			}
		}
		f.Close()
	}
	return false
}
