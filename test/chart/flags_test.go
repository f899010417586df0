package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/skip"
)

// binDir is where make build put the binaries; without it the flag tests skip.
func binDir(t testing.TB) string {
	t.Helper()
	d := os.Getenv("WGMESH_BIN_DIR")
	if d == "" {
		skip.Unless(t, "WGMESH_BIN_DIR is unset: the flag tests run the built binaries (make test sets it after make build)")
	}
	return d
}

// runBinary runs bin/<name> args... and returns its exit code and output.
func runBinary(t testing.TB, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir(t), name), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("running %s: %v", name, err)
	}
	return 0, out.String()
}

var flagLine = regexp.MustCompile(`^  -([a-z0-9-]+)`)
var defaultRE = regexp.MustCompile(`\(default (.*)\)$`)

// flagDefaults parses the Go flag package's usage text: flag name -> the
// default it prints ("" when it prints none, which is the zero value).
func flagDefaults(usage string) map[string]string {
	out := map[string]string{}
	var cur string
	for _, line := range strings.Split(usage, "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
			out[cur] = ""
			continue
		}
		if cur == "" {
			continue
		}
		if m := defaultRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			v := m[1]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			out[cur] = v
		}
	}
	return out
}

// workloads are the rendered objects that run a wgmesh binary.
var workloads = []struct{ kind, suffix string }{
	{"Deployment", "-operator"}, {"DaemonSet", "-agent"}, {"DaemonSet", "-wireguard"}, {"Job", "-uninstall"},
}

// TestArgsAreFlagsTheBinariesAccept runs each rendered container's binary with
// the rendered arguments plus --help: the flag package parses every argument
// (name and type) before it reaches --help, so an unknown flag or a value of
// the wrong type fails here, in the real binary.
func TestArgsAreFlagsTheBinariesAccept(t *testing.T) {
	binDir(t)
	for _, s := range scenarios {
		objs := render(t, "wgmesh", "kube-system", s)
		for _, kind := range workloads {
			obj := lookup(objs, kind.kind, kind.suffix)
			if obj == nil {
				continue // the wireguard DaemonSet: userspace mode only
			}
			for _, c := range containers(t, obj) {
				if len(c.command) != 1 {
					t.Errorf("%s/%s: command %v, want one binary name", c.pod, c.name, c.command)
					continue
				}
				code, out := runBinary(t, c.command[0], append(slices.Clone(c.args), "--help")...)
				if code != 0 || strings.Contains(out, "flag provided but not defined") || strings.Contains(out, "invalid value") {
					t.Errorf("scenario %s: %s/%s: `%s %s --help` exited %d:\n%s", s.name, c.pod, c.name, c.command[0], strings.Join(c.args, " "), code, out)
				}
			}
		}
	}
}

// valueOfFlag names the chart value behind each flag of each command (a
// binary, or a binary and its subcommand). Flags missing here and not in
// notAValue make the test fail, so a new flag cannot go unnoticed.
var valueOfFlag = map[string]map[string]string{
	"wgmesh-operator uninstall": {
		"timeout": "uninstall.timeout",
	},
	"wgmesh-operator": {
		"cluster-cidrs":             "operator.clusterCIDRs",
		"node-cidr-mask-size-ipv4":  "operator.nodeCIDRMaskSizeIPv4",
		"node-cidr-mask-size-ipv6":  "operator.nodeCIDRMaskSizeIPv6",
		"leader-elect":              "operator.leaderElect",
		"leader-election-namespace": "operator.leaderElectionNamespace",
		"metrics-bind-address":      "operator.metricsBindAddress",
		"health-probe-bind-address": "operator.healthProbeBindAddress",
		"location-from-region":      "operator.locationFromRegion",
		"regions-not-one-network":   "operator.regionsNotOneNetwork",
	},
	"wgmesh-agent": {
		"wireguard-mode":              "agent.wireguardMode",
		"listen-port":                 "agent.listenPort",
		"mtu":                         "agent.mtu",
		"endpoint":                    "agent.endpoint",
		"endpoint-address-type":       "agent.endpointAddressType",
		"metrics-bind-address":        "agent.metricsBindAddress",
		"per-peer-metrics":            "agent.perPeerMetrics",
		"per-peer-metrics-limit":      "agent.perPeerMetricsLimit",
		"health-probe-bind-address":   "agent.healthProbeBindAddress",
		"cluster-cidrs":               "agent.clusterCIDRs (empty: operator.clusterCIDRs)",
		"service-cidrs":               "agent.serviceCIDRs",
		"cni-bin-source":              "agent.cniBinSource",
		"cni-conf-dir":                "agent.cniConfDir",
		"cni-bin-dir":                 "agent.cniBinDir",
		"portmap-backend":             "agent.portMapBackend",
		"state-dir":                   "agent.stateDir",
		"cleanup-on-exit":             "agent.cleanupOnExit",
		"userspace-wireguard-sidecar": "agent.wireguardMode (userspace: the chart's wireguard DaemonSet)",
		"service-proxy":               "agent.serviceProxy",
		"kube-proxy-healthz":          "agent.kubeProxyHealthz",
		"nodeport-addresses":          "agent.nodePortAddresses",
		"service-sync-period":         "agent.serviceSyncPeriod",
		"network-policy":              "agent.networkPolicy",
		"network-policy-socket":       "agent.networkPolicySocket",
		"probe-interval":              "agent.probeInterval",
		"probe-timeout":               "agent.probeTimeout",
		"status-min-interval":         "agent.statusMinInterval",
		"status-membership-delay":     "agent.statusMembershipDelay",
		"key-rotation-period":         "agent.keyRotationPeriod",
	},
}

// notAValue are flags the chart deliberately leaves out or sets itself:
// in-cluster config, $NODE_NAME and $POD_NAMESPACE from the downward API,
// the chart's own object names (the agent's --daemonset-name, the uninstall
// hook's --namespace and --daemonset), and logging (extraArgs).
func notAValue(flag string) bool {
	switch flag {
	case "kubeconfig", "node-name", "namespace", "daemonset-name", "daemonset":
		return true
	}
	return strings.HasPrefix(flag, "zap-")
}

// TestChartCoversFlagsWithTheirDefaults: every flag of each binary is a chart
// value, and the default values render each flag with the binary's own
// default (zero defaults render as 0, false or are left out).
func TestChartCoversFlagsWithTheirDefaults(t *testing.T) {
	binDir(t)
	objs := render(t, "wgmesh", "kube-system", scenarios[0])
	rendered := map[string]map[string]string{}
	for _, kind := range workloads {
		obj := lookup(objs, kind.kind, kind.suffix)
		if obj == nil {
			continue
		}
		for _, c := range containers(t, obj) {
			if len(c.command) == 1 {
				rendered[commandLine(c)] = flagArgs(c.args)
			}
		}
	}
	for bin, values := range valueOfFlag {
		argv := strings.Fields(bin)
		code, usage := runBinary(t, argv[0], append(argv[1:], "--help")...)
		if code != 0 {
			t.Fatalf("%s --help exited %d:\n%s", bin, code, usage)
		}
		if _, ok := rendered[bin]; !ok {
			t.Errorf("no rendered container runs %s", bin)
		}
		defaults := flagDefaults(usage)
		if len(defaults) == 0 {
			t.Fatalf("%s --help: no flags parsed from:\n%s", bin, usage)
		}
		for flag, def := range defaults {
			if notAValue(flag) {
				continue
			}
			value, ok := values[flag]
			if !ok {
				t.Errorf("%s --%s (default %q) has no chart value: add it to values.yaml, the templates and valueOfFlag", bin, flag, def)
				continue
			}
			got, ok := rendered[bin][flag]
			if !ok {
				got = "" // left out: the binary's default applies
			}
			if got != def && !(got == "0" && def == "") && !(got == "false" && def == "") && !sameDuration(got, def) {
				t.Errorf("%s --%s: chart value %s renders %q, the binary's default is %q", bin, flag, value, got, def)
			}
		}
		for flag := range values {
			if _, ok := defaults[flag]; !ok {
				t.Errorf("%s has no flag --%s any more, but the chart maps %s to it", bin, flag, values[flag])
			}
		}
	}
}

// commandLine is the binary a container runs, with its subcommand if any
// ("wgmesh-operator uninstall").
func commandLine(c container) string {
	if len(c.args) > 0 && !strings.HasPrefix(c.args[0], "-") {
		return c.command[0] + " " + c.args[0]
	}
	return c.command[0]
}

// sameDuration: "2m" in values.yaml is the flag package's "2m0s".
func sameDuration(a, b string) bool {
	da, errA := time.ParseDuration(a)
	db, errB := time.ParseDuration(b)
	return errA == nil && errB == nil && da == db
}
