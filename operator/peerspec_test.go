package operator

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func ptr32(v int32) *int32 { return &v }

func TestDesiredPeerSpec(t *testing.T) {
	good := &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA, Endpoint: "198.18.0.11:51820", PersistentKeepalive: ptr32(25), AllowedIPs: []wgv1.CIDR{"198.19.1.0/24"}}
	tests := []struct {
		name    string
		ann     map[string]string
		cidrs   []string
		current *wgv1.MeshPeerSpec
		want    *wgv1.MeshPeerSpec // nil = no MeshPeer
	}{
		{name: "no key, no peer", ann: map[string]string{wgv1.AnnotationEndpoint: "198.18.0.11:51820"}},
		{name: "key only, no podCIDRs", ann: map[string]string{wgv1.AnnotationPublicKey: keyA},
			want: &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA}},
		{name: "full dual stack", ann: map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.11:51820"},
			cidrs: []string{"198.19.1.0/24", "2001:db8:100:1::/64"},
			want:  &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA, Endpoint: "198.18.0.11:51820", AllowedIPs: []wgv1.CIDR{"198.19.1.0/24", "2001:db8:100:1::/64"}}},
		{name: "force endpoint wins", ann: map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.11:51820", wgv1.AnnotationForceEndpoint: "gw.example.org:4500", wgv1.AnnotationPersistentKeepalive: "10"},
			want: &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA, Endpoint: "gw.example.org:4500", PersistentKeepalive: ptr32(10)}},
		{name: "podCIDR canonicalised", ann: map[string]string{wgv1.AnnotationPublicKey: keyA}, cidrs: []string{"198.19.1.7/24", "bogus"},
			want: &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA, AllowedIPs: []wgv1.CIDR{"198.19.1.0/24"}}},
		{name: "bad key keeps last good key, other fields move on",
			ann:     map[string]string{wgv1.AnnotationPublicKey: "bad", wgv1.AnnotationEndpoint: "198.18.0.12:51820", wgv1.AnnotationPersistentKeepalive: "5"},
			cidrs:   []string{"198.19.1.0/24"},
			current: good,
			want:    &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA, Endpoint: "198.18.0.12:51820", PersistentKeepalive: ptr32(5), AllowedIPs: []wgv1.CIDR{"198.19.1.0/24"}}},
		{name: "bad key and no peer yet", ann: map[string]string{wgv1.AnnotationPublicKey: "bad"}},
		{name: "bad endpoint keeps last good", ann: map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "nope", wgv1.AnnotationPersistentKeepalive: "25"},
			cidrs: []string{"198.19.1.0/24"}, current: good, want: good},
		{name: "bad force endpoint keeps last good, not the detected one", ann: map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.99:51820", wgv1.AnnotationForceEndpoint: "x:0", wgv1.AnnotationPersistentKeepalive: "25"},
			cidrs: []string{"198.19.1.0/24"}, current: good, want: good},
		{name: "bad keepalive keeps last good", ann: map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.11:51820", wgv1.AnnotationPersistentKeepalive: "-1"},
			cidrs: []string{"198.19.1.0/24"}, current: good, want: good},
		{name: "keepalive removed", ann: map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.11:51820"},
			cidrs: []string{"198.19.1.0/24"}, current: good,
			want: &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA, Endpoint: "198.18.0.11:51820", AllowedIPs: []wgv1.CIDR{"198.19.1.0/24"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := DesiredPeerSpec("n1", tt.cidrs, ParseNodeAnnotations(tt.ann), tt.current)
			if tt.want == nil {
				if ok {
					t.Fatalf("got a MeshPeer %+v, want none", got)
				}
				return
			}
			if !ok || !SpecEqual(got, *tt.want) {
				t.Fatalf("DesiredPeerSpec = %s (ok=%v), want %s", describeSpec(got), ok, describeSpec(*tt.want))
			}
		})
	}
}

// TestDesiredPeerSpecOwnEndpoint: an announced endpoint that is not the
// Node's own is never published: the last good one stays while it is still
// the Node's, and one that is not (published unchecked by an older
// operator) is dropped.
func TestDesiredPeerSpecOwnEndpoint(t *testing.T) {
	own := corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}
	ann := map[string]string{wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.200.5:51820"}
	for _, tt := range []struct {
		name, current, want string
	}{
		{"no MeshPeer yet: no endpoint", "", ""},
		{"last good, the Node's own, stays", "198.18.0.11:51820", "198.18.0.11:51820"},
		{"a foreign one published before is dropped", "198.18.200.5:51820", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var current *wgv1.MeshPeerSpec
			if tt.current != "" {
				current = &wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: keyA, Endpoint: wgv1.Endpoint(tt.current)}
			}
			got, ok := DesiredPeerSpec("n1", nil, ParseNode(addrNode("n1", ann, own)), current)
			if !ok || string(got.Endpoint) != tt.want {
				t.Fatalf("endpoint %q (ok=%v), want %q", got.Endpoint, ok, tt.want)
			}
		})
	}
	// The control: the same annotation without the Node's check (as
	// before) would have published the foreign address.
	if got, _ := DesiredPeerSpec("n1", nil, ParseNodeAnnotations(ann), nil); got.Endpoint != "198.18.200.5:51820" {
		t.Fatalf("control: ParseNodeAnnotations alone gives endpoint %q", got.Endpoint)
	}
}
