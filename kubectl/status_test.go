package kubectl

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func TestSummarize(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	hs := metav1.NewTime(now.Add(-42 * time.Second))
	nodes := []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.0.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "c"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "d", Annotations: map[string]string{wgmeshv1.AnnotationPublicKey: "k"}},
			Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.3.0/24"}}},
	}
	peers := []wgmeshv1.MeshPeer{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "b"},
			Spec:       wgmeshv1.MeshPeerSpec{NodeName: "b", Endpoint: "198.18.0.12:51820", AllowedIPs: []wgmeshv1.CIDR{"10.244.1.0/24"}},
			Status: wgmeshv1.MeshPeerStatus{Connected: "1/2", LatestHandshake: &hs, Conditions: []metav1.Condition{
				{Type: wgmeshv1.ConditionReady, Status: metav1.ConditionTrue},
				{Type: wgmeshv1.ConditionKeyConflict, Status: metav1.ConditionTrue, Message: "same key as laptop"},
			}},
		},
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: wgmeshv1.MeshPeerSpec{NodeName: "a"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "laptop"}, Spec: wgmeshv1.MeshPeerSpec{AllowedIPs: []wgmeshv1.CIDR{"198.18.9.1/32"}},
			Status: wgmeshv1.MeshPeerStatus{Conditions: []metav1.Condition{
				{Type: wgmeshv1.ConditionKeyConflict, Status: metav1.ConditionFalse},
			}}},
	}
	st := summarize(nodes, peers, now)

	if got := []string{st.Peers[0].Name, st.Peers[1].Name, st.Peers[2].Name}; strings.Join(got, ",") != "a,b,laptop" {
		t.Fatalf("peers not sorted by name: %v", got)
	}
	b := st.Peers[1]
	if b.Ready != "True" || b.Connected != "1/2" || b.Handshake != "42s ago" || b.Problems != "KeyConflict: same key as laptop" {
		t.Errorf("row for b = %+v", b)
	}
	a := st.Peers[0]
	if a.Ready != "Unknown" || a.Endpoint != "-" || a.AllowedIPs != "-" || a.Problems != "-" {
		t.Errorf("row for a = %+v", a)
	}
	if l := st.Peers[2]; l.Node != "(external)" || l.Problems != "-" {
		t.Errorf("a False problem condition must not be shown: %+v", l)
	}
	if len(st.OutNodes) != 2 || st.OutNodes[0].Name != "c" || st.OutNodes[1].Name != "d" {
		t.Fatalf("out-of-mesh nodes = %+v, want c and d", st.OutNodes)
	}
	if !strings.Contains(st.OutNodes[0].Reason, "no public key") || !strings.Contains(st.OutNodes[0].Reason, "no pod CIDR") {
		t.Errorf("reason for c = %q", st.OutNodes[0].Reason)
	}
	if !strings.Contains(st.OutNodes[1].Reason, "waiting for the operator") {
		t.Errorf("reason for d = %q", st.OutNodes[1].Reason)
	}

	var out bytes.Buffer
	if err := writeStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PEER", "198.18.0.12:51820", "Nodes not in the mesh:", "KeyConflict"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
