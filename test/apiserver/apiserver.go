// Package apiserver starts the real kube-apiserver and etcd for API tests
// (controller-runtime envtest; binaries from KUBEBUILDER_ASSETS, built by
// hack/control-plane.sh) with wgmesh's CRDs from charts/wgmesh/crds
// installed, as `helm install` creates them.
package apiserver

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/wgmesh/wgmesh/test/skip"
)

// SkipReason says why API tests cannot run here, or "" when they can.
func SkipReason() string {
	switch {
	case testing.Short():
		return "API test: skipped with -short"
	case os.Getenv("KUBEBUILDER_ASSETS") == "":
		return "API test: KUBEBUILDER_ASSETS is unset: it needs a real kube-apiserver and etcd (make test sets it; see hack/control-plane.sh)"
	}
	return ""
}

// CRDDir is charts/wgmesh/crds of this repository, found from the working
// directory (a package directory while tests run) upwards.
func CRDDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "charts", "wgmesh", "crds"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: cannot find charts/wgmesh/crds")
		}
		dir = parent
	}
}

// Options change how StartWith runs the API server; the zero value is Start.
type Options struct {
	// ServiceCIDR is the API server's --service-cluster-ip-range (envtest's
	// default, 10.0.0.0/24, when empty). Tests that set ClusterIPs use a range
	// inside 198.18.0.0/15.
	ServiceCIDR string
}

// Start starts an API server with the CRDs installed. The caller stops it
// with env.Stop (API server before etcd, which envtest does).
func Start() (*envtest.Environment, *rest.Config, error) { return StartWith(Options{}) }

// StartWith is Start with options.
func StartWith(opts Options) (*envtest.Environment, *rest.Config, error) {
	crds, err := CRDDir()
	if err != nil {
		return nil, nil, err
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{crds}, ErrorIfCRDPathMissing: true}
	if opts.ServiceCIDR != "" {
		env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", opts.ServiceCIDR)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting kube-apiserver and etcd (envtest): %w", err)
	}
	return env, cfg, nil
}

// StartForTest is Start for one test: it skips the test where API tests
// cannot run and stops the API server when the test ends.
func StartForTest(tb testing.TB) (*envtest.Environment, *rest.Config) {
	tb.Helper()
	if reason := SkipReason(); reason != "" {
		SkipOrFail(tb, reason)
	}
	env, cfg, err := Start()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = env.Stop() })
	return env, cfg
}

// SkipOrFail skips tb for reason (from SkipReason): with -short always;
// otherwise a failure when requirements are required (skip.EnvNoSkip).
func SkipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	skip.Short(tb, "API test")
	skip.Unless(tb, reason)
}

// shared is the API server of the package whose TestMain is Main.
var shared struct {
	env  *envtest.Environment
	cfg  *rest.Config
	skip string
}

// Main is the TestMain of a package whose tests share one API server: where
// API tests can run it starts one (Start), hands its config to setup (a
// package's clients), runs the tests and stops it; elsewhere it runs the
// tests, and those that call Need skip or fail by the skip rules. It returns
// the exit code: os.Exit(apiserver.Main(m, setup)).
func Main(m *testing.M, setup func(cfg *rest.Config) error) int {
	flag.Parse()
	if shared.skip = SkipReason(); shared.skip != "" {
		return m.Run()
	}
	env, cfg, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop() //nolint:errcheck
	if err := setup(cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	shared.env, shared.cfg = env, cfg
	return m.Run()
}

// Need skips or fails tb (SkipOrFail) when the package's shared API server
// (Main) is not running.
func Need(tb testing.TB) {
	tb.Helper()
	if shared.cfg == nil {
		SkipOrFail(tb, shared.skip)
	}
}

// Shared is the package's shared API server (Main); nil where none runs.
func Shared() *envtest.Environment { return shared.env }
