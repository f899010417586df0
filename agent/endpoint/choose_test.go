package endpoint

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func node(ann map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: ann},
		Status:     corev1.NodeStatus{Addresses: addrs},
	}
}

func TestChoose(t *testing.T) {
	internal4 := corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}
	internal6 := corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "2001:db8::11"}
	external4 := corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "198.18.0.99"}
	hostname := corev1.NodeAddress{Type: corev1.NodeHostName, Address: "n1"}
	tests := []struct {
		name       string
		in         Input
		want       string
		wantSource Source
		wantErr    bool
	}{
		{
			name:       "force-endpoint annotation wins over everything",
			in:         Input{Node: node(map[string]string{wgv1.AnnotationForceEndpoint: "vpn.example.com:4500"}, internal4), Flag: "198.18.0.5:51820", ListenPort: 51820},
			want:       "vpn.example.com:4500",
			wantSource: SourceAnnotation,
		},
		{
			name:    "bad force-endpoint annotation is an error, not a silent fallback",
			in:      Input{Node: node(map[string]string{wgv1.AnnotationForceEndpoint: "no-port"}, internal4), ListenPort: 51820},
			wantErr: true,
		},
		{
			name:       "flag wins over node address",
			in:         Input{Node: node(nil, internal4), Flag: "[2001:db8::5]:51821", ListenPort: 51820},
			want:       "[2001:db8::5]:51821",
			wantSource: SourceFlag,
		},
		{
			name:    "bad flag",
			in:      Input{Flag: "198.18.0.5:0", ListenPort: 51820},
			wantErr: true,
		},
		{
			name:       "InternalIP by default, IPv4 preferred",
			in:         Input{Node: node(nil, hostname, internal6, external4, internal4), ListenPort: 51820},
			want:       "198.18.0.11:51820",
			wantSource: SourceNodeAddress,
		},
		{
			name:       "IPv6-only node address is bracketed",
			in:         Input{Node: node(nil, internal6), ListenPort: 51820},
			want:       "[2001:db8::11]:51820",
			wantSource: SourceNodeAddress,
		},
		{
			name:       "ExternalIP when configured",
			in:         Input{Node: node(nil, internal4, external4), AddressType: corev1.NodeExternalIP, ListenPort: 51821},
			want:       "198.18.0.99:51821",
			wantSource: SourceNodeAddress,
		},
		{
			name: "default route interface when the node has no address of the type",
			in: Input{Node: node(nil, internal4), AddressType: corev1.NodeExternalIP, ListenPort: 51820,
				DefaultRouteAddrs: addrs("fe80::1", "2001:db8::7", "198.18.0.7")},
			want:       "198.18.0.7:51820",
			wantSource: SourceDefaultRoute,
		},
		{
			name: "default route IPv6 only, link-local skipped",
			in: Input{ListenPort: 51820,
				DefaultRouteAddrs: addrs("fe80::1", "2001:db8::7")},
			want:       "[2001:db8::7]:51820",
			wantSource: SourceDefaultRoute,
		},
		{
			name:    "nothing usable",
			in:      Input{Node: node(nil, hostname), ListenPort: 51820, DefaultRouteAddrs: addrs("127.0.0.1")},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, src, err := Choose(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Choose = %q (%s), want error", got, src)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || src != tt.wantSource {
				t.Fatalf("Choose = %q (%s), want %q (%s)", got, src, tt.want, tt.wantSource)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good := []string{"198.18.0.1:51820", "[2001:db8::1]:1", "a.example.com:65535", "x:2"}
	bad := []string{"198.18.0.1", "2001:db8::1:51820", "host:0", "host:65536", ":51820", "bad_host:1", "-a.b:1", "a..b:1"}
	for _, s := range good {
		if err := Validate(s); err != nil {
			t.Errorf("Validate(%q) = %v, want ok", s, err)
		}
	}
	for _, s := range bad {
		if err := Validate(s); err == nil {
			t.Errorf("Validate(%q) = ok, want error", s)
		}
	}
}

// addrs is a DefaultRouteAddrs func returning the given addresses.
func addrs(ss ...string) func() []netip.Addr {
	return func() []netip.Addr {
		out := make([]netip.Addr, len(ss))
		for i, s := range ss {
			out[i] = netip.MustParseAddr(s)
		}
		return out
	}
}

// The routing-table dump behind DefaultRouteAddrs runs on every reconcile
// unless Choose skips it when an earlier rule already chose.
func TestChooseDumpsRoutesOnlyWhenNeeded(t *testing.T) {
	called := 0
	in := Input{
		Node:       node(nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}),
		ListenPort: 51820,
		DefaultRouteAddrs: func() []netip.Addr {
			called++
			return []netip.Addr{netip.MustParseAddr("198.18.0.7")}
		},
	}
	if got, _, err := Choose(in); err != nil || got != "198.18.0.11:51820" || called != 0 {
		t.Fatalf("Choose = %q, %v; default-route lookups = %d, want 0", got, err, called)
	}
	in.Node = node(nil)
	if got, src, err := Choose(in); err != nil || got != "198.18.0.7:51820" || src != SourceDefaultRoute || called != 1 {
		t.Fatalf("Choose = %q (%s), %v; default-route lookups = %d, want 1", got, src, err, called)
	}
}

// TestCandidates: InternalIPs are private candidates, ExternalIPs public,
// at the listen port, IPv4 first; other address types and unusable
// addresses are not announced.
func TestCandidates(t *testing.T) {
	n := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeExternalIP, Address: "2001:db8:100::5"}, {Type: corev1.NodeInternalIP, Address: "198.18.10.5"},
		{Type: corev1.NodeHostName, Address: "198.18.10.6"}, {Type: corev1.NodeExternalIP, Address: "198.18.100.5"},
		{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeInternalIP, Address: "198.18.10.5"}}}}
	got := wgv1.FormatCandidatesAnnotation(Candidates(n, 51820))
	if want := "private=198.18.10.5:51820,public=198.18.100.5:51820,public=[2001:db8:100::5]:51820"; got != want {
		t.Errorf("Candidates = %s, want %s", got, want)
	}
	if _, err := wgv1.CheckOwnCandidates(n, got); err != nil {
		t.Errorf("the announced candidates are not the Node's own: %v", err)
	}
}
