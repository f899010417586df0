package proc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// childEnv makes the test binary run as the child of TestChild: it uses at
// least childCPU of CPU time, says "ready" and waits until its stdin closes.
const (
	childEnv = "PROC_TEST_CHILD"
	childCPU = 100 * time.Millisecond
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		for {
			s, err := Read(os.Getpid())
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			if s.CPU >= childCPU {
				break
			}
			for i := 0; i < 1e6; i++ {
			}
		}
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// comm is the command name of this test binary (and of its child).
func comm(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(exe)
	return name[:min(len(name), 15)]
}

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	s, err := Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.HWM < s.RSS || s.RSSAnon <= 0 || s.RSSFile <= 0 || s.CPU < 0 || s.ChildrenCPU < 0 {
		t.Errorf("this process: %+v", s)
	}
	if kib, err := StatusKiB(pid, "VmRSS"); err != nil || kib <= 0 {
		t.Errorf("VmRSS: %d KiB, %v", kib, err)
	}
	if _, err := StatusKiB(pid, "NoSuchField"); err == nil {
		t.Error("a missing field: no error")
	}
	if got, want := Name(pid), comm(t); got != want {
		t.Errorf("name %q, want %q", got, want)
	}
}

func TestNoProcess(t *testing.T) {
	for _, pid := range []int{0, -1} {
		if _, err := Read(pid); err == nil {
			t.Errorf("Read(%d): no error", pid)
		}
	}
}

// TestChild starts the test binary as a child that uses CPU and then waits:
// it is among this process's children, with its name, CPU time and memory;
// once waited for, it is gone and its CPU time counts in ChildrenCPU.
func TestChild(t *testing.T) {
	self := os.Getpid()
	before, err := Read(self)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	pid := cmd.Process.Pid

	if c := Children(self); !slices.Contains(c, pid) {
		t.Errorf("children %v, want %d among them", c, pid)
	}
	if c := Children(pid); len(c) != 0 {
		t.Errorf("the child's children: %v, want none", c)
	}
	if got, want := Name(pid), comm(t); got != want {
		t.Errorf("child's name %q, want %q", got, want)
	}
	s, err := Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	// /proc counts in clock ticks (10ms); the child counts the same way.
	if s.CPU < childCPU || s.RSS <= 0 || s.HWM < s.RSS {
		t.Errorf("child: %+v, want CPU >= %s", s, childCPU)
	}
	if kib, err := StatusKiB(pid, "VmHWM"); err != nil || kib < s.RSS {
		t.Errorf("child's VmHWM: %d KiB, %v", kib, err)
	}

	stdin.Close()
	waited = true
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if c := Children(self); slices.Contains(c, pid) {
		t.Errorf("children %v after the child exited", c)
	}
	if _, err := Read(pid); err == nil {
		t.Error("Read of the exited child: no error")
	}
	if got := Name(pid); got != "?" {
		t.Errorf("name of the exited child %q, want ?", got)
	}
	after, err := Read(self)
	if err != nil {
		t.Fatal(err)
	}
	if d := after.ChildrenCPU - before.ChildrenCPU; d < childCPU {
		t.Errorf("children's CPU grew by %s, want >= %s (the child's)", d, childCPU)
	}
}

func TestStatusKiBText(t *testing.T) {
	status := "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n"
	if v, err := statusKiB(status, "VmRSS"); err != nil || v != 1024 {
		t.Errorf("VmRSS: %v %v", v, err)
	}
	if v, err := statusKiB(status, "VmHWM"); err != nil || v != 2048 {
		t.Errorf("VmHWM: %v %v", v, err)
	}
	if _, err := statusKiB(status, "RssAnon"); err == nil {
		t.Error("a missing field: no error")
	}
}
