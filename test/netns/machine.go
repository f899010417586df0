package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// MountNSDir is where machines' mount namespaces are bind-mounted.
const MountNSDir = "/run/wgm-mntns"

// MachineOptions describe a Machine.
type MachineOptions struct {
	// Name of the machine and of its network namespace; starts with Prefix.
	Name string
	// StateDir is a host directory that holds the machine's private directories.
	StateDir string
	// Private lists absolute directories that the machine sees as its own (for example
	// /var/run/wireguard). Each is backed by StateDir/<path with '/' as '_'>.
	Private []string
	// Setup is shell run last inside the new mount namespace (sh -e), for example the
	// cgroup mounts and the shared propagation a real kubelet needs.
	Setup string
}

// Machine is a network namespace plus a persistent private mount namespace: processes
// started with Command see their own copies of the Private directories and a /sys of their
// own network namespace.
type Machine struct {
	Name    string
	NS      *NS
	mntPath string
	backing map[string]string
}

// dirMu serialises the mount set-up of the helper directories: two concurrent first calls
// would otherwise stack two bind mounts.
var dirMu sync.Mutex

func ensurePrivateDir(dir string) error {
	dirMu.Lock()
	defer dirMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("", dir, "none", unix.MS_PRIVATE, ""); err == nil {
		return nil
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}

// backingName maps /var/run/wireguard to var_run_wireguard.
func backingName(p string) string { return strings.ReplaceAll(strings.Trim(p, "/"), "/", "_") }

// NewMachine creates the network namespace and the mount namespace of a machine.
func NewMachine(ctx context.Context, o MachineOptions) (*Machine, error) {
	if o.StateDir == "" {
		return nil, fmt.Errorf("machine %s: StateDir is empty", o.Name)
	}
	ns, err := New(o.Name)
	if err != nil {
		return nil, err
	}
	m := &Machine{Name: o.Name, NS: ns, mntPath: filepath.Join(MountNSDir, o.Name), backing: map[string]string{}}
	if err := m.setup(ctx, o); err != nil {
		m.Close()
		return nil, fmt.Errorf("machine %s: %w", o.Name, err)
	}
	return m, nil
}

func (m *Machine) setup(ctx context.Context, o MachineOptions) error {
	if err := ensurePrivateDir(MountNSDir); err != nil {
		return err
	}
	f, err := os.OpenFile(m.mntPath, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	if err := recordOwner("mntns." + m.Name); err != nil {
		return err
	}
	var script strings.Builder
	// Detach the copies of other namespaces' bind mounts so this machine pins none of them.
	script.WriteString(`awk '{print $5}' /proc/self/mountinfo | grep -E '^(/run/netns/|` + MountNSDir + `)' | sort -r | while read -r p; do umount -l "$p" 2>/dev/null || true; done` + "\n")
	script.WriteString("mount -t sysfs sysfs /sys\n")
	for _, p := range o.Private {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("private directory %q: want an absolute path", p)
		}
		hostDir := filepath.Join(o.StateDir, backingName(p))
		if err := os.MkdirAll(hostDir, 0o755); err != nil {
			return err
		}
		real, err := resolveOnHost(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(real, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", real, err)
		}
		m.backing[filepath.Clean(p)] = hostDir
		fmt.Fprintf(&script, "mount --bind %q %q\n", hostDir, real)
	}
	script.WriteString(o.Setup)
	cmd := m.NS.Command(ctx, "unshare", "--mount="+m.mntPath, "--propagation=private", "--", "/bin/sh", "-e", "-c", script.String())
	if _, err := run(cmd, m.NS.String()); err != nil {
		return err
	}
	return nil
}

// resolveOnHost resolves symbolic links in p (such as /var/run -> /run), tolerating missing
// trailing parts.
func resolveOnHost(p string) (string, error) {
	p = filepath.Clean(p)
	var rest []string
	for cur := p; ; cur = filepath.Dir(cur) {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(append([]string{r}, rest...)...), nil
		}
		if cur == "/" {
			return p, nil
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
	}
}

// HostPath returns where the machine's private directory dir (as passed in Private), or a
// path inside it, lives on the host; "" when it is not private.
func (m *Machine) HostPath(p string) string {
	p = filepath.Clean(p)
	for dir, host := range m.backing {
		if p == dir {
			return host
		}
		if rel, err := filepath.Rel(dir, p); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.Join(host, rel)
		}
	}
	return ""
}

// MountNSPath is the file that refers to the machine's mount namespace.
func (m *Machine) MountNSPath() string { return m.mntPath }

// Command returns a command that runs argv in the machine's network and mount namespaces.
// Its working directory is the namespace's root; use absolute paths.
func (m *Machine) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"--net=" + m.NS.Path(), "--mount=" + m.mntPath, "--"}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// Exec runs argv in the machine and returns its combined output.
func (m *Machine) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	return run(m.Command(ctx, argv...), "machine "+m.Name)
}

// PIDs lists processes in the machine's network or mount namespace.
func (m *Machine) PIDs() ([]int, error) {
	set := map[nsKey]bool{}
	if id, err := nsID(m.NS.Path()); err == nil {
		set[id] = true
	}
	if id, err := nsID(m.mntPath); err == nil && isNSFile(m.mntPath) {
		set[id] = true
	}
	return pidsIn(set, "net", "mnt")
}

// isNSFile tells whether p currently has a namespace bind-mounted on it.
func isNSFile(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// Close kills every process in the machine, drops its mount namespace and removes its
// network namespace. Safe to call twice.
func (m *Machine) Close() error {
	if pids, err := m.PIDs(); err == nil {
		killAll(pids)
	}
	var errs []error
	if err := dropMountNS(m.mntPath); err != nil {
		errs = append(errs, err)
	}
	removeOwner("mntns." + m.Name)
	if err := m.NS.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func dropMountNS(p string) error {
	if isNSFile(p) {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
