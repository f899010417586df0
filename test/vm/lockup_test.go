package vm

import "testing"

func TestLockedUp(t *testing.T) {
	for _, c := range []struct {
		name, console, want string
	}{
		{"none", "[    1.0] Run /init as init process\n", ""},
		{"short lockups pass", "[  50.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [ksoftirqd/0:14]\n" +
			"[  90.1] watchdog: BUG: soft lockup - CPU#1 stuck for 179s! [swapper/1:0]\n", ""},
		{"a lasting one", "[  50.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [ksoftirqd/0:14]\n" +
			"[ 812.3] watchdog: BUG: soft lockup - CPU#0 stuck for 600s! [ksoftirqd/0:14]\n",
			"soft lockup - CPU#0 stuck for 600s"},
	} {
		if got := lockedUp([]byte(c.console)); got != c.want {
			t.Errorf("%s: lockedUp = %q, want %q", c.name, got, c.want)
		}
	}
}
