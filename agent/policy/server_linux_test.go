package policy

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/test/skip"
)

// nobody is the unprivileged user the socket must turn away.
const nobody = 65534

// TestHelperAsk is not a test: TestCNISocketRootOnly runs the test binary
// as another user with WGMESH_TEST_POLICY_SOCKET set, and this asks the
// agent there, printing the outcome.
func TestHelperAsk(t *testing.T) {
	socket := os.Getenv("WGMESH_TEST_POLICY_SOCKET")
	if socket == "" {
		t.Skip("a helper process of TestCNISocketRootOnly")
	}
	err := guard.AskPolicy(context.Background(), socket, guard.PolicyRequest{Namespace: "x", Name: "server"})
	os.Stdout.WriteString("outcome: " + errString(err) + "\n")
}

func errString(err error) string {
	if err == nil {
		return "answered"
	}
	return err.Error()
}

// TestCNISocketRootOnly: a process of another user cannot use the socket:
// its mode (0600) turns it away, and with the mode opened (a
// misconfiguration) the agent still refuses it by its credentials.
func TestCNISocketRootOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		skip.Unless(t, "needs root to run a process as another user")
	}
	r := newSocketRig(t)
	// The helper: a copy of this binary where nobody may run it, the
	// socket's directory open to it.
	dir, err := os.MkdirTemp("", "wgmesh-policy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "policy.test")
	copyFile(t, self, helper)
	for _, d := range []string{dir, filepath.Dir(r.socket)} {
		for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	ask := func() string {
		t.Helper()
		cmd := exec.Command(helper, "-test.run=^TestHelperAsk$")
		cmd.Env = append(os.Environ(), "WGMESH_TEST_POLICY_SOCKET="+r.socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as uid %d: %v\n%s", nobody, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if o, ok := strings.CutPrefix(l, "outcome: "); ok {
				return o
			}
		}
		t.Fatalf("helper printed no outcome:\n%s", out)
		return ""
	}
	if got := ask(); !strings.Contains(got, "permission denied") {
		t.Errorf("uid %d asking on the 0600 socket: %s, want permission denied", nobody, got)
	}
	if err := os.Chmod(r.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := ask(); !strings.Contains(got, "only root may ask") {
		t.Errorf("uid %d asking on a socket opened to all: %s, want refused by its credentials", nobody, got)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
