package v1alpha1_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func TestParseCandidatesAnnotation(t *testing.T) {
	for _, tc := range []struct {
		in, err string
		n       int
	}{
		{in: "", n: 0},
		{in: "private=198.18.10.5:51820", n: 1},
		{in: "private=198.18.10.5:51820,public=198.18.100.5:51820,public=[2001:db8::5]:51820", n: 3},
		{in: "private=198.18.10.5:51820,private=198.18.10.5:51820", n: 1},
		{in: "observed=198.18.100.5:40000", err: "kind private or public"},
		{in: "public=gw.example.org:51820", err: "is not an IP address"},
		{in: "198.18.10.5:51820", err: "kind=host:port"},
		{in: "private=198.18.10.5", err: "no port"},
		{in: "private=198.18.10.5:51820,", err: "entry \"\""},
		{in: strings.Repeat("private=198.18.10.5:51820,", 8) + "private=198.18.10.6:51820", err: "9 entries"},
	} {
		cs, err := wgv1.ParseCandidatesAnnotation(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: got %v, want an error with %q", tc.in, err, tc.err)
		case tc.err == "" && len(cs) != tc.n:
			t.Errorf("%q: %d candidates, want %d", tc.in, len(cs), tc.n)
		case tc.err == "" && wgv1.FormatCandidatesAnnotation(cs) != tc.in && tc.n > 1 && !strings.Contains(tc.in, "private=198.18.10.5:51820,private"):
			t.Errorf("%q formats back as %q", tc.in, wgv1.FormatCandidatesAnnotation(cs))
		}
	}
}

func TestCheckOwnCandidates(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{wgv1.AnnotationForceEndpoint: "198.18.100.9:51820"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.10.5"}, {Type: corev1.NodeExternalIP, Address: "198.18.100.5"}}}}
	if _, err := wgv1.CheckOwnCandidates(n, "private=198.18.10.5:51820,public=198.18.100.5:51820,public=198.18.100.9:51820"); err != nil {
		t.Errorf("own addresses and the force-endpoint refused: %v", err)
	}
	_, err := wgv1.CheckOwnCandidates(n, "private=198.18.10.5:51820,public=198.18.100.6:51820")
	if err == nil || !strings.Contains(err.Error(), "Node n1 annotation wgmesh.io/candidates") || !strings.Contains(err.Error(), "198.18.100.6:51820") {
		t.Errorf("another machine's address: got %v, want an error naming the Node, annotation and value", err)
	}
	if _, err := wgv1.CheckOwnCandidates(n, "private=198.18.10.5"); err == nil || !strings.Contains(err.Error(), "Node n1 annotation wgmesh.io/candidates") {
		t.Errorf("bad syntax: got %v", err)
	}
}

func TestSortCandidates(t *testing.T) {
	cs := []wgv1.Candidate{{Kind: "observed", Endpoint: "198.18.100.7:4000"}, {Kind: "public", Endpoint: "gw.example.org:1"},
		{Kind: "public", Endpoint: "[2001:db8::1]:1"}, {Kind: "public", Endpoint: "198.18.100.5:1"}, {Kind: "private", Endpoint: "198.18.10.5:1"}}
	wgv1.SortCandidates(cs)
	got := wgv1.FormatCandidatesAnnotation(cs)
	want := "private=198.18.10.5:1,public=198.18.100.5:1,public=[2001:db8::1]:1,public=gw.example.org:1,observed=198.18.100.7:4000"
	if got != want {
		t.Errorf("sorted: %s, want %s", got, want)
	}
}
