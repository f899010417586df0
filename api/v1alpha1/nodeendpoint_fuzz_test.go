package v1alpha1

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzCheckOwnEndpoint: never panics; an endpoint it accepts is the Node's
// force-endpoint, or IP:port whose address is one of the Node's InternalIP
// or ExternalIP addresses (never a Hostname address, never another
// machine's); a refusal names the Node, the annotation and the value.
func FuzzCheckOwnEndpoint(f *testing.F) {
	f.Add("198.18.0.11:51820", "198.18.0.11", "2001:db8::11", "", uint8(0))
	f.Add("[2001:db8::11]:51820", "198.18.0.11", "2001:db8:0:0::11", "", uint8(1))
	f.Add("198.18.200.5:51820", "198.18.0.11", "198.18.200.5", "", uint8(2))
	f.Add("gw.example.org:4500", "198.18.0.11", "", "gw.example.org:4500", uint8(3))
	f.Add("[::ffff:198.18.0.11]:1", "::ffff:198.18.0.11", "", "", uint8(0))
	f.Add("198.18.0.11", "198.18.0.11", "", "", uint8(0))
	f.Fuzz(func(t *testing.T, ep, a1, a2, force string, types uint8) {
		kinds := []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP, corev1.NodeHostName, corev1.NodeInternalDNS}
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
		if force != "" {
			n.Annotations = map[string]string{AnnotationForceEndpoint: force}
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: kinds[types%4], Address: a1}, {Type: kinds[(types/4)%4], Address: a2}}
		err := CheckOwnEndpoint(n, ep)
		if err != nil {
			msg := err.Error()
			for _, want := range []string{"Node n1", AnnotationEndpoint, strconv.Quote(ep), "want "} {
				if !strings.Contains(msg, want) {
					t.Fatalf("error %q does not contain %q", msg, want)
				}
			}
			return
		}
		if force != "" && ep == force {
			return
		}
		hp, perr := ParseEndpoint(ep, false)
		if perr != nil {
			t.Fatalf("accepted %q, which is not %s: %v", ep, WantEndpointIP, perr)
		}
		var own []netip.Addr
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && (a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP) {
				own = append(own, ip.Unmap())
			}
		}
		if !slices.Contains(own, hp.Addr.Unmap()) {
			t.Fatalf("accepted %q, whose address is not among the Node's own %v (addresses %+v)", ep, own, n.Status.Addresses)
		}
	})
}
