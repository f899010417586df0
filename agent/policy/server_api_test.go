package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestCNIRequestAgainstAPIServer: node n1's controller on a real API
// server, serving its socket. A pod bound to n1 with no address in its
// status yet is denied both ways; the plugin's request programs it before
// the answer (its allowed client gets in, others not); a static pod is
// found by its mirror Pod's annotation; a request with a UID the API
// server does not have, or for a pod of another node, is refused; the kubelet's later status changes nothing; the pod deleted,
// its address is denied again.
func TestCNIRequestAgainstAPIServer(t *testing.T) {
	_, cfg := apiserver.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := &api{t: t, ctx: ctx, cs: kubernetes.NewForConfigOrDie(cfg)}
	a.node("n1", "198.19.1.0/24", "198.18.0.11")
	a.node("n2", "198.19.2.0/24", "198.18.0.12")
	a.namespace("x", nil)
	a.pod("x", "client", "n2", "198.19.2.10", map[string]string{"app": "client"})
	a.pod("x", "other", "n2", "198.19.2.11", nil)
	a.policy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "allow-client"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}}}})
	socket := filepath.Join(t.TempDir(), "policy.sock")
	n1 := startNode(ctx, t, cfg, "n1", func(o *Options) { o.Socket = socket })
	wait.For(t, 30*time.Second, "n1's first sync", n1.ctl.Synced)

	trace := func(src, dst string) string {
		tr := n1.fake.Tracer(nft.IPv4, map[netip.Addr]bool{netip.MustParseAddr("198.18.0.11"): true}, func(netip.Addr) string { return "wgmesh-br0" })
		return nft.Outcomes(tr.Trace(nft.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: nft.TCP, DPort: 8080}))
	}
	ask := func(name, uid, ip string) error {
		ctx, cancel := context.WithTimeout(ctx, guard.DefaultPolicyTimeout)
		defer cancel()
		return guard.AskPolicy(ctx, socket, guard.PolicyRequest{Namespace: "x", Name: name, UID: uid, IPs: []netip.Addr{netip.MustParseAddr(ip)}})
	}

	// As the scheduler binds it: no status yet.
	server, err := a.cs.CoreV1().Pods("x").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "server", Labels: map[string]string{"app": "server"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "agnhost"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := trace("198.19.2.10", "198.19.1.10"); got != "drop" {
		t.Errorf("before ADD, client -> the new pod's address: %s, want drop", got)
	}
	if got := trace("198.19.1.10", "198.19.2.10"); got != "drop" {
		t.Errorf("before ADD, the new pod's address -> client: %s, want drop", got)
	}
	start := time.Now()
	if err := ask("server", string(server.UID), "198.19.1.10"); err != nil {
		t.Fatalf("the CNI request: %v", err)
	}
	t.Logf("programmed %v after the request", time.Since(start).Round(time.Millisecond))
	for _, c := range []struct{ src, dst, want string }{
		{"198.19.2.10", "198.19.1.10", "accept"},
		{"198.19.2.11", "198.19.1.10", "drop"},
		{"198.19.1.10", "198.19.2.11", "accept"},
	} {
		if got := trace(c.src, c.dst); got != c.want {
			t.Errorf("once answered, %s -> %s: %s, want %s", c.src, c.dst, got, c.want)
		}
	}

	// A static pod: the runtime passes the kubelet's UID, which the mirror
	// Pod carries in an annotation (its own UID is another).
	if _, err := a.cs.CoreV1().Pods("x").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "static-n1",
		Labels: map[string]string{"app": "server"}, Annotations: map[string]string{mirrorAnnotation: "0b5e8c3a2f1d4e6a9c7b"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "agnhost"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ask("static-n1", "0b5e8c3a2f1d4e6a9c7b", "198.19.1.20"); err != nil {
		t.Errorf("the CNI request for a static pod: %v", err)
	}
	if got := trace("198.19.2.10", "198.19.1.20"); got != "accept" {
		t.Errorf("client -> the static pod: %s, want accept", got)
	}

	// Refusals: a UID the API server does not have (read from it: the
	// cache's pod has another), a pod bound elsewhere.
	if _, err := a.cs.CoreV1().Pods("x").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "elsewhere"},
		Spec: corev1.PodSpec{NodeName: "n2", Containers: []corev1.Container{{Name: "c", Image: "agnhost"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, uid, want string }{
		{"server", "4b1d2c4e-0000-4000-8000-000000000000", "no pod x/server with uid"},
		{"elsewhere", "", `bound to node "n2"`},
	} {
		if err := ask(c.name, c.uid, "198.19.1.11"); err == nil || errors.Is(err, guard.ErrPolicyUnavailable) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("request for %s uid %q: %v, want a refusal naming %q", c.name, c.uid, err, c.want)
		}
	}
	if got := trace("198.19.1.11", "198.19.2.10"); got != "drop" {
		t.Errorf("the refused requests' address -> client: %s, want drop", got)
	}

	// The kubelet reports the address: nothing changes.
	server.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.19.1.10", PodIPs: []corev1.PodIP{{IP: "198.19.1.10"}}}
	if _, err := a.cs.CoreV1().Pods("x").UpdateStatus(ctx, server, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Deleted: denied again.
	if err := a.cs.CoreV1().Pods("x").Delete(ctx, "server", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the deleted pod's address denied", func() error {
		if got := trace("198.19.2.10", "198.19.1.10"); got != "drop" {
			return errors.New(got)
		}
		return nil
	})
	// A node whose socket cannot be made is not ready, and says why.
	n2 := startNode(ctx, t, cfg, "n2", func(o *Options) { o.Socket = "/dev/null/policy.sock" })
	wait.For(t, 30*time.Second, "n2 not ready for its socket", func() error {
		if err := n2.ctl.Synced(); err == nil || !strings.Contains(err.Error(), "the CNI hook is not served") {
			return fmt.Errorf("Synced: %v", err)
		}
		return nil
	})

	if got := metricValue(t, n1.reg, "wgmesh_policy_cni_requests_total", map[string]string{"result": ResultProgrammed}); got != 2 {
		t.Errorf("wgmesh_policy_cni_requests_total{result=programmed} %v, want 2", got)
	}
	if got := metricValue(t, n1.reg, "wgmesh_policy_cni_requests_total", map[string]string{"result": ResultRefused}); got != 2 {
		t.Errorf("wgmesh_policy_cni_requests_total{result=refused} %v, want 2", got)
	}
}
