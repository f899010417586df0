package noderuntime_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// cniPlugins returns the directory with the standard plugins that `make cni-plugins` builds.
func cniPlugins(t *testing.T) string {
	dir := filepath.Join(os.Getenv("WGMESH_BIN_DIR"), "cni")
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("CNI plugin %s missing in %s (run make cni-plugins; WGMESH_BIN_DIR=%q): %v", p, dir, os.Getenv("WGMESH_BIN_DIR"), err)
		}
	}
	return dir
}

func copyFile(t *testing.T, src, dst string) {
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

// handWrittenConflist is a plain bridge + host-local configuration, written by the test in
// place of the agent so that the runtime is tested on its own.
const handWrittenConflist = `{
  "cniVersion": "1.0.0",
  "name": "runtime-test",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.19.42.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`

func TestRuntimeRunsPodsThroughCNI(t *testing.T) {
	netns.SkipUnlessControlPlane(t)
	plugins := cniPlugins(t)
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 1, NoAgents: true, NoOperator: true, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	node := c.Nodes[0]

	// Without a CNI configuration the pod stays Pending with an Event saying why.
	if _, err := c.CreatePod(ctx, node, "early", 8080); err != nil {
		t.Fatal(err)
	}
	// The Event and the Pod status are two writes: wait for both.
	wait.For(t, 60*time.Second, "a FailedCreatePodSandBox event and status for pod early", func() error {
		evs := &corev1.EventList{}
		if err := c.Client.List(ctx, evs, client.InNamespace("default")); err != nil {
			return err
		}
		found := false
		for _, e := range evs.Items {
			found = found || (e.InvolvedObject.Name == "early" && e.Reason == "FailedCreatePodSandBox" && strings.Contains(e.Message, "no CNI configuration"))
		}
		if !found {
			return fmt.Errorf("no FailedCreatePodSandBox Event naming the missing CNI configuration")
		}
		pod := &corev1.Pod{}
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "early"}, pod); err != nil {
			return err
		}
		if pod.Status.Phase != corev1.PodPending || pod.Status.Reason != "FailedCreatePodSandBox" {
			return fmt.Errorf("pod early without CNI config: phase %s reason %q, want Pending FailedCreatePodSandBox", pod.Status.Phase, pod.Status.Reason)
		}
		return nil
	})

	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		copyFile(t, filepath.Join(plugins, p), filepath.Join(node.HostPath("/opt/cni/bin"), p))
	}
	if err := os.WriteFile(filepath.Join(node.HostPath("/etc/cni/net.d"), "10-test.conflist"), []byte(handWrittenConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	early, err := c.WaitPodReady(ctx, "default", "early", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, subnet, _ := net.ParseCIDR("198.19.42.0/24")
	if !subnet.Contains(net.ParseIP(early.Status.PodIP)) {
		t.Fatalf("pod early IP %s not in the configured range %s", early.Status.PodIP, subnet)
	}
	if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: "second", Node: node, Ports: []int32{8080, 9000}, Labels: map[string]string{"app": "rt"}}); err != nil {
		t.Fatal(err)
	}
	second, err := c.WaitPodReady(ctx, "default", "second", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The node reaches both pods over the bridge; the workload answers with the pod name.
	for _, p := range []*corev1.Pod{early, second} {
		for _, proto := range []string{"tcp", "udp", "http"} {
			got, err := node.Dial(ctx, proto, net.JoinHostPort(p.Status.PodIP, "8080"), "hostname")
			if err != nil || got != p.Name {
				t.Fatalf("%s to pod %s from its node: %q, %v", proto, p.Name, got, err)
			}
		}
	}
	// Pod to pod through the workload's /dial: the callee sees the caller's pod IP.
	got, err := c.PodDial(ctx, early, "http", second.Status.PodIP, 9000, "clientip")
	if err != nil || !strings.HasPrefix(got, early.Status.PodIP+":") {
		t.Fatalf("pod early -> pod second clientip = %q, %v; want %s:port", got, err, early.Status.PodIP)
	}

	// The real EndpointSlice controller sees the Ready pod.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "rt"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "rt"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 60*time.Second, "an EndpointSlice of service rt with pod second's address", wait.True(func() bool {
		sl := &discoveryv1.EndpointSliceList{}
		c.Client.List(ctx, sl, client.InNamespace("default"), client.MatchingLabels{discoveryv1.LabelServiceName: "rt"})
		for _, s := range sl.Items {
			for _, e := range s.Endpoints {
				if len(e.Addresses) > 0 && e.Addresses[0] == second.Status.PodIP && e.Conditions.Ready != nil && *e.Conditions.Ready {
					return true
				}
			}
		}
		return false
	}))

	// Deletion: CNI DEL frees the address, the namespace goes, the pod object goes.
	ipFile := filepath.Join(node.HostPath("/var/lib/cni"), "networks", "runtime-test", early.Status.PodIP)
	if _, err := os.Stat(ipFile); err != nil {
		t.Fatalf("host-local reservation %s missing while the pod runs: %v", ipFile, err)
	}
	nsFile := filepath.Join(node.HostPath("/run/netns"), "wgm-pod-"+string(early.UID))
	if _, err := os.Stat(nsFile); err != nil {
		t.Fatalf("sandbox namespace %s missing while the pod runs: %v", nsFile, err)
	}
	if err := c.DeletePod(ctx, "default", "early", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ipFile); !os.IsNotExist(err) {
		t.Fatalf("address %s still reserved after the pod was deleted: %v", early.Status.PodIP, err)
	}
	if _, err := os.Stat(nsFile); !os.IsNotExist(err) {
		t.Fatalf("sandbox namespace %s still there after the pod was deleted: %v", nsFile, err)
	}

	// A restarted runtime keeps the running pod's sandbox and serves it again.
	node.StopRuntime()
	if err := node.StartRuntime(ctx); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 60*time.Second, "pod second to answer after a runtime restart", wait.True(func() bool {
		got, err := node.Dial(ctx, "http", net.JoinHostPort(second.Status.PodIP, "8080"), "hostname")
		return err == nil && got == "second"
	}))
	again, err := c.WaitPodReady(ctx, "default", "second", 10*time.Second)
	if err != nil || again.Status.PodIP != second.Status.PodIP {
		t.Fatalf("pod second after a runtime restart: IP %s (was %s), %v", again.Status.PodIP, second.Status.PodIP, err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
