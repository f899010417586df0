package skip

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUnlessFailsWhenRequired runs a test that lacks a requirement in a
// child process, with and without the switch.
func TestUnlessFailsWhenRequired(t *testing.T) {
	if os.Getenv("WGMESH_SKIP_CHILD") == "1" {
		Unless(t, "the requirement is missing")
		return
	}
	Short(t, "runs the test binary again")
	for _, tc := range []struct {
		env      string
		wantFail bool
	}{{"", false}, {"1", true}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUnlessFailsWhenRequired$", "-test.v")
		cmd.Env = append(os.Environ(), "WGMESH_SKIP_CHILD=1", EnvNoSkip+"="+tc.env)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail {
			t.Errorf("%s=%q: failed %v, want %v\n%s", EnvNoSkip, tc.env, failed, tc.wantFail, out)
		}
		if tc.wantFail && !strings.Contains(string(out), "required test cannot run") {
			t.Errorf("%s=1: no clear failure message:\n%s", EnvNoSkip, out)
		}
	}
}
