package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of everything these helpers create.
const Prefix = "wgm"

// NetnsDir is where named network namespaces are bind-mounted (as by `ip netns add`).
const NetnsDir = "/run/netns"

// NS is a named network namespace, or the host's own.
type NS struct {
	name string
	path string
	host bool
}

// The main goroutine keeps the main thread for itself, so that Do (which leaves its thread
// in another namespace and lets it die) never runs there: the Go runtime cannot end the
// main thread, and /proc/<pid>/ns/net (the main thread's) would then name a test namespace.
func init() { runtime.LockOSThread() }

// hostNS holds the network namespace this process started in, opened while the main
// goroutine still runs on the main thread, so that later namespace switches of threads
// cannot change what it refers to.
var hostNS = func() string {
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return "/proc/self/ns/net"
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
}()

// Host returns the network namespace this process started in (the host's, for the tests);
// Close is a no-op on it.
func Host() *NS { return &NS{name: "", path: hostNS, host: true} }

// Name is the namespace name ("" for the host).
func (n *NS) Name() string { return n.name }

// Path is the file that refers to the namespace.
func (n *NS) Path() string { return n.path }

// IsHost tells whether n is the host namespace.
func (n *NS) IsHost() bool { return n.host }

func (n *NS) String() string {
	if n.host {
		return "host netns"
	}
	return "netns " + n.name
}

func checkName(name string) error {
	if !strings.HasPrefix(name, Prefix) {
		return fmt.Errorf("namespace name %q: must start with %q", name, Prefix)
	}
	if len(name) > 60 || strings.ContainsAny(name, "/ \t\n") {
		return fmt.Errorf("namespace name %q: want at most 60 characters without '/' or spaces", name)
	}
	return nil
}

// ensureNetnsDir makes /run/netns a shared mount point, as iproute2 does, so that namespaces
// bind-mounted under it are visible to `ip netns` everywhere.
func ensureNetnsDir() error {
	dirMu.Lock()
	defer dirMu.Unlock()
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err == nil {
		return nil
	}
	if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", NetnsDir, err)
	}
	if err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", NetnsDir, err)
	}
	return nil
}

// New creates the named network namespace (bind-mounted at /run/netns/<name>) with its
// loopback up. The name must start with Prefix and must not exist yet.
func New(name string) (*NS, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return create(name, true)
}

// NewUnowned creates a namespace without an owner record, for namespaces that live in a
// machine's private /run/netns (pod sandboxes) and go away with the machine.
func NewUnowned(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/ ") {
		return nil, fmt.Errorf("namespace name %q: want a name without '/' or spaces", name)
	}
	return create(name, false)
}

// OpenPath returns the namespace that path refers to (for example /proc/<pid>/ns/net).
func OpenPath(path string) *NS { return &NS{name: filepath.Base(path), path: path} }

func create(name string, owned bool) (*NS, error) {
	if err := ensureNetnsDir(); err != nil {
		return nil, err
	}
	p := filepath.Join(NetnsDir, name)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is left in the new namespace and never unlocked, so the runtime
		// destroys it when this goroutine ends instead of reusing it elsewhere.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(src, p, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind %s: %w", p, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(p)
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	ns := &NS{name: name, path: p}
	if owned {
		if err := recordOwner("netns." + name); err != nil {
			ns.Close()
			return nil, err
		}
	}
	if err := LinkUp(ns, "lo"); err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// Open returns an existing named namespace.
func Open(name string) (*NS, error) {
	p := filepath.Join(NetnsDir, name)
	if _, err := os.Stat(p); err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	return &NS{name: name, path: p}, nil
}

// Do runs fn on a locked OS thread that has joined the namespace. Goroutines started by fn
// run elsewhere (in the host namespace). The thread is discarded afterwards.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread may be left in the namespace and must die with us.
		h, err := vnetns.GetFromPath(n.path)
		if err != nil {
			errc <- fmt.Errorf("%s: %w", n, err)
			return
		}
		defer h.Close()
		if err := vnetns.Set(h); err != nil {
			errc <- fmt.Errorf("enter %s: %w", n, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Netlink returns a netlink handle whose sockets live in the namespace. Close it after use.
func (n *NS) Netlink() (*netlink.Handle, error) {
	if n.host {
		return netlink.NewHandle()
	}
	h, err := vnetns.GetFromPath(n.path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", n, err)
	}
	return nh, nil
}

// Sysctl writes a sysctl (dotted name) inside the namespace.
func (n *NS) Sysctl(key, value string) error {
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Do(func() error {
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, n, err)
		}
		return nil
	})
}

// PIDs lists the processes whose network namespace is n.
func (n *NS) PIDs() ([]int, error) {
	id, err := nsID(n.path)
	if err != nil {
		return nil, err
	}
	return pidsIn(map[nsKey]bool{id: true}, "net")
}

// Close kills the processes inside the namespace and removes it. Safe to call twice.
func (n *NS) Close() error {
	if n.host {
		return nil
	}
	if _, err := os.Stat(n.path); errors.Is(err, os.ErrNotExist) {
		removeOwner("netns." + n.name)
		return nil
	}
	if pids, err := n.PIDs(); err == nil {
		killAll(pids)
	}
	if err := unix.Unmount(n.path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", n.path, err)
	}
	if err := os.Remove(n.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", n.path, err)
	}
	removeOwner("netns." + n.name)
	return nil
}
