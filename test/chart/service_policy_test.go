package chart

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/wait"
)

// externalIPService is a Service in namespace ns with these externalIPs.
func externalIPService(ns, name string, ips ...string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ExternalIPs: ips,
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
}

// TestServiceExternalIPsPolicy: the chart's policy refuses, at the API server,
// a Service whose new externalIPs lie outside services.externalIPs.allowedCIDRs
// (none by default) or inside the cluster's service or pod CIDRs (always),
// naming the Service, the field and the value; an update that keeps a
// Service's existing externalIPs passes. The control: before the chart is
// installed the same Service, which takes a ClusterIP on every node, is
// accepted.
func TestServiceExternalIPsPolicy(t *testing.T) {
	needAPI(t)
	helmBinary(t)
	ctx := context.Background()
	const tenant = "aaa-tenant"
	ensureNamespace(t, tenant)
	create := func(s *corev1.Service, opts ...client.CreateOption) error {
		err := apiClient.Create(ctx, s, opts...)
		if err == nil && len(opts) == 0 {
			t.Cleanup(func() { _ = apiClient.Delete(context.Background(), s) })
		}
		return err
	}
	// Control, and a Service that predates the policy.
	if err := create(externalIPService(tenant, "capture", "10.96.0.1"), client.DryRunAll); err != nil {
		t.Fatalf("control: without the policy the API server refused an externalIP in the service CIDR: %v", err)
	}
	legacy := externalIPService(tenant, "legacy", "198.18.7.7")
	if err := create(legacy); err != nil {
		t.Fatal(err)
	}
	// waitPolicy waits until the API server applies the policy just
	// installed: a dry run that only it refuses is refused with want.
	waitPolicy := func(t *testing.T, ip, want string) {
		t.Helper()
		wait.For(t, 30*time.Second, fmt.Sprintf("the policy to refuse externalIP %s with %q", ip, want), func() error {
			err := create(externalIPService(tenant, "probe", ip), client.DryRunAll)
			if err != nil && strings.Contains(err.Error(), want) {
				return nil
			}
			return fmt.Errorf("last result: %v", err)
		})
	}

	t.Run("defaults: no externalIPs", func(t *testing.T) {
		warnings.take() // externalIPs are deprecated: our own Services drew warnings, the chart must draw none
		install(t, "svc-defaults", "wgmesh-svc-a", scenarios[0])
		waitPolicy(t, "198.18.0.200", "this cluster allows no externalIPs")
		err := create(externalIPService(tenant, "capture", "10.96.0.1"))
		if err == nil || !strings.Contains(err.Error(), "Service "+tenant+"/capture: spec.externalIPs 10.96.0.1 lies in the cluster's service or pod CIDRs") {
			t.Errorf("an externalIP in the service CIDR: %v", err)
		}
	})

	t.Run("allow-list", func(t *testing.T) {
		warnings.take()
		install(t, "svc-allow", "wgmesh-svc-b", scenario{name: "allow-list", values: `
operator:
  clusterCIDRs: 198.19.0.0/16
agent:
  serviceCIDRs: 198.18.128.0/20
services:
  externalIPs:
    allowedCIDRs: [198.18.0.0/24, 198.18.128.0/20]
`})
		// The defaults' policy may still be loaded for a moment: wait for this
		// one's message on an address only the allow-list refuses.
		waitPolicy(t, "198.18.5.1", "not in the allowed ranges 198.18.0.0/24, 198.18.128.0/20")
		wait.For(t, 30*time.Second, "an allowed externalIP to be accepted", func() error {
			return create(externalIPService(tenant, "probe", "198.18.0.200"), client.DryRunAll)
		})
		for _, tc := range []struct {
			ip, want string
		}{
			{"198.18.128.10", "spec.externalIPs 198.18.128.10 lies in the cluster's service or pod CIDRs 198.18.128.0/20, 198.19.0.0/16"},
			{"198.19.2.5", "spec.externalIPs 198.19.2.5 lies in the cluster's service or pod CIDRs"},
			{"203.0.113.9", "Service " + tenant + "/evil: spec.externalIPs 203.0.113.9 not in the allowed ranges"},
		} {
			err := create(externalIPService(tenant, "evil", "198.18.0.201", tc.ip))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("externalIP %s: %v, want a refusal with %q", tc.ip, err, tc.want)
			}
		}
		if err := create(externalIPService(tenant, "ok", "198.18.0.201")); err != nil {
			t.Errorf("an allowed externalIP: %v", err)
		}
		// The Service from before the policy keeps its externalIP through an
		// update, and cannot add one outside the list.
		cur := &corev1.Service{}
		if err := apiClient.Get(ctx, client.ObjectKeyFromObject(legacy), cur); err != nil {
			t.Fatal(err)
		}
		cur.Labels = map[string]string{"touched": "1"}
		if err := apiClient.Update(ctx, cur); err != nil {
			t.Errorf("an update keeping existing externalIPs was refused: %v", err)
		}
		cur.Spec.ExternalIPs = append(cur.Spec.ExternalIPs, "198.18.9.9")
		if err := apiClient.Update(ctx, cur); err == nil || !strings.Contains(err.Error(), "spec.externalIPs 198.18.9.9 not in the allowed ranges") {
			t.Errorf("an update adding an externalIP outside the list: %v", err)
		}
	})
}
