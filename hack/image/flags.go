package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// allPlatforms is the <platform>= prefix of --tar and --dir that means every
// --platform.
const allPlatforms = "all"

// options are the parsed command line.
type options struct {
	name        string        // full reference, such as ghcr.io/wgmesh/wgmesh:0.1.0
	platforms   []v1.Platform // in the order given
	layers      []layerSource // --tar and --dir in the order given
	entrypoint  []string      // nil: unset
	cmd         []string      // nil: unset
	env         []string
	workdir     string
	user        string
	labels      map[string]string
	epoch       int64
	out         string
	printDigest bool
}

func (o *options) epochTime() time.Time { return time.Unix(o.epoch, 0).UTC() }

// layerSource is one --tar or --dir.
type layerSource struct {
	kind     string // "tar" or "dir"
	platform string // a --platform, or allPlatforms
	path     string
}

// appliesTo reports whether the layer belongs to platform p.
func (l layerSource) appliesTo(p v1.Platform) bool {
	return l.platform == allPlatforms || l.platform == p.String()
}

// layerFlag appends every --tar or --dir to one list, so that their order on
// the command line is the order of the layers.
type layerFlag struct {
	kind string
	list *[]layerSource
}

func (f layerFlag) String() string { return "" }

func (f layerFlag) Set(v string) error {
	platform, path, ok := strings.Cut(v, "=")
	if !ok {
		// A bare path is for every platform.
		platform, path = allPlatforms, v
	}
	if path == "" {
		return fmt.Errorf("%q: want <platform>=<path>, such as linux/amd64=rootfs.tar or all=rootfs", v)
	}
	*f.list = append(*f.list, layerSource{kind: f.kind, platform: platform, path: path})
	return nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (f *listFlag) String() string     { return strings.Join(*f, ",") }
func (f *listFlag) Set(v string) error { *f = append(*f, v); return nil }

// jsonArrayFlag is a JSON array of strings, such as '["wgmesh-agent"]'.
type jsonArrayFlag struct{ v *[]string }

func (f jsonArrayFlag) String() string {
	if f.v == nil || *f.v == nil {
		return ""
	}
	b, _ := json.Marshal(*f.v)
	return string(b)
}

func (f jsonArrayFlag) Set(s string) error {
	var a []string
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return fmt.Errorf("%q is not a JSON array of strings, such as '[\"/bin/app\", \"--flag\"]': %w", s, err)
	}
	if a == nil {
		a = []string{}
	}
	*f.v = a
	return nil
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{labels: map[string]string{}}
	var platforms, labels listFlag
	fs := flag.NewFlagSet("hack/image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.name, "name", "", "image reference, such as ghcr.io/wgmesh/wgmesh:0.1.0 (required)")
	fs.Var(&platforms, "platform", "os/arch[/variant], repeatable; more than one gives an image index (required)")
	fs.Var(layerFlag{"tar", &o.layers}, "tar", "<platform>=<file.tar>: a tar archive (gzip allowed) as one layer, entries kept; repeatable, in order; all= for every platform")
	fs.Var(layerFlag{"dir", &o.layers}, "dir", "<platform>=<dir>: a directory tree as one layer (owned 0:0, modes kept); repeatable, in order; all= for every platform")
	fs.Var(jsonArrayFlag{&o.entrypoint}, "entrypoint", "entrypoint as a JSON array")
	fs.Var(jsonArrayFlag{&o.cmd}, "cmd", "cmd as a JSON array")
	fs.Var((*listFlag)(&o.env), "env", "K=V, repeatable")
	fs.StringVar(&o.workdir, "workdir", "", "working directory")
	fs.StringVar(&o.user, "user", "", "user (uid[:gid] or name)")
	fs.Var(&labels, "label", "k=v, repeatable")
	epoch, err := defaultEpoch()
	if err != nil {
		return nil, err
	}
	fs.Int64Var(&o.epoch, "epoch", epoch, "unix seconds for every timestamp in layers and config (default $SOURCE_DATE_EPOCH, else 0)")
	fs.StringVar(&o.out, "out", "", "output: the OCI image layout as a tar archive (required)")
	fs.BoolVar(&o.printDigest, "print-digest", false, "print the top digest (the index when multi-platform, else the manifest) on stdout")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	if o.name == "" || o.out == "" || len(platforms) == 0 {
		return nil, errors.New("--name, --out and at least one --platform are required")
	}
	if o.name, err = fullReference(o.name); err != nil {
		return nil, err
	}
	if o.epoch < 0 {
		return nil, fmt.Errorf("--epoch %d: want unix seconds >= 0", o.epoch)
	}
	known := map[string]bool{}
	for _, s := range platforms {
		p, err := v1.ParsePlatform(s)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("--platform %q: want os/arch[/variant], such as linux/amd64", s)
		}
		if known[p.String()] {
			return nil, fmt.Errorf("--platform %s given twice", p)
		}
		known[p.String()] = true
		o.platforms = append(o.platforms, *p)
	}
	for _, l := range o.layers {
		if l.platform != allPlatforms && !known[l.platform] {
			return nil, fmt.Errorf("--%s %s=%s: %s is not a --platform (nor %s)", l.kind, l.platform, l.path, l.platform, allPlatforms)
		}
	}
	for _, e := range o.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want K=V", e)
		}
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want k=v", l)
		}
		o.labels[k] = v
	}
	return o, nil
}

// defaultEpoch is $SOURCE_DATE_EPOCH, else 0.
func defaultEpoch() (int64, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want unix seconds >= 0", s)
	}
	return n, nil
}
