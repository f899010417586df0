package nodeparts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

// containerdConfig is the least a real node's containerd needs here (see
// REAL-NODES.md): every path in the test's directory, cgroupfs (no systemd),
// restrict_oom_score_adj (no CAP_SYS_RESOURCE), and the local pause image as
// the sandbox image.
const containerdConfig = `version = 4
root = '{{dir}}/root'
state = '{{dir}}/state'
imports = []

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{{pause}}'

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['{{dir}}/cni/bin']
  conf_dir = '{{dir}}/cni/net.d'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins.'io.containerd.internal.v1.opt']
  path = '{{dir}}/opt'

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = '{{dir}}/image-verifier'

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.server.v1.grpc']
  address = '{{dir}}/containerd.sock'

[plugins.'io.containerd.server.v1.ttrpc']
  address = '{{dir}}/containerd.sock.ttrpc'
`

// TestContainerdImportsTheImages starts the built containerd once, in a mount
// and network namespace of its own, and imports every image archive as a
// kubelet's node would need them.
func TestContainerdImportsTheImages(t *testing.T) {
	p := loadParts(t)
	if os.Geteuid() != 0 {
		skip.Unless(t, "needs root: containerd runs in a mount and network namespace of its own")
	}
	var pauseRef string
	for ref := range p.Images {
		if strings.HasPrefix(ref, pauseRepo+":") {
			pauseRef = ref
		}
	}
	if pauseRef == "" {
		t.Fatalf("parts.json lists no %s image", pauseRepo)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	config := strings.NewReplacer("{{dir}}", dir, "{{pause}}", pauseRef).Replace(containerdConfig)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	exited := startContainerd(t, p, dir)

	ctr := func(args ...string) (string, error) {
		args = append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)
		out, err := exec.Command(filepath.Join(p.dir, "ctr"), args...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	// Until containerd answers, or at once when it exits.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var version string
	if err := wait.Poll(ctx, 30*time.Second, func() (err error) {
		select {
		case <-exited:
			cancel()
			return errors.New("containerd exited")
		default:
		}
		version, err = ctr("version")
		return err
	}); err != nil {
		t.Fatalf("waiting for containerd to answer ctr version: %v", err)
	}
	if want := "Version:  " + p.Containerd; strings.Count(version, want) != 2 {
		t.Errorf("ctr version printed %q, want client and server %s", version, p.Containerd)
	}

	refs := keys(p.Images)
	sort.Strings(refs)
	for _, ref := range refs {
		start := time.Now()
		if _, err := ctr("images", "import", "--platform", "linux/amd64", filepath.Join(p.dir, p.Images[ref])); err != nil {
			t.Fatalf("importing %s: %v", ref, err)
		}
		t.Logf("imported %s from %s in %s", ref, p.Images[ref], time.Since(start).Round(time.Millisecond))
	}
	out, err := ctr("images", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, l := range strings.Fields(out) {
		listed[l] = true
	}
	for _, ref := range refs {
		if !listed[ref] {
			t.Errorf("after import, ctr images ls lists %q, not %s", strings.Fields(out), ref)
		}
	}
}

// startContainerd runs containerd with dir/config.toml in new mount and
// network namespaces (its snapshot mounts and its CRI ports stay there and go
// with it), stopped and reaped at cleanup; its log is shown when the test
// failed. The returned channel closes when it exits.
func startContainerd(t *testing.T, p *parts, dir string) <-chan struct{} {
	t.Helper()
	logPath := filepath.Join(dir, "containerd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--net", "--propagation", "private", "--",
		filepath.Join(p.dir, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting containerd: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("containerd log:\n%s", b)
			}
		}
	})
	return done
}
