// Package chart tests the Helm chart in charts/wgmesh: it lints, renders for
// the documented configurations, is accepted by a real kube-apiserver, grants
// the permissions the binaries use, and passes only flags the binaries accept.
package chart

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/wgmesh/wgmesh/test/repo"
	"github.com/wgmesh/wgmesh/test/skip"
)

// scenario is one set of values the chart must render and install with.
type scenario struct {
	name   string
	values string // YAML given with -f
}

// scenarios are the configurations users are told about: the defaults,
// userspace WireGuard (with its defaults, and updated OnDelete) and
// dual-stack. Addresses come from the ranges tests may use.
var scenarios = []scenario{
	{name: "defaults"},
	{name: "userspace", values: `
agent:
  wireguardMode: userspace
`},
	{name: "userspace-ondelete", values: `
imagePullSecrets: [{name: registry}]
agent:
  wireguardMode: userspace
  nodeSelector:
    kubernetes.io/os: linux
    wgmesh.io/no-wireguard-module: "true"
  userspace:
    updateStrategy:
      type: OnDelete
    podAnnotations:
      example.com/owner: network-team
`},
	{name: "dualstack", values: `
kubernetesServiceHost: 198.18.0.1
kubernetesServicePort: "6443"
operator:
  clusterCIDRs: "198.19.0.0/16,2001:db8:100::/56"
  nodeCIDRMaskSizeIPv6: 64
  metricsBindAddress: "0"
agent:
  wireguardMode: kernel
  mtu: 1420
  endpoint: "[2001:db8::11]:51820"
  endpointAddressType: ExternalIP
  serviceCIDRs: "198.18.128.0/20,2001:db8:200::/112"
  cleanupOnExit: true
  networkPolicy: true
  extraArgs: ["--zap-log-level=debug"]
`},
}

func chartDir(t testing.TB) string { return filepath.Join(repo.Root(t), "charts", "wgmesh") }

// helmBinary finds helm: $WGMESH_HELM (make test sets it), else the cached
// build of hack/helm.sh; without either the test is skipped.
func helmBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("WGMESH_HELM"); p != "" {
		return p
	}
	out, err := exec.Command(filepath.Join(repo.Root(t), "hack", "helm.sh"), "--path").Output()
	if err == nil {
		p := strings.TrimSpace(string(out))
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	skip.Unless(t, "helm not found: set WGMESH_HELM or run hack/helm.sh (make test does both)")
	return ""
}

// runHelm runs helm and returns its stdout, or an error carrying its stderr.
func runHelm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

func valuesFile(t testing.TB, s scenario) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), s.name+".yaml")
	if err := os.WriteFile(p, []byte(s.values), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// render runs helm template for a scenario and decodes every object.
func render(t testing.TB, release, namespace string, s scenario, extra ...string) []*unstructured.Unstructured {
	t.Helper()
	args := append([]string{"template", release, chartDir(t), "--namespace", namespace, "-f", valuesFile(t, s)}, extra...)
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("scenario %s: %v", s.name, err)
	}
	objs, err := decode(out)
	if err != nil {
		t.Fatalf("scenario %s: decoding helm template output: %v\n%s", s.name, err, out)
	}
	return objs
}

func decode(manifests string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

func find(t testing.TB, objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	o := lookup(objs, kind, suffix)
	if o == nil {
		t.Fatalf("no %s named *%s among the rendered objects", kind, suffix)
	}
	return o
}

// lookup is find for objects that may be absent: nil then.
func lookup(objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && strings.HasSuffix(o.GetName(), suffix) {
			return o
		}
	}
	return nil
}

// podSpec is the pod template's spec of a DaemonSet, Deployment or Job.
func podSpec(obj *unstructured.Unstructured) map[string]any {
	spec, _, _ := unstructured.NestedMap(obj.Object, "spec", "template", "spec")
	return spec
}

// container is the part of a rendered container the tests look at.
type container struct {
	name, pod       string
	command, args   []string
	init            bool
	mounts          map[string]string // volume name -> mount path
	hasNodeNameEnv  bool
	env             map[string]string // name -> value, or the downward API's fieldPath
	readiness, live string            // probe paths
	startup         bool              // has a startup probe
	privileged      bool
	capAdd, capDrop []string
}

func containers(t testing.TB, obj *unstructured.Unstructured) []container {
	t.Helper()
	var out []container
	for _, field := range []string{"initContainers", "containers"} {
		list, _, err := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", field)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range list {
			m := raw.(map[string]any)
			c := container{pod: obj.GetName(), init: field == "initContainers", mounts: map[string]string{}}
			c.name, _, _ = unstructured.NestedString(m, "name")
			c.command, _, _ = unstructured.NestedStringSlice(m, "command")
			c.args, _, _ = unstructured.NestedStringSlice(m, "args")
			c.readiness, _, _ = unstructured.NestedString(m, "readinessProbe", "httpGet", "path")
			_, c.startup, _ = unstructured.NestedMap(m, "startupProbe")
			c.privileged, _, _ = unstructured.NestedBool(m, "securityContext", "privileged")
			c.capAdd, _, _ = unstructured.NestedStringSlice(m, "securityContext", "capabilities", "add")
			c.capDrop, _, _ = unstructured.NestedStringSlice(m, "securityContext", "capabilities", "drop")
			c.live, _, _ = unstructured.NestedString(m, "livenessProbe", "httpGet", "path")
			mounts, _, _ := unstructured.NestedSlice(m, "volumeMounts")
			for _, vm := range mounts {
				vm := vm.(map[string]any)
				c.mounts[vm["name"].(string)] = vm["mountPath"].(string)
			}
			env, _, _ := unstructured.NestedSlice(m, "env")
			c.env = map[string]string{}
			for _, e := range env {
				e := e.(map[string]any)
				p, _, _ := unstructured.NestedString(e, "valueFrom", "fieldRef", "fieldPath")
				if e["name"] == "NODE_NAME" && p == "spec.nodeName" {
					c.hasNodeNameEnv = true
				}
				v, _ := e["value"].(string)
				c.env[e["name"].(string)] = v + p
			}
			out = append(out, c)
		}
	}
	return out
}

// flagArgs maps --name=value args to name -> value.
func flagArgs(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		out[name] = value
	}
	return out
}
