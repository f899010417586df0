package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// assemble runs the command with args plus --out and --print-digest, and
// returns the archive's path and the printed digest.
func assemble(t *testing.T, args ...string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.oci.tar")
	var stdout, stderr bytes.Buffer
	if err := run(append(args, "--out", out, "--print-digest"), &stdout, &stderr); err != nil {
		t.Fatalf("run %q: %v\n%s", args, err, stderr.String())
	}
	return out, strings.TrimSpace(stdout.String())
}

// rootfs writes a small tree, with file times and directory path that differ
// from call to call.
func rootfs(t *testing.T, when time.Time) string {
	t.Helper()
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "tmp"), 0o755))
	must(t, os.Chmod(filepath.Join(root, "tmp"), 0o777|os.ModeSticky))
	must(t, os.WriteFile(filepath.Join(root, "usr/local/bin/app"), []byte("\x7fELF not really"), 0o755))
	must(t, os.Chmod(filepath.Join(root, "usr/local/bin/app"), 0o755)) // whatever the umask
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/sbin/nologin\n"), 0o644))
	must(t, os.Symlink("app", filepath.Join(root, "usr/local/bin/alias")))
	for _, p := range []string{"usr/local/bin/app", "etc/passwd", "usr/local/bin", "usr/local", "usr", "etc", "tmp"} {
		must(t, os.Chtimes(filepath.Join(root, p), when, when))
	}
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReproducible(t *testing.T) {
	build := func(when time.Time) (string, string) {
		root := rootfs(t, when)
		base := filepath.Join(t.TempDir(), "base.tar")
		writeTarFile(t, base, false, []tarEntry{{hdr: tar.Header{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: when}}})
		return assemble(t, "--name", "example.com/app:1",
			"--platform", "linux/amd64", "--platform", "linux/arm64",
			"--tar", "all="+base, "--dir", "linux/amd64="+root, "--dir", "linux/arm64="+root,
			"--cmd", `["app"]`, "--env", "PATH=/usr/local/bin", "--label", "b=2", "--label", "a=1", "--epoch", "1700000000")
	}
	out1, d1 := build(time.Unix(1, 0))
	out2, d2 := build(time.Unix(2_000_000_000, 0))
	if d1 == "" || d1 != d2 {
		t.Fatalf("digests differ for the same inputs: %q and %q", d1, d2)
	}
	b1, err := os.ReadFile(out1)
	must(t, err)
	b2, err := os.ReadFile(out2)
	must(t, err)
	if !bytes.Equal(b1, b2) {
		t.Fatal("archives differ for the same inputs")
	}
}

func TestArchiveIsAnOCILayoutAndADockerArchive(t *testing.T) {
	root := rootfs(t, time.Now())
	out, digest := assemble(t, "--name", "pause:3.10",
		"--platform", "linux/amd64", "--platform", "linux/arm64", "--dir", "all="+root,
		"--entrypoint", `["/pause"]`, "--user", "65532", "--workdir", "/", "--epoch", "42")
	dir := extract(t, out)

	var index v1.IndexManifest
	readJSON(t, filepath.Join(dir, "index.json"), &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(index.Manifests))
	}
	top := index.Manifests[0]
	if top.Digest.String() != digest || top.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("index.json: %s %s, want the printed digest %s of an image index", top.MediaType, top.Digest, digest)
	}
	for _, k := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
		if got := top.Annotations[k]; got != "docker.io/library/pause:3.10" {
			t.Errorf("annotation %s = %q, want the full reference docker.io/library/pause:3.10", k, got)
		}
	}

	p, err := layout.FromPath(dir)
	must(t, err)
	idx, err := p.ImageIndex()
	must(t, err)
	h, err := v1.NewHash(digest)
	must(t, err)
	images, err := idx.ImageIndex(h)
	must(t, err)
	if err := validate.Index(images); err != nil {
		t.Fatalf("the image index does not validate: %v", err)
	}
	im, err := images.IndexManifest()
	must(t, err)
	var platforms []string
	for _, m := range im.Manifests {
		platforms = append(platforms, m.Platform.String())
		img, err := images.Image(m.Digest)
		must(t, err)
		cfg, err := img.ConfigFile()
		must(t, err)
		if cfg.Architecture != m.Platform.Architecture || cfg.OS != "linux" {
			t.Errorf("%s: config says %s/%s", m.Platform, cfg.OS, cfg.Architecture)
		}
		if got := strings.Join(cfg.Config.Entrypoint, " "); got != "/pause" || cfg.Config.User != "65532" || cfg.Config.WorkingDir != "/" {
			t.Errorf("%s: entrypoint %q user %q workdir %q", m.Platform, got, cfg.Config.User, cfg.Config.WorkingDir)
		}
		if !cfg.Created.Time.Equal(time.Unix(42, 0)) {
			t.Errorf("%s: created %s, want --epoch 42", m.Platform, cfg.Created.Time)
		}
	}
	if got := strings.Join(platforms, " "); got != "linux/amd64 linux/arm64" {
		t.Errorf("platforms %q, want linux/amd64 linux/arm64", got)
	}

	// docker load reads manifest.json: the first platform, tagged.
	tag, err := name.NewTag("pause:3.10")
	must(t, err)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("the docker-style image does not validate: %v", err)
	}
}

func TestSinglePlatformTopIsTheManifest(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "77")
	root := rootfs(t, time.Now())
	out, digest := assemble(t, "--name", "registry.k8s.io/pause:3.10.2", "--platform", "linux/arm64", "--dir", "linux/arm64="+root)
	dir := extract(t, out)
	var index v1.IndexManifest
	readJSON(t, filepath.Join(dir, "index.json"), &index)
	top := index.Manifests[0]
	if top.Digest.String() != digest || top.MediaType != "application/vnd.oci.image.manifest.v1+json" || top.Platform.String() != "linux/arm64" {
		t.Fatalf("index.json entry %+v, want the image manifest %s for linux/arm64", top, digest)
	}
	if got := top.Annotations["org.opencontainers.image.ref.name"]; got != "registry.k8s.io/pause:3.10.2" {
		t.Errorf("ref.name %q", got)
	}
	p, err := layout.FromPath(dir)
	must(t, err)
	img, err := p.Image(top.Digest)
	must(t, err)
	if err := validate.Image(img); err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	must(t, err)
	if !cfg.Created.Time.Equal(time.Unix(77, 0)) {
		t.Errorf("created %s, want $SOURCE_DATE_EPOCH 77 (no --epoch)", cfg.Created.Time)
	}
}

func TestDirLayerOwnersModesTimes(t *testing.T) {
	root := rootfs(t, time.Now())
	if os.Geteuid() == 0 {
		must(t, os.Lchown(filepath.Join(root, "etc/passwd"), 1000, 1000))
	}
	out, _ := assemble(t, "--name", "x:1", "--platform", "linux/amd64", "--dir", "linux/amd64="+root, "--epoch", "1234")
	entries := layerEntries(t, out, 0)
	var names []string
	for _, e := range entries {
		names = append(names, e.hdr.Name)
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.Uname != "" || e.hdr.Gname != "" {
			t.Errorf("%s owned %d:%d (%s:%s), want 0:0", e.hdr.Name, e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname)
		}
		if !e.hdr.ModTime.Equal(time.Unix(1234, 0)) {
			t.Errorf("%s mtime %s, want --epoch", e.hdr.Name, e.hdr.ModTime)
		}
	}
	want := "etc/ etc/passwd tmp/ usr/ usr/local/ usr/local/bin/ usr/local/bin/alias usr/local/bin/app"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("entries\n %s\nwant\n %s", got, want)
	}
	byName := map[string]tarEntry{}
	for _, e := range entries {
		byName[e.hdr.Name] = e
	}
	if m := byName["tmp/"].hdr.Mode; m != 0o1777 {
		t.Errorf("tmp/ mode %o, want 1777", m)
	}
	if e := byName["usr/local/bin/app"]; e.hdr.Mode != 0o755 || string(e.body) != "\x7fELF not really" {
		t.Errorf("app: mode %o body %q", e.hdr.Mode, e.body)
	}
	if e := byName["usr/local/bin/alias"]; e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "app" {
		t.Errorf("alias: type %c link %q", e.hdr.Typeflag, e.hdr.Linkname)
	}
}

func TestTarLayerKeepsEntries(t *testing.T) {
	long := "usr/share/" + strings.Repeat("very-long-directory-name/", 6) + "file"
	in := []tarEntry{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "./bin/ping", Typeflag: tar.TypeReg, Mode: 0o4755, PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}}, body: "ping"},
		{hdr: tar.Header{Name: "./bin/ping6", Typeflag: tar.TypeLink, Linkname: "./bin/ping"}},
		{hdr: tar.Header{Name: "./bin/sh", Typeflag: tar.TypeSymlink, Linkname: "dash", Mode: 0o777}},
		{hdr: tar.Header{Name: "./dev/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "./var/mail/", Typeflag: tar.TypeDir, Mode: 0o2775, Gid: 8, Gname: "mail"}},
		{hdr: tar.Header{Name: "./home/user/notes", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1000, Gid: 1000, Uname: "user", Gname: "user"}, body: "hello"},
		{hdr: tar.Header{Name: "./" + long, Typeflag: tar.TypeReg, Mode: 0o644}, body: "long"},
	}
	for _, gz := range []bool{false, true} {
		file := filepath.Join(t.TempDir(), "rootfs.tar")
		writeTarFile(t, file, gz, in)
		out, _ := assemble(t, "--name", "x:1", "--platform", "linux/amd64", "--tar", "linux/amd64="+file, "--epoch", "99")
		got := layerEntries(t, out, 0)
		if len(got) != len(in)-1 {
			t.Fatalf("gzip=%v: %d entries, want %d (all but the root ./)", gz, len(got), len(in)-1)
		}
		for i, g := range got {
			w := in[i+1]
			wantName := strings.TrimPrefix(w.hdr.Name, "./")
			wantLink := w.hdr.Linkname
			if w.hdr.Typeflag == tar.TypeLink {
				wantLink = strings.TrimPrefix(wantLink, "./")
			}
			h := g.hdr
			if h.Name != wantName || h.Typeflag != w.hdr.Typeflag || h.Mode != w.hdr.Mode || h.Linkname != wantLink ||
				h.Uid != w.hdr.Uid || h.Gid != w.hdr.Gid || h.Uname != w.hdr.Uname || h.Gname != w.hdr.Gname ||
				h.Devmajor != w.hdr.Devmajor || h.Devminor != w.hdr.Devminor || string(g.body) != w.body {
				t.Errorf("gzip=%v: entry %d\n got %+v %q\nwant %+v %q", gz, i, h, g.body, w.hdr, w.body)
			}
			for k, v := range w.hdr.PAXRecords {
				if h.PAXRecords[k] != v {
					t.Errorf("gzip=%v: %s lost PAX record %s", gz, h.Name, k)
				}
			}
			if !h.ModTime.Equal(time.Unix(99, 0)) {
				t.Errorf("gzip=%v: %s mtime %s, want --epoch", gz, h.Name, h.ModTime)
			}
		}
	}
}

func TestEpochDefault(t *testing.T) {
	args := []string{"--name", "x:1", "--platform", "linux/amd64", "--out", "x.tar"}
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if o, err := parseFlags(args, io.Discard); err != nil || o.epoch != 0 {
		t.Errorf("without SOURCE_DATE_EPOCH: epoch %v, %v; want 0", o, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if o, err := parseFlags(args, io.Discard); err != nil || o.epoch != 1700000000 {
		t.Errorf("SOURCE_DATE_EPOCH=1700000000: epoch %v, %v", o, err)
	}
	if o, err := parseFlags(append(args, "--epoch", "5"), io.Discard); err != nil || o.epoch != 5 {
		t.Errorf("--epoch 5 beats SOURCE_DATE_EPOCH: epoch %v, %v", o, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := parseFlags(args, io.Discard); err == nil {
		t.Error("SOURCE_DATE_EPOCH=yesterday: no error")
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--platform", "linux/amd64", "--out", "x.tar"}, // no --name
		{"--name", "x:1", "--out", "x.tar"},             // no --platform
		{"--name", "x:1", "--platform", "linux/amd64", "--out", "x.tar", "--dir", "linux/arm64=d"},
		{"--name", "x:1", "--platform", "linux/amd64", "--out", "x.tar", "--cmd", "app"},
		{"--name", "x:1", "--platform", "linux/amd64", "--out", "x.tar", "--env", "NOVALUE"},
		{"--name", "x:1", "--platform", "linux", "--out", "x.tar"},
		{"--name", "x@sha256:" + strings.Repeat("0", 64), "--platform", "linux/amd64", "--out", "x.tar"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestFullReference(t *testing.T) {
	for in, want := range map[string]string{
		"pause:3.10":                  "docker.io/library/pause:3.10",
		"busybox":                     "docker.io/library/busybox:latest",
		"docker.io/coredns/coredns:1": "docker.io/coredns/coredns:1",
		"ghcr.io/wgmesh/wgmesh:0.1.0": "ghcr.io/wgmesh/wgmesh:0.1.0",
		"localhost:5000/a/b:c":        "localhost:5000/a/b:c",
	} {
		got, err := fullReference(in)
		if err != nil || got != want {
			t.Errorf("fullReference(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

func writeTarFile(t *testing.T, file string, gz bool, entries []tarEntry) {
	t.Helper()
	f, err := os.Create(file)
	must(t, err)
	defer f.Close()
	var w io.Writer = f
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(f)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.body))
		if h.ModTime.IsZero() {
			h.ModTime = time.Now()
		}
		must(t, tw.WriteHeader(&h))
		_, err := io.WriteString(tw, e.body)
		must(t, err)
	}
	must(t, tw.Close())
	if zw != nil {
		must(t, zw.Close())
	}
}

// extract unpacks the archive into a directory.
func extract(t *testing.T, archive string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	must(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		must(t, err)
		p := filepath.Join(dir, hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			must(t, os.MkdirAll(p, 0o755))
			continue
		}
		b, err := io.ReadAll(tr)
		must(t, err)
		must(t, os.WriteFile(p, b, 0o644))
	}
}

func readJSON(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	must(t, err)
	must(t, json.Unmarshal(b, v))
}

// layerEntries reads layer n of the single-platform image in archive.
func layerEntries(t *testing.T, archive string, n int) []tarEntry {
	t.Helper()
	p, err := layout.FromPath(extract(t, archive))
	must(t, err)
	idx, err := p.ImageIndex()
	must(t, err)
	im, err := idx.IndexManifest()
	must(t, err)
	img, err := idx.Image(im.Manifests[0].Digest)
	must(t, err)
	layers, err := img.Layers()
	must(t, err)
	rc, err := layers[n].Uncompressed()
	must(t, err)
	defer rc.Close()
	var entries []tarEntry
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		must(t, err)
		body, err := io.ReadAll(tr)
		must(t, err)
		entries = append(entries, tarEntry{hdr: *hdr, body: string(body)})
	}
}
