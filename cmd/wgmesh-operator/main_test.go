package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/wait"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunRefusesBadConfig(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--cluster-cidrs=10.244.0.0/16,10.244.128.0/17"}, "wgmesh-operator: --cluster-cidrs: 10.244.0.0/16 and 10.244.128.0/17 overlap"},
		{[]string{"--cluster-cidrs=10.244.0.0/16,10.245.0.0/16"}, "--cluster-cidrs: 10.244.0.0/16 and 10.245.0.0/16 are both IPv4"},
		{[]string{"--node-cidr-mask-size-ipv4=8"}, "--node-cidr-mask-size-ipv4: 8 is not longer than the prefix of --cluster-cidrs 10.244.0.0/16"},
		{[]string{"--cluster-cidrs=10.244.0.0/16,2001:db8::/48", "--node-cidr-mask-size-ipv6=200"}, "--node-cidr-mask-size-ipv6: 200 is out of range"},
		{[]string{"--cluster-cidrs=pods"}, `--cluster-cidrs: "pods" is not a CIDR`},
		{[]string{"--node-cidr-mask-size-ipv4=big"}, `invalid value "big" for flag -node-cidr-mask-size-ipv4`},
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"extra"}, `unexpected arguments ["extra"]`},
		{[]string{"--regions-not-one-network=us-east-1,,eu west"}, `--regions-not-one-network="us-east-1,,eu west": region "" is not a location name`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stderr syncBuffer
			if code := run(context.Background(), tt.args, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("stderr %q does not contain %q", stderr.String(), tt.want)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRunServesProbesAndMetrics starts the real command against a real API
// server and checks /healthz, /readyz and the wgmesh_operator_* metrics.
func TestRunServesProbesAndMetrics(t *testing.T) {
	env, _ := apiserver.StartForTest(t)
	kubeconfig := adminKubeconfig(t, env)
	metricsAddr, healthAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig=" + kubeconfig, "--cluster-cidrs=198.19.0.0/16", "--leader-election-namespace=default",
			"--metrics-bind-address=" + metricsAddr, "--health-probe-bind-address=" + healthAddr}, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("exit code %d; log:\n%s", code, stderr.String())
			}
		case <-time.After(60 * time.Second):
			t.Errorf("operator did not stop")
		}
	})

	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if err := wait.Poll(context.Background(), 60*time.Second, func() error {
		for _, u := range []string{"http://" + healthAddr + "/healthz", "http://" + healthAddr + "/readyz"} {
			if code, body := get(u); code != http.StatusOK {
				return fmt.Errorf("%s: %d %s", u, code, body)
			}
		}
		code, body := get("http://" + metricsAddr + "/metrics")
		if code != http.StatusOK || !strings.Contains(body, `wgmesh_operator_cidr_pool_size{pool="198.19.0.0/16"} 256`) ||
			!strings.Contains(body, "wgmesh_operator_meshpeers_managed 0") {
			return fmt.Errorf("metrics: %d, no pool/meshpeer gauges yet", code)
		}
		return nil
	}); err != nil {
		t.Fatalf("waiting for the operator's health, readiness and metrics: %v\nlog:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"starting"`) {
		t.Errorf("no structured start log line; log:\n%s", stderr.String())
	}
}

// TestRunRefusesDisagreeingClusterCIDRs: Nodes whose podCIDRs lie outside
// --cluster-cidrs (kube-controller-manager allocated from another range) stop
// the operator at start with a message naming the node, the CIDR and the flag.
func TestRunRefusesDisagreeingClusterCIDRs(t *testing.T) {
	env, cfg := apiserver.StartForTest(t)
	kubeconfig := adminKubeconfig(t, env)
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wgm-kcm-1"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.99.0/24", PodCIDRs: []string{"198.18.99.0/24"}}}
	if err := c.Create(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr syncBuffer
	code := run(ctx, []string{"--kubeconfig=" + kubeconfig, "--cluster-cidrs=198.19.0.0/16", "--leader-elect=false",
		"--metrics-bind-address=0", "--health-probe-bind-address=0"}, &stderr)
	want := "--cluster-cidrs 198.19.0.0/16 disagrees with the cluster: Node wgm-kcm-1 spec.podCIDRs 198.18.99.0/24 lies outside it"
	if code != 2 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("exit code %d, stderr %q; want 2 and %q", code, stderr.String(), want)
	}
}

// adminKubeconfig writes a kubeconfig of a system:masters user of env and
// returns its path.
func adminKubeconfig(t *testing.T, env *envtest.Environment) string {
	t.Helper()
	user, err := env.AddUser(envtest.User{Name: "wgmesh-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
