package operator

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

const (
	keyA = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	keyB = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
)

func TestParseNodeAnnotations(t *testing.T) {
	tests := []struct {
		name        string
		ann         map[string]string
		wantKey     string
		wantEP      string
		wantForce   string
		wantKA      int32 // -1 = nil
		wantInvalid []string
	}{
		{name: "none", ann: nil, wantKA: -1},
		{name: "all good", ann: map[string]string{
			wgv1.AnnotationPublicKey: keyA, wgv1.AnnotationEndpoint: "198.18.0.11:51820",
			wgv1.AnnotationForceEndpoint: "gw.example.org:443", wgv1.AnnotationPersistentKeepalive: "25",
		}, wantKey: keyA, wantEP: "198.18.0.11:51820", wantForce: "gw.example.org:443", wantKA: 25},
		{name: "ipv6 endpoint", ann: map[string]string{wgv1.AnnotationEndpoint: "[2001:db8::11]:51820"}, wantEP: "[2001:db8::11]:51820", wantKA: -1},
		{name: "keepalive bounds", ann: map[string]string{wgv1.AnnotationPersistentKeepalive: "65535"}, wantKA: 65535},
		{name: "keepalive zero", ann: map[string]string{wgv1.AnnotationPersistentKeepalive: "0"}, wantKA: 0},
		{name: "key too short", ann: map[string]string{wgv1.AnnotationPublicKey: "AAAA"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationPublicKey}},
		{name: "key not base64", ann: map[string]string{wgv1.AnnotationPublicKey: strings.Repeat("!", 43) + "="}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationPublicKey}},
		{name: "key 33 bytes", ann: map[string]string{wgv1.AnnotationPublicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8DgA"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationPublicKey}},
		{name: "key non-canonical padding bits", ann: map[string]string{wgv1.AnnotationPublicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dh="}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationPublicKey}},
		{name: "endpoint no port", ann: map[string]string{wgv1.AnnotationEndpoint: "198.18.0.11"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationEndpoint}},
		{name: "endpoint port 0", ann: map[string]string{wgv1.AnnotationEndpoint: "198.18.0.11:0"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationEndpoint}},
		{name: "endpoint port 65536", ann: map[string]string{wgv1.AnnotationEndpoint: "198.18.0.11:65536"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationEndpoint}},
		{name: "endpoint ipv6 without brackets", ann: map[string]string{wgv1.AnnotationEndpoint: "2001:db8::11:51820"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationEndpoint}},
		{name: "endpoint ipv4 in brackets", ann: map[string]string{wgv1.AnnotationEndpoint: "[198.18.0.11]:51820"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationEndpoint}},
		{name: "endpoint zone", ann: map[string]string{wgv1.AnnotationEndpoint: "[fe80::1%eth0]:51820"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationEndpoint}},
		{name: "endpoint DNS not allowed for agent", ann: map[string]string{wgv1.AnnotationEndpoint: "node1.example.org:51820"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationEndpoint}},
		{name: "force endpoint bad dns", ann: map[string]string{wgv1.AnnotationForceEndpoint: "-bad-.example:51820"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationForceEndpoint}},
		{name: "force endpoint bad dotted", ann: map[string]string{wgv1.AnnotationForceEndpoint: "300.1.1.1:51820"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationForceEndpoint}},
		{name: "force endpoint port text", ann: map[string]string{wgv1.AnnotationForceEndpoint: "gw:https"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationForceEndpoint}},
		{name: "keepalive negative", ann: map[string]string{wgv1.AnnotationPersistentKeepalive: "-1"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationPersistentKeepalive}},
		{name: "keepalive too big", ann: map[string]string{wgv1.AnnotationPersistentKeepalive: "65536"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationPersistentKeepalive}},
		{name: "keepalive text", ann: map[string]string{wgv1.AnnotationPersistentKeepalive: "25s"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationPersistentKeepalive}},
		{name: "several bad", ann: map[string]string{wgv1.AnnotationPublicKey: "x", wgv1.AnnotationPersistentKeepalive: "x"}, wantKA: -1, wantInvalid: []string{wgv1.AnnotationPublicKey, wgv1.AnnotationPersistentKeepalive}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseNodeAnnotations(tt.ann)
			if got.PublicKey != tt.wantKey || got.Endpoint != tt.wantEP || got.ForceEndpoint != tt.wantForce {
				t.Fatalf("got %+v", got)
			}
			if (tt.wantKA < 0) != (got.PersistentKeepalive == nil) || (got.PersistentKeepalive != nil && *got.PersistentKeepalive != tt.wantKA) {
				t.Fatalf("keepalive = %v, want %d", got.PersistentKeepalive, tt.wantKA)
			}
			var inv []string
			for _, e := range got.Invalid {
				inv = append(inv, e.Annotation)
				msg := e.Error()
				if !strings.Contains(msg, e.Annotation) || !strings.Contains(msg, `"`+tt.ann[e.Annotation]+`"`) || !strings.Contains(msg, "want ") {
					t.Errorf("message %q does not name the annotation, the value and what is accepted", msg)
				}
			}
			if strings.Join(inv, ",") != strings.Join(tt.wantInvalid, ",") {
				t.Fatalf("invalid = %v, want %v", inv, tt.wantInvalid)
			}
		})
	}
}

func addrNode(name string, ann map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}, Status: corev1.NodeStatus{Addresses: addrs}}
}

// TestParseNodeOwnEndpoint: the endpoint an agent announces is used only
// when it is one of its Node's InternalIP/ExternalIP addresses; another
// machine's address is invalid, with a message naming the Node, the
// annotation, the value, the Node's addresses and the user's way out. A
// usable force-endpoint makes the announced one unused and unchecked.
func TestParseNodeOwnEndpoint(t *testing.T) {
	internal := corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}
	external6 := corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "2001:db8:0:0::11"}
	hostname := corev1.NodeAddress{Type: corev1.NodeHostName, Address: "198.18.0.99"}
	tests := []struct {
		name        string
		node        *corev1.Node
		wantEP      string
		wantInvalid []string
	}{
		{"its InternalIP", addrNode("n1", map[string]string{wgv1.AnnotationEndpoint: "198.18.0.11:51820"}, internal), "198.18.0.11:51820", nil},
		{"its ExternalIP, written another way", addrNode("n1", map[string]string{wgv1.AnnotationEndpoint: "[2001:db8::11]:51820"}, internal, external6), "[2001:db8::11]:51820", nil},
		{"another machine's", addrNode("n1", map[string]string{wgv1.AnnotationEndpoint: "198.18.200.5:51820"}, internal), "", []string{wgv1.AnnotationEndpoint}},
		{"a Hostname address is not an own address", addrNode("n1", map[string]string{wgv1.AnnotationEndpoint: "198.18.0.99:51820"}, internal, hostname), "", []string{wgv1.AnnotationEndpoint}},
		{"a Node without addresses owns none", addrNode("n1", map[string]string{wgv1.AnnotationEndpoint: "198.18.0.11:51820"}), "", []string{wgv1.AnnotationEndpoint}},
		{"unused beside a force-endpoint", addrNode("n1", map[string]string{wgv1.AnnotationEndpoint: "198.18.200.5:51820", wgv1.AnnotationForceEndpoint: "gw.example.org:4500"}, internal), "198.18.200.5:51820", nil},
		{"checked beside a bad force-endpoint, in order", addrNode("n1", map[string]string{wgv1.AnnotationPublicKey: "x", wgv1.AnnotationEndpoint: "198.18.200.5:51820", wgv1.AnnotationForceEndpoint: "x:0", wgv1.AnnotationPersistentKeepalive: "x"}, internal),
			"", []string{wgv1.AnnotationPublicKey, wgv1.AnnotationEndpoint, wgv1.AnnotationForceEndpoint, wgv1.AnnotationPersistentKeepalive}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseNode(tt.node)
			if got.Endpoint != tt.wantEP {
				t.Errorf("endpoint %q, want %q", got.Endpoint, tt.wantEP)
			}
			var inv []string
			for _, e := range got.Invalid {
				inv = append(inv, e.Annotation)
			}
			if strings.Join(inv, ",") != strings.Join(tt.wantInvalid, ",") {
				t.Fatalf("invalid = %v, want %v", inv, tt.wantInvalid)
			}
			if AnnouncesForeignEndpoint(tt.node) != slices.ContainsFunc(got.Invalid, func(e AnnotationError) bool {
				return e.Annotation == wgv1.AnnotationEndpoint && strings.Contains(e.Want, "own")
			}) {
				t.Errorf("AnnouncesForeignEndpoint disagrees with ParseNode: %+v", got.Invalid)
			}
		})
	}
	msg := ParseNode(tests[2].node).Invalid[0].Error()
	for _, want := range []string{`wgmesh.io/endpoint="198.18.200.5:51820"`, "Node n1's own", "198.18.0.11", wgv1.AnnotationForceEndpoint} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not contain %q", msg, want)
		}
	}
}
