package vm

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Kernel is an unpacked Debian kernel package (hack/vm.sh makes one per version).
type Kernel struct {
	// Dir holds vmlinux (the uncompressed kernel, booted through its PVH entry, which
	// skips firmware and decompression) and root/lib/modules/<Version> (with modules.dep).
	Dir     string
	Version string
}

// ModulesDir is the directory the guest mounts on /lib/modules.
func (k Kernel) ModulesDir() string { return filepath.Join(k.Dir, "root", "lib", "modules") }

// Options describe one boot.
type Options struct {
	Kernel Kernel
	// Commands are bash command lines, run in order in Dir (default: the current
	// directory) with this process's environment plus Env.
	Commands []string
	Dir      string
	Env      []string
	// Memory in MiB (default 2048) and CPUs (default the host's, at most 4).
	Memory, CPUs int
	// Timeout ends the guest (default 30 minutes).
	Timeout time.Duration
	// Init is the guest's /init: a static build of test/cmd/wgmesh-vminit.
	Init string
	// Qemu is the emulator (default qemu-system-x86_64 from PATH).
	Qemu string
	// Output receives the commands' output as it comes (default os.Stdout); Log
	// receives progress lines (default os.Stderr).
	Output, Log io.Writer
	// KeepRunDir keeps the run directory (spec, initramfs, console log) for debugging.
	KeepRunDir bool
	// NIC, when set, gives the guest a NIC (eth0 there) whose host end, a tap, is on a
	// bridge in a network namespace; nil: the guest has no network to the host.
	NIC *NIC
}

// NIC is where the guest's NIC plugs in on the host.
type NIC struct {
	// NetNS is the network namespace's path (qemu runs in it, so its tap is made there).
	NetNS string
	// Bridge the tap joins.
	Bridge string
}

// tapName is the host end of the guest's NIC, in NIC.NetNS.
const tapName = "wgm-vm0"

// ErrGuestLockup is returned when the guest's kernel reports a soft lockup of a CPU
// lasting lockupLimit or more and the guest wrote no status: under software emulation on
// a loaded host the guest's CPUs can starve each other for good, which is the emulator's
// failure, not the commands'. The caller may boot again.
var ErrGuestLockup = errors.New("vm: the guest's kernel locked up")

// lockupLimit is how long a reported soft lockup may last: short ones (tens of seconds)
// happen under emulation and pass.
const lockupLimit = 180 * time.Second

var softLockup = regexp.MustCompile(`soft lockup - CPU#\d+ stuck for (\d+)s`)

// lockedUp reports the first console line whose soft lockup lasted lockupLimit or more.
func lockedUp(console []byte) string {
	for _, m := range softLockup.FindAllSubmatchIndex(console, -1) {
		secs, err := strconv.Atoi(string(console[m[2]:m[3]]))
		if err == nil && time.Duration(secs)*time.Second >= lockupLimit {
			line := console[m[0]:m[1]]
			return string(line)
		}
	}
	return ""
}

// Run boots the guest, runs the commands and returns the first failing command's exit code
// (0 when all passed). An error means the guest itself failed: the console's last lines
// are in it.
func Run(ctx context.Context, o Options) (int, error) {
	if err := o.defaults(); err != nil {
		return 0, err
	}
	mods, err := ReadModules(filepath.Join(o.Kernel.ModulesDir(), o.Kernel.Version))
	if err != nil {
		return 0, err
	}
	if err := checkStatic(o.Init); err != nil {
		return 0, err
	}
	runDir, err := os.MkdirTemp("", "wgm-vm-")
	if err != nil {
		return 0, err
	}
	if o.KeepRunDir {
		fmt.Fprintf(o.Log, "vm: run directory %s\n", runDir)
	} else {
		defer os.RemoveAll(runDir)
	}
	sp := spec{Commands: o.Commands, Dir: o.Dir, Env: append(os.Environ(), o.Env...), KernelVersion: o.Kernel.Version}
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(runDir, specFile), b, 0o644); err != nil {
		return 0, err
	}
	initrd := filepath.Join(runDir, "initramfs.cpio")
	if err := WriteInitramfs(initrd, o.Init, mods); err != nil {
		return 0, err
	}
	console := filepath.Join(runDir, "console.log")
	args := []string{
		"-accel", "tcg,thread=multi", "-cpu", cpuModel(), "-machine", "pc",
		"-smp", strconv.Itoa(o.CPUs), "-m", strconv.Itoa(o.Memory),
		"-kernel", filepath.Join(o.Kernel.Dir, "vmlinux"), "-initrd", initrd,
		"-append", "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off",
		"-display", "none", "-monitor", "none", "-serial", "file:" + console, "-no-reboot",
		"-virtfs", "local,path=/,mount_tag=" + tagRoot + ",security_model=passthrough,readonly=on,multidevs=remap",
		"-virtfs", "local,path=" + o.Kernel.ModulesDir() + ",mount_tag=" + tagModules + ",security_model=passthrough,readonly=on",
		"-virtfs", "local,path=" + runDir + ",mount_tag=" + tagRun + ",security_model=passthrough",
	}
	argv := append([]string{o.Qemu}, args...)
	if o.NIC != nil {
		argv = append([]string{"nsenter", "--net=" + o.NIC.NetNS}, argv...)
		argv = append(argv, "-netdev", "tap,id=n0,ifname="+tapName+",script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0")
	} else {
		argv = append(argv, "-nic", "none")
	}
	tctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, argv[0], argv[1:]...)
	// The guest goes with this process, even when it is killed (nsenter execs qemu).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var qemuOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qemuOut, &qemuOut
	cmd.WaitDelay = 5 * time.Second
	began := time.Now()
	fmt.Fprintf(o.Log, "vm: booting Linux %s (%d CPUs, %d MiB, software emulation)\n", o.Kernel.Version, o.CPUs, o.Memory)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", o.Qemu, err)
	}
	if o.NIC != nil {
		if err := plugTap(tctx, *o.NIC); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return 0, fmt.Errorf("%w; qemu: %s", err, strings.TrimSpace(qemuOut.String()))
		}
	}
	stop := make(chan struct{})
	streamed := make(chan struct{})
	go func() { stream(filepath.Join(runDir, outputFile), o.Output, stop); close(streamed) }()
	lockup := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Second):
			}
			if b, err := os.ReadFile(console); err == nil {
				if line := lockedUp(b); line != "" {
					lockup <- line
					cancel()
					return
				}
			}
		}
	}()
	werr := cmd.Wait()
	close(stop)
	<-streamed
	took := time.Since(began).Round(100 * time.Millisecond)
	b, serr := os.ReadFile(filepath.Join(runDir, statusFile))
	if serr != nil {
		// No status: a lockup the watcher saw ended the guest.
		select {
		case line := <-lockup:
			return 0, fmt.Errorf("%w after %s (%s)\nlast console lines:\n%s", ErrGuestLockup, took, line, tail(console, 30))
		default:
		}
		why := fmt.Sprintf("qemu ended (%v)", werr)
		if errors.Is(tctx.Err(), context.DeadlineExceeded) {
			why = fmt.Sprintf("timed out after %s", o.Timeout)
		} else if ctx.Err() != nil {
			why = "interrupted"
		}
		return 0, fmt.Errorf("vm: %s after %s without a status; qemu: %s\nlast console lines:\n%s",
			why, took, strings.TrimSpace(qemuOut.String()), tail(console, 30))
	}
	var st status
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, fmt.Errorf("vm: %s: %w", statusFile, err)
	}
	if st.Error != "" {
		return 0, fmt.Errorf("vm: the guest failed after %s: %s\nlast console lines:\n%s", took, st.Error, tail(console, 30))
	}
	code := 0
	for _, c := range st.Exit {
		if c != 0 {
			code = c
			if code < 0 {
				code = 1
			}
			break
		}
	}
	fmt.Fprintf(o.Log, "vm: %d command(s) ended in %s, exit codes %v\n", len(st.Exit), took, st.Exit)
	return code, nil
}

func (o *Options) defaults() error {
	if o.Kernel.Dir == "" || o.Kernel.Version == "" {
		return errors.New("vm: no kernel (hack/vm.sh fetches one)")
	}
	if len(o.Commands) == 0 {
		return errors.New("vm: no commands to run")
	}
	if o.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		o.Dir = wd
	}
	if o.Memory == 0 {
		o.Memory = 2048
	}
	if o.CPUs == 0 {
		o.CPUs = min(runtime.NumCPU(), 4)
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Minute
	}
	if o.Init == "" {
		return errors.New("vm: no guest init (a static wgmesh-vminit)")
	}
	if o.Qemu == "" {
		o.Qemu = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(o.Qemu); err != nil {
		return fmt.Errorf("vm: %s not found (hack/vm.sh installs qemu-system-x86): %w", o.Qemu, err)
	}
	if o.Output == nil {
		o.Output = os.Stdout
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	return nil
}

// plugTap waits for qemu's tap and puts it, up, on the bridge.
func plugTap(ctx context.Context, nic NIC) error {
	ns, err := netns.GetFromPath(nic.NetNS)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tap, err := h.LinkByName(tapName)
		if err == nil {
			br, err := h.LinkByName(nic.Bridge)
			if err != nil {
				return fmt.Errorf("vm: bridge %s in %s: %w", nic.Bridge, nic.NetNS, err)
			}
			if err := h.LinkSetMaster(tap, br); err != nil {
				return fmt.Errorf("vm: %s onto %s: %w", tapName, nic.Bridge, err)
			}
			return h.LinkSetUp(tap)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("vm: qemu made no tap %s in %s: %v", tapName, nic.NetNS, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkStatic refuses an init that needs a dynamic loader: the initramfs has none.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("vm: guest init %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("vm: guest init %s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

// stream copies what is appended to path to w until stop is closed, then the rest.
func stream(path string, w io.Writer, stop <-chan struct{}) {
	var f *os.File
	buf := make([]byte, 64*1024)
	for {
		if f == nil {
			f, _ = os.Open(path)
		}
		if f != nil {
			for {
				n, err := f.Read(buf)
				if n > 0 {
					_, _ = w.Write(buf[:n])
				}
				if err != nil || n == 0 {
					break
				}
			}
		}
		select {
		case <-stop:
			if f == nil {
				return
			}
			_, _ = io.Copy(w, f)
			f.Close()
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.ReplaceAll(strings.TrimRight(string(b), "\n"), "\r", ""), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cpuModel is qemu's -cpu: max (every feature TCG emulates) unless WGMESH_VM_CPU says.
func cpuModel() string {
	if m := os.Getenv("WGMESH_VM_CPU"); m != "" {
		return m
	}
	return "max"
}
