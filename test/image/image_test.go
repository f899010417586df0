// Package image_test checks `make image`: hack/image.sh builds the wgmesh image
// twice here, and the tests read the OCI archives with archive/tar and
// encoding/json only.
package image_test

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/wgmesh/wgmesh/agent/cniinstall"
	"github.com/wgmesh/wgmesh/test/repo"
	"github.com/wgmesh/wgmesh/test/skip"
)

// machines are the platforms the image is built for and the ELF machine of
// their binaries.
var machines = map[string]elf.Machine{
	"linux/amd64": elf.EM_X86_64,
	"linux/arm64": elf.EM_AARCH64,
}

// shells are names that must not be in the image anywhere.
var shells = []string{"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox", "toybox"}

func TestImage(t *testing.T) {
	skip.Short(t, "builds the wgmesh image twice (hack/image.sh)")
	root := repo.Root(t)
	if _, err := exec.LookPath("bash"); err != nil {
		skip.Unless(t, "no bash to run hack/image.sh")
	}
	ch := readChart(t, root)

	// Twice, as make image does it: the same commit gives the same bytes.
	first := buildImage(t, root)
	second := buildImage(t, root)
	if first.digest == "" || first.digest != second.digest {
		t.Fatalf("two builds of the same tree: digests %q and %q, want equal and not empty", first.digest, second.digest)
	}
	if !bytes.Equal(mustRead(t, first.archive), mustRead(t, second.archive)) {
		t.Fatalf("two builds of the same tree: %s and %s differ", first.archive, second.archive)
	}
	if base := filepath.Base(first.archive); base != "wgmesh-"+ch.appVersion+".oci.tar" {
		t.Errorf("archive %s, want wgmesh-%s.oci.tar", base, ch.appVersion)
	}

	a, err := readArchive(first.archive)
	if err != nil {
		t.Fatal(err)
	}
	checkLayout(t, a, first.digest, ch)

	var top index
	mustJSON(t, a.files["index.json"], &top)
	var images index
	if err := a.json(top.Manifests[0], &images); err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, d := range images.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		if d.Platform.Variant != "" {
			p += "/" + d.Platform.Variant
		}
		platforms = append(platforms, p)
	}
	slices.Sort(platforms)
	if got := strings.Join(platforms, " "); got != "linux/amd64 linux/arm64" {
		t.Fatalf("the index lists %q, want exactly linux/amd64 and linux/arm64", got)
	}
	for _, d := range images.Manifests {
		p := d.Platform.OS + "/" + d.Platform.Architecture
		t.Run(strings.ReplaceAll(p, "/", "-"), func(t *testing.T) {
			checkPlatformImage(t, a, d, p, ch, root)
		})
	}
}

// checkLayout checks what importers read first: oci-layout, index.json (one
// entry, the index, named by the chart's default image) and manifest.json.
func checkLayout(t *testing.T, a *archive, digest string, ch chart) {
	t.Helper()
	for _, f := range []string{"oci-layout", "index.json", "manifest.json"} {
		if _, ok := a.files[f]; !ok {
			t.Fatalf("%s has no %s (it has %v)", a.file, f, a.names)
		}
	}
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	mustJSON(t, a.files["oci-layout"], &layout)
	if layout.Version != "1.0.0" {
		t.Errorf("oci-layout: imageLayoutVersion %q, want 1.0.0", layout.Version)
	}
	var top index
	mustJSON(t, a.files["index.json"], &top)
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1", len(top.Manifests))
	}
	d := top.Manifests[0]
	if d.MediaType != "application/vnd.oci.image.index.v1+json" || d.Digest != digest {
		t.Errorf("index.json: %s %s, want the image index with the printed digest %s", d.MediaType, d.Digest, digest)
	}
	name := ch.repository + ":" + ch.appVersion
	for _, k := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
		if d.Annotations[k] != name {
			t.Errorf("index.json: annotation %s = %q, want the chart's default image %s", k, d.Annotations[k], name)
		}
	}
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	mustJSON(t, a.files["manifest.json"], &docker)
	if len(docker) != 1 || !slices.Equal(docker[0].RepoTags, []string{name}) {
		t.Fatalf("manifest.json %+v, want one image tagged %s", docker, name)
	}
	for _, f := range append([]string{docker[0].Config}, docker[0].Layers...) {
		if _, ok := a.files[f]; !ok {
			t.Errorf("manifest.json names %s, which is not in the archive", f)
		}
	}
}

// checkPlatformImage checks one platform's image: its config, and that its
// files are exactly the binaries the chart runs, the CNI plugins the agent
// installs, and the few files static binaries read.
func checkPlatformImage(t *testing.T, a *archive, d descriptor, platform string, ch chart, root string) {
	var m manifest
	if err := a.json(d, &m); err != nil {
		t.Fatal(err)
	}
	var cfg imageConfig
	if err := a.json(m.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS+"/"+cfg.Architecture != platform {
		t.Errorf("config says %s/%s", cfg.OS, cfg.Architecture)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		t.Errorf("%d layers, %d diff_ids", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	epoch := lastCommitTime(t, root)
	if !cfg.Created.Equal(epoch) {
		t.Errorf("created %s, want the last commit's time %s", cfg.Created, epoch)
	}
	// The agent needs root: the image sets no other user (the chart runs the
	// operator as 65532 itself).
	if cfg.Config.User != "" && cfg.Config.User != "0" && cfg.Config.User != "root" {
		t.Errorf("user %q, want root (the agent programs the host's network)", cfg.Config.User)
	}

	files := map[string]entry{}
	for _, l := range m.Layers {
		entries, err := a.layerEntries(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			files[path.Clean("/"+e.hdr.Name)] = e
			if e.hdr.Uid != 0 || e.hdr.Gid != 0 {
				t.Errorf("%s owned %d:%d, want 0:0", e.hdr.Name, e.hdr.Uid, e.hdr.Gid)
			}
			if !e.hdr.ModTime.Equal(epoch) {
				t.Errorf("%s dated %s, want the last commit's time %s", e.hdr.Name, e.hdr.ModTime, epoch)
			}
		}
	}

	var binaries []string
	pathDirs := imagePath(t, cfg.Config.Env)
	for _, c := range append(ch.commands, firstOf(cfg.Config.Entrypoint, cfg.Config.Cmd)) {
		found := ""
		for _, dir := range pathDirs {
			if _, ok := files[path.Join(dir, c)]; ok {
				found = path.Join(dir, c)
				break
			}
		}
		if found == "" {
			t.Errorf("%s (run by the chart or the image config) is not on the image's PATH %v", c, pathDirs)
			continue
		}
		binaries = append(binaries, found)
	}
	for _, p := range cniinstall.StandardPlugins {
		binaries = append(binaries, path.Join(ch.cniBinSource, p))
	}
	slices.Sort(binaries)
	binaries = slices.Compact(binaries)

	for _, b := range binaries {
		e, ok := files[b]
		if !ok {
			t.Errorf("%s is missing", b)
			continue
		}
		if e.hdr.Mode != 0o755 {
			t.Errorf("%s: mode %o, want 755", b, e.hdr.Mode)
		}
		checkStaticELF(t, b, e.body, machines[platform])
	}

	passwd := string(files["/etc/passwd"].body)
	for _, want := range []string{"root:x:0:0:", "nonroot:x:65532:65532:"} {
		if !strings.Contains(passwd, "\n"+want) && !strings.HasPrefix(passwd, want) {
			t.Errorf("/etc/passwd has no %s...: %q", want, passwd)
		}
	}
	if tmp, ok := files["/tmp"]; !ok || tmp.hdr.Mode != 0o1777 {
		t.Errorf("/tmp: %v mode %o, want a directory with mode 1777", ok, tmp.hdr.Mode)
	}

	// Nothing else: no shell, no package manager, no stray file.
	want := append([]string{"/etc/passwd", "/etc/group", "/etc/nsswitch.conf"}, binaries...)
	slices.Sort(want)
	var got []string
	for name, e := range files {
		base := path.Base(name)
		if slices.Contains(shells, base) {
			t.Errorf("%s: the image must have no shell", name)
		}
		if e.hdr.Typeflag != 0 && e.hdr.Typeflag != '0' && e.hdr.Typeflag != '5' {
			t.Errorf("%s: type %c, want only directories and regular files", name, e.hdr.Typeflag)
		}
		if e.hdr.Typeflag != '5' {
			got = append(got, name)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("files in the image:\n %s\nwant exactly\n %s", strings.Join(got, "\n "), strings.Join(want, "\n "))
	}
}

// checkStaticELF fails unless body is a statically linked executable for
// machine: no program interpreter, no shared libraries.
func checkStaticELF(t *testing.T, name string, body []byte, machine elf.Machine) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(body))
	if err != nil {
		t.Errorf("%s is not an ELF file: %v", name, err)
		return
	}
	if f.Machine != machine {
		t.Errorf("%s is for %s, want %s", name, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter (PT_INTERP): dynamically linked, want static", name)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v (%v), want static", name, libs, err)
	}
}

// imagePath is the directories of the config's one PATH variable.
func imagePath(t *testing.T, env []string) []string {
	t.Helper()
	var dirs []string
	n := 0
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			dirs = strings.Split(v, ":")
			n++
		}
	}
	if n != 1 {
		t.Fatalf("env %q: want exactly one PATH", env)
	}
	return dirs
}

// firstOf is the program the image runs by default.
func firstOf(entrypoint, cmd []string) string {
	if len(entrypoint) > 0 {
		return entrypoint[0]
	}
	if len(cmd) > 0 {
		return cmd[0]
	}
	return ""
}

type built struct{ archive, digest string }

// buildImage runs hack/image.sh, the script make image runs, into a new
// directory, with the chart's defaults (IMAGE_TAG and the like from the
// caller's environment left out).
func buildImage(t *testing.T, root string) built {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "hack", "image.sh"), t.TempDir())
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		if k != "IMAGE_TAG" && k != "IMAGE_REPOSITORY" && k != "SOURCE_DATE_EPOCH" {
			cmd.Env = append(cmd.Env, e)
		}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/image.sh: %v\n%s%s", err, out, stderr.String())
	}
	t.Logf("hack/image.sh took %s", time.Since(start).Round(time.Second))
	var b built
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "archive: "); ok {
			b.archive = v
		}
		if v, ok := strings.CutPrefix(line, "digest: "); ok {
			b.digest = v
		}
	}
	if b.archive == "" || b.digest == "" {
		t.Fatalf("hack/image.sh printed no archive: or digest: line:\n%s", out)
	}
	return b
}

// chart is what the chart says about the image.
type chart struct {
	repository   string   // values.yaml image.repository
	appVersion   string   // Chart.yaml: the image tag when values.yaml image.tag is ""
	cniBinSource string   // values.yaml agent.cniBinSource
	commands     []string // the programs the chart's containers and probes run
}

func readChart(t *testing.T, root string) chart {
	t.Helper()
	dir := filepath.Join(root, "charts", "wgmesh")
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	mustYAML(t, filepath.Join(dir, "Chart.yaml"), &meta)
	var values struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
		Agent struct {
			CNIBinSource string `json:"cniBinSource"`
		} `json:"agent"`
	}
	mustYAML(t, filepath.Join(dir, "values.yaml"), &values)
	if values.Image.Tag != "" {
		t.Fatalf("values.yaml image.tag %q: the chart's default tag is appVersion, the tag make image builds", values.Image.Tag)
	}
	ch := chart{repository: values.Image.Repository, appVersion: meta.AppVersion, cniBinSource: values.Agent.CNIBinSource}
	if ch.repository == "" || ch.appVersion == "" || !path.IsAbs(ch.cniBinSource) {
		t.Fatalf("chart: repository %q appVersion %q cniBinSource %q", ch.repository, ch.appVersion, ch.cniBinSource)
	}

	command := regexp.MustCompile(`command:\s*\[\s*"?([^\s,"\]]+)`)
	templates, err := filepath.Glob(filepath.Join(dir, "templates", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range templates {
		for _, m := range command.FindAllStringSubmatch(string(mustRead(t, f)), -1) {
			if !slices.Contains(ch.commands, m[1]) {
				ch.commands = append(ch.commands, m[1])
			}
		}
	}
	for _, want := range []string{"wgmesh-agent", "wgmesh-operator"} {
		if !slices.Contains(ch.commands, want) {
			t.Fatalf("the chart's templates run %v, not %s", ch.commands, want)
		}
	}
	return ch
}

// lastCommitTime is the SOURCE_DATE_EPOCH hack/image.sh uses.
func lastCommitTime(t *testing.T, root string) time.Time {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "log", "-1", "--format=%ct").Output()
	if err != nil {
		return time.Unix(0, 0).UTC()
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("git log -1 --format=%%ct: %q", out)
	}
	return time.Unix(n, 0).UTC()
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustYAML(t *testing.T, file string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(mustRead(t, file), v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}
