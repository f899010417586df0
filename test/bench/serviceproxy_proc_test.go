package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/proc"
)

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

// peakRSSKiB is the process's own peak resident set (VmHWM).
func (p *proxyProc) peakRSSKiB() (int64, error) { return proc.StatusKiB(p.pid(), "VmHWM") }

// cpu is the CPU time (user + system) the process used, including that of
// children it has waited for (kube-proxy's `nft` runs).
func (p *proxyProc) cpu() (time.Duration, error) {
	s, err := proc.Read(p.pid())
	return s.CPU + s.ChildrenCPU, err
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
	for _, c := range proc.Children(p.pid()) {
		if proc.Name(c) == p.childName {
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
		for _, c := range proc.Children(p.pid()) {
			// Until it execs, a child started with vfork shares (and reports) the
			// parent's memory: only count it once it runs as the helper.
			if proc.Name(c) != p.childName {
				continue
			}
			if kib, err := proc.StatusKiB(c, "VmHWM"); err == nil && kib > p.childPeakKiB.Load() {
				p.childPeakKiB.Store(kib)
			}
		}
	}
}
