package meshsim

import (
	"os"
	"testing"
)

func TestReadProc(t *testing.T) {
	p, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.RSS <= 0 || p.HWM < p.RSS || p.RSSAnon <= 0 || p.RSSFile <= 0 || p.CPU < 0 {
		t.Errorf("this process: %+v", p)
	}
	if _, err := readProc(0); err == nil {
		t.Error("no process (pid 0): no error")
	}
}

func TestStatusKiB(t *testing.T) {
	status := "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n"
	if v, err := statusKiB(status, "VmRSS"); err != nil || v != 1024 {
		t.Errorf("VmRSS: %v %v", v, err)
	}
	if _, err := statusKiB(status, "RssAnon"); err == nil {
		t.Error("a missing field: no error")
	}
}
