// Package nodeparts checks the parts that real nodes run, as hack/node-parts.sh
// builds them into $WGMESH_NODE_PARTS (make test sets it): every binary
// reports the version pinned in the repository, every image archive names the
// image the e2e suite expects, and containerd starts and imports them.
package nodeparts

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/test/repo"
	"github.com/wgmesh/wgmesh/test/skip"
)

// parts is parts.json, which hack/node-parts.sh writes beside the parts.
type parts struct {
	dir        string
	Kubernetes string            `json:"kubernetes"`
	Containerd string            `json:"containerd"`
	CoreDNS    string            `json:"coredns"`
	Agnhost    string            `json:"agnhost"`
	Images     map[string]string `json:"images"` // image reference -> archive, relative to dir
}

// The repositories the e2e suite and the kubelet pull from, kept as they are
// so that no registry remapping is needed.
const (
	pauseRepo   = "registry.k8s.io/pause"
	agnhostRepo = "registry.k8s.io/e2e-test-images/agnhost"
	corednsRepo = "registry.k8s.io/coredns/coredns"
)

func loadParts(t *testing.T) *parts {
	t.Helper()
	dir := os.Getenv("WGMESH_NODE_PARTS")
	if dir == "" {
		skip.Unless(t, "WGMESH_NODE_PARTS is unset: run hack/node-parts.sh and point it at the printed directory (make test does both)")
	}
	raw, err := os.ReadFile(filepath.Join(dir, "parts.json"))
	if err != nil {
		t.Fatalf("WGMESH_NODE_PARTS=%s: %v (hack/node-parts.sh writes it last)", dir, err)
	}
	p := &parts{dir: dir}
	if err := json.Unmarshal(raw, p); err != nil {
		t.Fatalf("%s/parts.json: %v", dir, err)
	}
	return p
}

// pinned is the version that the go.mod of hack/<module> pins for module path.
func pinned(t *testing.T, module, path string) string {
	t.Helper()
	dir := filepath.Join(repo.Root(t), "hack", module)
	out, err := exec.Command("go", "-C", dir, "list", "-m", "-f", "{{.Version}}", path).Output()
	if err != nil {
		t.Fatalf("reading the version of %s pinned in %s/go.mod: %v", path, dir, err)
	}
	return strings.TrimSpace(string(out))
}

// version runs a part with args and returns what it printed.
func version(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestBinariesReportPinnedVersions(t *testing.T) {
	p := loadParts(t)
	kube := pinned(t, "tools", "k8s.io/kubernetes")
	containerd := pinned(t, "containerd", "github.com/containerd/containerd/v2")
	coredns := pinned(t, "coredns", "github.com/coredns/coredns")
	if p.Kubernetes != kube || p.Containerd != containerd || p.CoreDNS != coredns {
		t.Errorf("parts.json has kubernetes %s, containerd %s, coredns %s; hack/*/go.mod pin %s, %s, %s: stale parts directory",
			p.Kubernetes, p.Containerd, p.CoreDNS, kube, containerd, coredns)
	}
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{"kubelet", []string{"--version"}, "Kubernetes " + kube + "\n"},
		{"kube-scheduler", []string{"--version"}, "Kubernetes " + kube + "\n"},
		{"agnhost", []string{"--version"}, "version " + p.Agnhost + "\n"},
		{"containerd", []string{"--version"}, " github.com/containerd/containerd/v2 " + containerd + " "},
		{"containerd-shim-runc-v2", []string{"-v"}, "Version:  " + containerd + "\n"},
		{"ctr", []string{"--version"}, " github.com/containerd/containerd/v2 " + containerd + "\n"},
		{"coredns", []string{"-version"}, "CoreDNS-" + strings.TrimPrefix(coredns, "v") + "\n"},
		{"pause", []string{"-v"}, "pause.c v"},
	} {
		t.Run(tc.bin, func(t *testing.T) {
			if got := version(t, filepath.Join(p.dir, tc.bin), tc.args...); !strings.Contains(got, tc.want) {
				t.Errorf("%s %s printed %q, want it to contain %q", tc.bin, strings.Join(tc.args, " "), got, tc.want)
			}
		})
	}
	// runc is Debian's package, not one of the built parts.
	if _, err := exec.LookPath("runc"); err != nil {
		t.Errorf("runc is not installed: real nodes use Debian's package (apt-get install runc)")
	}
}

// wantImages is what the parts must hold: the pause image the pause binary
// was stamped for, CoreDNS at its pin, and agnhost at the binary's version plus
// one previous tag (the suite's AgnhostPrev).
func wantImages(t *testing.T, p *parts) map[string]image {
	t.Helper()
	out := version(t, filepath.Join(p.dir, "pause"), "-v") // pause.c v3.10.2-v1.37.2
	pauseTag := strings.TrimPrefix(strings.SplitN(strings.TrimSpace(strings.TrimPrefix(out, "pause.c ")), "-", 2)[0], "v")
	want := map[string]image{
		pauseRepo + ":" + pauseTag:    {entrypoint: []string{"/pause"}},
		corednsRepo + ":" + p.CoreDNS: {entrypoint: []string{"/coredns"}},
		agnhostRepo + ":" + p.Agnhost: {entrypoint: []string{"/agnhost"}, cmd: []string{"pause"}},
	}
	for ref := range p.Images {
		if strings.HasPrefix(ref, agnhostRepo+":") && ref != agnhostRepo+":"+p.Agnhost {
			want[ref] = image{entrypoint: []string{"/agnhost"}, cmd: []string{"pause"}}
		}
	}
	if len(want) != 4 {
		t.Errorf("parts.json lists images %v: want pause, coredns and two agnhost tags", keys(p.Images))
	}
	return want
}

func TestImageArchivesNameTheirImages(t *testing.T) {
	p := loadParts(t)
	for ref, w := range wantImages(t, p) {
		t.Run(ref, func(t *testing.T) {
			file, ok := p.Images[ref]
			if !ok {
				t.Fatalf("parts.json lists no archive for %s (it has %v)", ref, keys(p.Images))
			}
			got, err := readArchive(filepath.Join(p.dir, file), ref)
			if err != nil {
				t.Fatal(err)
			}
			if got.platform != "linux/amd64" {
				t.Errorf("%s: platform %s, want linux/amd64", file, got.platform)
			}
			if !equal(got.entrypoint, w.entrypoint) || !equal(got.cmd, w.cmd) {
				t.Errorf("%s: entrypoint %q cmd %q, want %q %q", file, got.entrypoint, got.cmd, w.entrypoint, w.cmd)
			}
		})
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func equal(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}
