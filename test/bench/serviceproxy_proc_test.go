package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/netns"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat.
const clockTicks = 100

// proxyProc is a service proxy process running in a node namespace.
type proxyProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{}
	err     error
	// childPeakKiB is the largest VmHWM seen of its children named childName
	// (kube-proxy runs `nft` for every sync; their memory is not in kube-proxy's).
	childName    string
	childPeakKiB atomic.Int64
	stopSampler  context.CancelFunc
}

// startProxyProc runs bin in ns with its output in logDir/<name>.log; the test
// kills it when it ends, also when it fails.
func startProxyProc(tb testing.TB, ns *netns.NS, name, bin string, args []string, childName, logDir string) *proxyProc {
	tb.Helper()
	logPath := filepath.Join(logDir, name+".log")
	logf, err := os.Create(logPath)
	must(tb, err)
	cmd := ns.Command(context.Background(), append([]string{bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proxyProc{name: name, cmd: cmd, logPath: logPath, childName: childName, done: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	p.stopSampler = cancel
	go p.sampleChildren(ctx)
	tb.Cleanup(p.stop)
	return p
}

func (p *proxyProc) pid() int { return p.cmd.Process.Pid }

func (p *proxyProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitedWith describes how the process ended, with the end of its log.
func (p *proxyProc) exitedWith() string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return fmt.Sprintf("%s exited (%v); last log lines (%s):\n  %s", p.name, p.err, p.logPath, strings.Join(lines, "\n  "))
}

// stop sends SIGTERM, then SIGKILL after 5s. Safe to call twice.
func (p *proxyProc) stop() {
	p.stopSampler()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// statusKiB reads a "kB" field (VmHWM, VmRSS) of /proc/<pid>/status.
func statusKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// peakRSSKiB is the process's own peak resident set (VmHWM).
func (p *proxyProc) peakRSSKiB() (int64, error) { return statusKiB(p.pid(), "VmHWM") }

// cpu is the CPU time (user + system) the process used, including that of
// children it has waited for (kube-proxy's `nft` runs).
func (p *proxyProc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return 0, fmt.Errorf("short /proc/%d/stat", p.pid())
	}
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime (fields 14-17)
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// idle tells whether the process used (almost) no CPU over d and runs no
// helper child (kube-proxy is idle while it waits for nft).
func (p *proxyProc) idle(d time.Duration) bool {
	before, err := p.cpu()
	if err != nil {
		return false
	}
	time.Sleep(d)
	after, err := p.cpu()
	if err != nil || after-before > d/30 {
		return false
	}
	for _, c := range childPIDs(p.pid()) {
		if netns.ProcessName(c) == p.childName {
			return false
		}
	}
	return true
}

// sampleChildren records the peak VmHWM of the process's helper children every 20ms.
func (p *proxyProc) sampleChildren(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.done:
			return
		case <-t.C:
		}
		for _, c := range childPIDs(p.pid()) {
			// Until it execs, a child started with vfork shares (and reports) the
			// parent's memory: only count it once it runs as the helper.
			if netns.ProcessName(c) != p.childName {
				continue
			}
			if kib, err := statusKiB(c, "VmHWM"); err == nil && kib > p.childPeakKiB.Load() {
				p.childPeakKiB.Store(kib)
			}
		}
	}
}

// childPIDs lists the processes whose parent is pid (children are listed
// under the thread that started them, so every thread is read).
func childPIDs(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}
