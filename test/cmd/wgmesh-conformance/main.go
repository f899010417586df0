// Command wgmesh-conformance runs the upstream Kubernetes network conformance specs
// (e2e.test, built at the control plane's version by hack/e2e-test.sh) against a local
// real-node cluster (test/cluster, Options.RealNodes) with wgmesh installed by helm and no
// kube-proxy, prints passed/failed/skipped per spec and keeps the JUnit reports. Two
// passes over one cluster: the services selection, then the upstream Netpol specs with
// wgmesh's NetworkPolicy on (--netpol, default; the agents enforce policy in both).
//
//	wgmesh-conformance [--kube-proxy=PATH [--kube-proxy-mode=nftables|iptables]] [--focus=RE] [--skip=RE]
//	                   [--netpol=false | --netpol-focus=RE --netpol-skip=RE] [--report-dir=DIR]
//
// With --kube-proxy every node runs upstream kube-proxy (nftables mode unless told) and
// wgmesh's service NAT is off: the reference run, and the proof that wgmesh works on
// clusters that keep kube-proxy. `make conformance` and `make conformance-reference` are
// the entry points.
package main

import (
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/wgmesh/wgmesh/test/cluster"
)

// The selection of issue 9; README "Conformance" names each skip's reason.
const (
	DefaultFocus = `\[sig-network\] Networking Granular Checks|\[sig-network\] Services .*\[Conformance\]|` +
		`\[sig-network\] DNS should provide DNS for the cluster|should allow pods to hairpin back to themselves through services|` +
		`should be rejected when no endpoints exist|\[sig-network\] Conntrack`
	// SCTP: the kernel's SCTP conntrack and the suite's SCTP pods are out of scope;
	// [Slow]: each takes many minutes; LoadBalancer/[Feature:*]/[Disruptive]: need a
	// cloud load balancer, alpha features or node reboots this cluster does not have.
	DefaultSkip = `SCTP|sctp|\[Slow\]|LoadBalancer|load balancer|\[Feature:|\[Disruptive\]|\[Flaky\]`
)

// The upstream NetworkPolicy specs (upstream's own CI for its reference implementation
// focuses on Netpol): 48 data-plane specs and 2 API specs; SCTP connectivity needs the
// kernel's SCTP module and the suite's SCTP pods (README, "NetworkPolicy").
const (
	NetpolFocus = `\[sig-network\] Netpol`
	NetpolSkip  = `\[Feature:SCTPConnectivity\]`
)

// pass is one run of e2e.test against the cluster.
type pass struct {
	name, focus, skip string
}

func main() {
	kubeProxy := flag.String("kube-proxy", "", "run upstream kube-proxy (this binary) on every node and turn wgmesh's service NAT off: the reference run")
	kubeProxyMode := flag.String("kube-proxy-mode", "nftables", "kube-proxy's --proxy-mode with --kube-proxy: nftables or iptables")
	focus := flag.String("focus", DefaultFocus, "ginkgo focus of the services pass; empty: no services pass")
	skipRE := flag.String("skip", DefaultSkip, "ginkgo skip of the services pass")
	netpol := flag.Bool("netpol", true, "install wgmesh with agent.networkPolicy=true and run the upstream Netpol specs as a second pass (off in the reference run)")
	netpolFocus := flag.String("netpol-focus", NetpolFocus, "ginkgo focus of the Netpol pass")
	netpolSkip := flag.String("netpol-skip", NetpolSkip, "ginkgo skip of the Netpol pass")
	e2e := flag.String("e2e-test", os.Getenv("WGMESH_E2E_TEST"), "the e2e.test binary (hack/e2e-test.sh)")
	reportDir := flag.String("report-dir", "", "where the JUnit reports and the e2e logs go (default a new directory under the user cache)")
	nodes := flag.Int("nodes", 3, "nodes (none behind NAT: the API server must reach every kubelet for exec and logs)")
	timeout := flag.Duration("timeout", 3*time.Hour, "the whole run's limit")
	flag.Parse()
	var passes []pass
	if *focus != "" {
		passes = append(passes, pass{"services", *focus, *skipRE})
	}
	if *netpol && *kubeProxy == "" {
		passes = append(passes, pass{"netpol", *netpolFocus, *netpolSkip})
	}
	if err := run(*kubeProxy, *kubeProxyMode, passes, *e2e, *reportDir, *nodes, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func run(kubeProxy, kubeProxyMode string, passes []pass, e2e, reportDir string, nodes int, timeout time.Duration) error {
	ctrllog.SetLogger(logr.Discard())
	if e2e == "" {
		return fmt.Errorf("--e2e-test (or WGMESH_E2E_TEST) is empty: build it with hack/e2e-test.sh")
	}
	if len(passes) == 0 {
		return fmt.Errorf("nothing to run: --focus is empty and no Netpol pass")
	}
	if reportDir == "" {
		cache, _ := os.UserCacheDir()
		reportDir = filepath.Join(cache, "wgmesh", "conformance", time.Now().UTC().Format("20060102-150405"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	mode := "wgmesh's service NAT, no kube-proxy"
	if kubeProxy != "" {
		mode = "REFERENCE: upstream kube-proxy (" + kubeProxyMode + " mode), wgmesh's service NAT off"
	}
	var values []string
	for _, p := range passes {
		if p.name == "netpol" {
			values = append(values, "agent.networkPolicy=true")
			mode += ", wgmesh's NetworkPolicy on"
		}
	}
	fmt.Printf("==> conformance: %d real nodes, %s\n", nodes, mode)
	began := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Nodes: nodes, RealNodes: true, KubeProxy: kubeProxy, KubeProxyMode: kubeProxyMode,
		HelmValues: values, Log: prefixed{}})
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("==> cluster ready in %s\n", time.Since(began).Round(time.Second))
	var errs []error
	for _, p := range passes {
		if err := runPass(ctx, c, p, e2e, filepath.Join(reportDir, p.name), nodes, timeout, mode); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		}
	}
	return errors.Join(errs...)
}

// runPass runs e2e.test once with p's focus and skip, and prints its results.
func runPass(ctx context.Context, c *cluster.Cluster, p pass, e2e, reportDir string, nodes int, timeout time.Duration, mode string) error {
	if err := os.MkdirAll(reportDir, 0o755); err != nil {
		return err
	}
	fmt.Printf("==> %s pass: running e2e.test (report in %s)\n", p.name, reportDir)
	logf, err := os.Create(filepath.Join(reportDir, "e2e.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, e2e,
		"--kubeconfig="+c.Kubeconfig, "--provider=local", "--report-dir="+reportDir,
		"--ginkgo.focus="+p.focus, "--ginkgo.skip="+p.skip,
		"--ginkgo.no-color", "--ginkgo.timeout="+timeout.String(), "--ginkgo.v",
		"--num-nodes="+fmt.Sprint(nodes), "--disable-log-dump")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	began := time.Now()
	runErr := cmd.Run()
	fmt.Printf("==> %s pass: e2e.test finished in %s (%v); log %s\n", p.name, time.Since(began).Round(time.Second), exitText(runErr), logf.Name())
	res, err := readJUnit(reportDir)
	if err != nil {
		return fmt.Errorf("%w (e2e.test: %v; see %s)", err, runErr, logf.Name())
	}
	printResults(res, mode+", "+p.name+" pass")
	if res.failed > 0 || res.passed == 0 {
		return fmt.Errorf("%d failed, %d passed", res.failed, res.passed)
	}
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

type results struct {
	specs                   [][2]string // name, result
	passed, failed, skipped int
}

type junitCase struct {
	Name    string    `xml:"name,attr"`
	Status  string    `xml:"status,attr"`
	Skipped *struct{} `xml:"skipped"`
	Failure *struct{} `xml:"failure"`
	Error   *struct{} `xml:"error"`
}

type junitSuite struct {
	Cases []junitCase `xml:"testcase"`
}

type junitSuites struct {
	Suites []junitSuite `xml:"testsuite"`
}

// readJUnit reads every junit*.xml of dir (e2e.test writes junit_01.xml).
func readJUnit(dir string) (results, error) {
	var r results
	files, _ := filepath.Glob(filepath.Join(dir, "junit*.xml"))
	if len(files) == 0 {
		return r, fmt.Errorf("no JUnit report in %s", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return r, err
		}
		var suites junitSuites
		if err := xml.Unmarshal(b, &suites); err != nil || len(suites.Suites) == 0 {
			var one junitSuite
			if err := xml.Unmarshal(b, &one); err != nil {
				return r, fmt.Errorf("%s: %w", f, err)
			}
			suites.Suites = []junitSuite{one}
		}
		for _, s := range suites.Suites {
			for _, tc := range s.Cases {
				res := "passed"
				switch {
				case tc.Failure != nil || tc.Error != nil || tc.Status == "failed" || tc.Status == "panicked" || tc.Status == "timedout":
					res = "failed"
				case tc.Skipped != nil || tc.Status == "skipped" || tc.Status == "pending":
					res = "skipped"
				}
				// Suite set-up and reports count only when they fail.
				if !strings.HasPrefix(tc.Name, "[It]") && res != "failed" {
					continue
				}
				switch res {
				case "passed":
					r.passed++
				case "failed":
					r.failed++
				default:
					r.skipped++
					continue // thousands of unselected specs: counted, not listed
				}
				r.specs = append(r.specs, [2]string{tc.Name, res})
			}
		}
	}
	sort.Slice(r.specs, func(i, j int) bool { return r.specs[i][0] < r.specs[j][0] })
	return r, nil
}

func printResults(r results, mode string) {
	fmt.Printf("\n| spec | result |\n|---|---|\n")
	for _, s := range r.specs {
		fmt.Printf("| %s | %s |\n", strings.ReplaceAll(s[0], "|", `\|`), s[1])
	}
	fmt.Printf("\n%s: %d passed, %d failed, %d skipped (not selected or skipped by reason)\n", mode, r.passed, r.failed, r.skipped)
}

type prefixed struct{}

func (prefixed) Write(p []byte) (int, error) {
	os.Stdout.Write(append([]byte("  "), p...))
	return len(p), nil
}
