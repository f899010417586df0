package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// GuestRunArg is the argument with which Init starts its own binary again as the process
// that runs the commands (PID 1 only reaps).
const GuestRunArg = "guest-run"

// Init is the guest's /init (PID 1): it mounts the overlay root and the shares, loads the
// test modules, sets up the network, starts GuestRun, reaps every orphan until it ends,
// and powers the machine off. It never returns.
func Init() {
	err := boot()
	if err == nil {
		err = supervise()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wgmesh-vm init:", err)
		writeStatus(status{Error: err.Error()})
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// qemu runs with -no-reboot: a reboot ends it too.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

func boot() error {
	for _, m := range []struct{ src, dst, fs string }{{"devtmpfs", "/dev", "devtmpfs"}, {"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}} {
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	order, err := os.ReadFile(filepath.Join("/", initramfsModules, "order"))
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(order)) {
		if err := loadModule(filepath.Join("/", initramfsModules, name), ""); err != nil {
			return err
		}
	}
	for _, d := range []string{"/mnt/lower", "/mnt/upper", "/mnt/root"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// cache=loose: the lower layer does not change while the guest runs, and without a
	// page cache every read of a test binary crosses 9p again.
	if err := mount9p(tagRoot, "/mnt/lower", unix.MS_RDONLY, "cache=loose"); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/mnt/upper", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount upper tmpfs: %w", err)
	}
	for _, d := range []string{"/mnt/upper/u", "/mnt/upper/w"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("overlay", "/mnt/root", "overlay", 0,
		"lowerdir=/mnt/lower,upperdir=/mnt/upper/u,workdir=/mnt/upper/w"); err != nil {
		return fmt.Errorf("mount overlay root: %w", err)
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		_ = unix.Unmount(d, unix.MNT_DETACH)
	}
	// Switch root by moving the overlay onto / (as switch_root does): a plain chroot
	// would leave the initramfs as the mount namespace's root, which breaks
	// nsenter --mount.
	if err := os.Chdir("/mnt/root"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	for _, m := range []struct{ src, dst, fs, opts string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", ""},
		{"devpts", "/dev/pts", "devpts", "ptmxmode=0666,gid=5,mode=0620"},
		{"tmpfs", "/dev/shm", "tmpfs", "mode=1777"},
		{"tmpfs", "/run", "tmpfs", "mode=0755"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", ""},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fs, 0, m.opts); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	// As on a host booted by systemd: mounts propagate unless a namespace says otherwise.
	if err := unix.Mount("", "/", "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make / shared: %w", err)
	}
	if err := os.MkdirAll(guestRunDir, 0o755); err != nil {
		return err
	}
	if err := mount9p(tagRun, guestRunDir, 0, ""); err != nil {
		return err
	}
	sp, err := readSpec()
	if err != nil {
		return err
	}
	if err := os.MkdirAll("/lib/modules", 0o755); err != nil {
		return err
	}
	if err := mount9p(tagModules, "/lib/modules", unix.MS_RDONLY, "cache=loose"); err != nil {
		return err
	}
	mods, err := ReadModules(filepath.Join("/lib/modules", sp.KernelVersion))
	if err != nil {
		return err
	}
	load, oerr := mods.Order(TestModules...)
	for _, p := range load {
		if err := loadModule(filepath.Join(mods.Dir, p), moduleParams[ModName(p)]); err != nil {
			oerr = errors.Join(oerr, err)
		}
	}
	if oerr != nil {
		return oerr
	}
	_ = unix.Sethostname([]byte("wgm-vm"))
	return network(sp)
}

func mount9p(tag, dst string, flags uintptr, extra string) error {
	opts := "trans=virtio,version=9p2000.L,msize=512000"
	if extra != "" {
		opts += "," + extra
	}
	var err error
	// The virtio device may still be probing right after its driver loaded.
	for range 50 {
		if err = unix.Mount(tag, dst, "9p", flags, opts); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("mount 9p share %s on %s: %w", tag, dst, err)
}

// moduleParams: dummy makes no dummy0 of its own (it would be one more link in every
// listing of the guest's own namespace).
var moduleParams = map[string]string{"dummy": "numdummies=0"}

func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("loading module %s: %w", ModName(path), err)
	}
	return nil
}

func readSpec() (spec, error) {
	var sp spec
	b, err := os.ReadFile(filepath.Join(guestRunDir, specFile))
	if err != nil {
		return sp, err
	}
	if err := json.Unmarshal(b, &sp); err != nil {
		return sp, fmt.Errorf("%s: %w", specFile, err)
	}
	return sp, nil
}

// network brings lo up and either eth0 with the spec's addresses and gateway, or a dummy
// link that takes the default route, so that nothing the tests send leaves the guest
// unless asked.
func network(sp spec) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	var link netlink.Link
	if len(sp.Addrs) > 0 {
		if link, err = netlink.LinkByName("eth0"); err != nil {
			return fmt.Errorf("the guest's NIC: %w", err)
		}
		for _, a := range sp.Addrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("address %s on eth0: %w", a, err)
			}
		}
	} else {
		link = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "vm0"}}
		if err := netlink.LinkAdd(link); err != nil {
			return fmt.Errorf("dummy link: %w", err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
	if sp.Gateway != "" {
		r.Gw = net.ParseIP(sp.Gateway)
	}
	if err := netlink.RouteAdd(r); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// supervise starts GuestRun and reaps every process until it has ended.
func supervise() error {
	cmd := exec.Command("/proc/self/exe", GuestRunArg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the command runner: %w", err)
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait: %w", err)
		}
		if pid == cmd.Process.Pid {
			if !ws.Exited() || ws.ExitStatus() != 0 {
				return fmt.Errorf("the command runner ended with %v", ws)
			}
			return nil
		}
	}
}

// GuestRun runs the spec's commands in order with bash, appending their output to the
// output file, and writes their exit codes to the status file.
func GuestRun() error {
	sp, err := readSpec()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(guestRunDir, outputFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	// exec looks bash up in this process's PATH, not in the commands' environment.
	for _, kv := range sp.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			os.Setenv("PATH", v)
		}
	}
	var st status
	for _, c := range sp.Commands {
		fmt.Fprintf(out, "vm: $ %s\n", c)
		began := time.Now()
		// pipefail: "x.test | tail" fails when the test does.
		cmd := exec.Command("bash", "-o", "pipefail", "-c", c)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = sp.Dir, sp.Env, out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		code := 0
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else {
				code = -1
				fmt.Fprintf(out, "vm: %v\n", err)
			}
		}
		// What the command left running in its process group goes with it.
		if cmd.Process != nil {
			_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		}
		fmt.Fprintf(out, "vm: exit %d after %s\n", code, time.Since(began).Round(100*time.Millisecond))
		st.Exit = append(st.Exit, code)
	}
	return writeStatus(st)
}

func writeStatus(st status) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(guestRunDir, statusFile))
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
