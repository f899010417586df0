package chart

import (
	"strings"
	"testing"
)

// The chart states the oldest Kubernetes it works on (Chart.yaml kubeVersion):
// the MeshPeer CRD's CEL IP and CIDR rules are refused in new CRDs before
// 1.31. helm refuses to install it on anything older, with a message saying so.
func TestKubeVersion(t *testing.T) {
	for version, ok := range map[string]bool{
		"v1.30.14":        false,
		"v1.31.0":         true,
		"v1.31.2-eks-123": true,
		"v1.37.2":         true,
	} {
		_, err := runHelm(t, "template", "x", chartDir(t), "--kube-version", version)
		switch {
		case ok && err != nil:
			t.Errorf("Kubernetes %s: refused, want rendered: %v", version, err)
		case !ok && err == nil:
			t.Errorf("Kubernetes %s: rendered, want refused by the chart's kubeVersion", version)
		case !ok && !strings.Contains(err.Error(), "kubeVersion"):
			t.Errorf("Kubernetes %s: refused without naming kubeVersion: %v", version, err)
		}
	}
}
